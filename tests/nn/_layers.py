"""Shared cases and helpers of the `jaxlstm.nn` tests: configurations, random layers, NumPy references."""

import dataclasses

import jax
import numpy as np
from flax import nnx

from jaxlstm.nn import LSTM, BidirectionalLSTM, BidirectionalRNN, SimpleRNN
from jaxlstm.reference import np_lstm, np_rnn

# float32 over a few steps against a float64 (NumPy) or another framework's float32 loop:
# differences are ~1e-7, so 1e-5 keeps two decades of margin (LiteRT's own float kernel
# tests use 1e-5 too).
TOL = 1e-5
# Two jaxlstm paths doing the same float32 math in a different grouping (chunked or
# per-step input matmuls): differences are a few ulps.
SAME_MATH_TOL = 1e-6

B, T, I = 3, 6, 4


@dataclasses.dataclass(frozen=True)
class Case:
    """An LSTM configuration; its name lists the features that are on."""

    use_cifg: bool = False
    use_peephole: bool = False
    projection_size: int | None = None
    use_projection_bias: bool = False
    use_layer_norm: bool = False
    cell_clip: float = 0.0
    proj_clip: float = 0.0
    time_major: bool = False
    activation: str = "TANH"

    def __str__(self):
        parts = [
            f.name.removeprefix("use_")
            for f in dataclasses.fields(self)
            if getattr(self, f.name) not in (False, None, 0.0, "TANH")
        ]
        return "_".join(parts) or "plain"

    def kwargs(self):
        return dataclasses.asdict(self)


LSTM_CASES = [
    Case(),
    Case(use_cifg=True, use_peephole=True),
    Case(use_peephole=True, projection_size=3, use_projection_bias=True, proj_clip=0.4),
    Case(use_layer_norm=True, use_peephole=True),
    Case(use_cifg=True, use_layer_norm=True, projection_size=3),
    Case(cell_clip=0.3, time_major=True, activation="RELU6"),
]
BIDIRECTIONAL_CASES = [
    Case(),
    Case(use_cifg=True, use_peephole=True, projection_size=3, cell_clip=0.5),
    Case(time_major=True),
]


def randomize(module, seed=0, scale=0.5):
    """Replaces every parameter with N(0, scale^2) values (init values are too special)."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    rng = np.random.default_rng(seed)
    nnx.update(
        module, jax.tree.unflatten(treedef, [(rng.standard_normal(v.shape) * scale).astype(np.float32) for v in leaves])
    )
    return module


def inputs(time_major=False, seed=1, batch=B, steps=T, features=I):
    x = np.random.default_rng(seed).standard_normal((batch, steps, features)).astype(np.float32)
    return np.swapaxes(x, 0, 1) if time_major else x


def reference_options(case):
    return dict(activation=case.activation, cell_clip=case.cell_clip, proj_clip=case.proj_clip)


def make(kind, case=Case(), seed=0, **kwargs):
    rngs = nnx.Rngs(seed)
    if kind == "lstm":
        return randomize(LSTM(I, 5, **case.kwargs(), **kwargs, rngs=rngs), seed)
    if kind == "bidirectional_lstm":
        return randomize(BidirectionalLSTM(I, 5, **case.kwargs(), **kwargs, rngs=rngs), seed)
    options = dict(activation="RELU" if case.activation != "TANH" else "TANH", time_major=case.time_major)
    cls = SimpleRNN if kind == "simple_rnn" else BidirectionalRNN
    return randomize(cls(I, 5, **options, **kwargs, rngs=rngs), seed)


KINDS = ["lstm", "bidirectional_lstm", "simple_rnn", "bidirectional_rnn"]


def reference(kind, module, x, time_major=False, **options):
    """The NumPy loop reference of `module` on `x` (the layer's layout): (y, final state)."""
    if kind == "lstm":
        y, h, c = np_lstm.unidirectional_sequence_lstm(x, module.weights(), time_major=time_major, **options)
        return y, (h, c)
    if kind == "simple_rnn":
        y, h = np_rnn.unidirectional_sequence_rnn(
            x, module.weights(), time_major=time_major, activation=module.options.fused_activation_function
        )
        return y, h
    if kind == "bidirectional_lstm":
        (y,), fw, bw = np_lstm.bidirectional_sequence_lstm(
            x, *module.weights(), time_major=time_major, merge_outputs=True, **options
        )
        return y, (fw, bw)
    (y,), states = np_rnn.bidirectional_sequence_rnn(
        x,
        *module.weights(),
        time_major=time_major,
        merge_outputs=True,
        activation=module.options.fused_activation_function,
    )
    return y, states
