"""Shared cases and helpers of the `jaxlstm.nn` tests: configurations, random layers, NumPy references."""

import jax
import numpy as np
from flax import nnx

from jaxlstm.nn import LSTM, BidirectionalLSTM, BidirectionalRNN, SimpleRNN
from jaxlstm.reference import np_lstm, np_rnn
from tests.cases import LSTMCase, RNNCase

# float32 over a few steps against a float64 (NumPy) or another framework's float32 loop:
# differences are ~1e-7, so 1e-5 keeps two decades of margin (LiteRT's own float kernel
# tests use 1e-5 too).
TOL = 1e-5
# Two jaxlstm paths doing the same float32 math in a different grouping (chunked or
# per-step input matmuls): differences are a few ulps.
SAME_MATH_TOL = 1e-6

B, T, I = 3, 6, 4


# The layers' sizes: B rows of T steps of I features, 5 cells (units).
LSTM_BASE = LSTMCase(batch=B, time=T, n_input=I, n_cell=5, n_output=5)
RNN_BASE = RNNCase(batch=B, time=T, n_input=I, n_units=5, activation="TANH")

LSTM_CASES = [
    LSTM_BASE,
    LSTM_BASE.replace(cifg=True, peephole=True),
    LSTM_BASE.replace(peephole=True, projection=True, n_output=3, projection_bias=True, proj_clip=0.4),
    LSTM_BASE.replace(layer_norm=True, peephole=True),
    LSTM_BASE.replace(cifg=True, layer_norm=True, projection=True, n_output=3),
    LSTM_BASE.replace(cell_clip=0.3, time_major=True, activation="RELU6"),
]
BIDIRECTIONAL_CASES = [
    LSTM_BASE,
    LSTM_BASE.replace(cifg=True, peephole=True, projection=True, n_output=3, cell_clip=0.5),
    LSTM_BASE.replace(time_major=True),
]
RNN_CASES = [RNN_BASE, RNN_BASE.replace(activation="RELU", time_major=True)]


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


def make(kind, case=None, seed=0, **kwargs):
    """A layer of `kind` with `case`'s sizes and options (default: LSTM_BASE or RNN_BASE) and
    random parameters."""
    rngs = nnx.Rngs(seed)
    if kind in ("lstm", "bidirectional_lstm"):
        case = case or LSTM_BASE
        cls = LSTM if kind == "lstm" else BidirectionalLSTM
        return randomize(cls(case.n_input, case.n_cell, **case.layer_kwargs, **kwargs, rngs=rngs), seed)
    case = case or RNN_BASE
    cls = SimpleRNN if kind == "simple_rnn" else BidirectionalRNN
    options = dict(activation=case.activation, time_major=case.time_major)
    return randomize(cls(case.n_input, case.n_units, **options, **kwargs, rngs=rngs), seed)


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
