"""The test configurations: one `Case` type whose `name` is the readable pytest id.

A configuration is a frozen dataclass derived from `Case`: `LSTMCase`, `RNNCase` and
`GRUCase` here (the op tests, the `jaxlstm.nn` layer tests, the GRU export tests), and local
ones for a converter's own parameters (tests/convert/test_lingvo.py). Each field says how it
shows in the id: `size` fields always (``b2``), `flag` and `setting` fields only when they
differ from their default (``peephole``, ``relu``). So an id reads
``b2_t5_i3_c4_o3_peephole_proj_tm``, and ``pytest -k peephole`` selects the cases with
peepholes. Parametrize with ``ids=str``; vary a base case with ``case.replace(...)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from jaxlstm.ops import GRUOptions, LSTMOptions, RNNOptions

Id = Callable[[Any, Any], str]  # (case, value) -> the field's part of the id ("" for none)


def option(default: Any, id: Id) -> Any:
    """A field with `default` whose part of the id is ``id(case, value)``."""
    return dataclasses.field(default=default, metadata={"id": id})


def size(letter: str, default: int) -> Any:
    """A size, always in the id as `letter` and value: ``size("b", 2)`` shows ``b2``."""
    return option(default, lambda case, value: f"{letter}{value}")


def flag(label: str, default: Any = False) -> Any:
    """A feature shown as `label` when on, i.e. when the value differs from `default`
    (``flag("peephole")``; ``flag("cellclip", 0.0)`` for a clip; ``flag("reset_before",
    True)`` for an option that is on by default)."""
    return option(default, lambda case, value: label if value != default else "")


def setting(default: Any, prefix: str = "", always: bool = False) -> Any:
    """A value shown lowercased after `prefix` when it differs from `default` (or `always`):
    ``setting("TANH")`` shows ``relu`` for "RELU"."""
    return option(default, lambda case, value: f"{prefix}{value}".lower() if always or value != default else "")


@dataclasses.dataclass(frozen=True)
class Case:
    """Base of the test configurations: the id, ``str(case)``, from its fields' `size`,
    `flag` and `setting` declarations, in field order (fields declared without one, e.g.
    ``n_aux: int = 3``, do not show)."""

    replace = dataclasses.replace

    @property
    def name(self) -> str:
        parts = (f.metadata["id"](self, getattr(self, f.name)) for f in dataclasses.fields(self) if "id" in f.metadata)
        return "_".join(part for part in parts if part)

    def __str__(self) -> str:
        return self.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """[B, T, n_input], or [T, B, n_input] when time-major (cases with those fields)."""
        if self.time_major:
            return (self.time, self.batch, self.n_input)
        return (self.batch, self.time, self.n_input)


def _aux_id(case: Any, aux: str) -> str:
    return {"cross": f"aux{case.n_aux}", "bw_input": "bwaux"}.get(aux, "")


@dataclasses.dataclass(frozen=True)
class LSTMCase(Case):
    """One LSTM configuration, e.g. ``b2_t5_i3_c4_o3_cifg_peephole_proj``: the op's tensors
    (`tests.ops.cases.lstm_weights`), its options, the reference loop's options, and the
    `jaxlstm.nn.LSTM` arguments (`layer_kwargs`)."""

    batch: int = size("b", 2)
    time: int = size("t", 5)
    n_input: int = size("i", 3)
    n_cell: int = size("c", 4)
    n_output: int = size("o", 4)
    cifg: bool = flag("cifg")
    peephole: bool = flag("peephole")
    projection: bool = flag("proj")
    projection_bias: bool = flag("projbias")
    layer_norm: bool = flag("ln")
    diagonal: bool = flag("diag")
    cell_clip: float = flag("cellclip", 0.0)
    proj_clip: float = flag("projclip", 0.0)
    time_major: bool = flag("tm")
    activation: str = setting("TANH")
    asymmetric: bool = flag("asym")  # hybrid only
    aux: str = option("none", _aux_id)  # bidirectional only: "none", "cross" (aux weights) or "bw_input"
    n_aux: int = 3
    merge_outputs: bool = flag("merged")

    @property
    def options(self) -> LSTMOptions:
        return LSTMOptions(
            fused_activation_function=self.activation,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            time_major=self.time_major,
            asymmetric_quantize_inputs=self.asymmetric,
        )

    @property
    def reference_options(self) -> dict:
        return dict(
            activation=self.activation,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            asymmetric_quantize_inputs=self.asymmetric,
        )

    @property
    def layer_kwargs(self) -> dict:
        """The `jaxlstm.nn.LSTM` / `BidirectionalLSTM` options after (n_input, n_cell)."""
        return dict(
            use_cifg=self.cifg,
            use_peephole=self.peephole,
            projection_size=self.n_output if self.projection else None,
            use_projection_bias=self.projection_bias,
            use_layer_norm=self.layer_norm,
            cell_clip=self.cell_clip,
            proj_clip=self.proj_clip,
            time_major=self.time_major,
            activation=self.activation,
        )


@dataclasses.dataclass(frozen=True)
class RNNCase(Case):
    """One basic RNN configuration, e.g. ``b2_t5_i3_u4_relu_tm`` (the activation always shows)."""

    batch: int = size("b", 2)
    time: int = size("t", 5)
    n_input: int = size("i", 3)
    n_units: int = size("u", 4)
    activation: str = setting("RELU", always=True)
    time_major: bool = flag("tm")
    asymmetric: bool = flag("asym")  # hybrid only
    aux: str = option("none", _aux_id)  # bidirectional only: "none", "cross" or "bw_input"
    n_aux: int = 3
    merge_outputs: bool = flag("merged")

    @property
    def options(self) -> RNNOptions:
        return RNNOptions(self.activation, self.time_major, self.asymmetric)

    @property
    def reference_options(self) -> dict:
        return dict(activation=self.activation, asymmetric_quantize_inputs=self.asymmetric)


@dataclasses.dataclass(frozen=True)
class GRUCase(Case):
    """One GRU configuration, e.g. ``b2_t7_i3_u4_reset_before_no_recurrent_bias_reverse``.

    Activations are TFLite names (Keras "linear" is "NONE"); `reverse` alone is Keras'
    ``go_backwards`` (outputs in processing order), with `keep_order` PyTorch's and flax's
    backward direction; `bias` False is Keras ``use_bias=False``, `recurrent_bias` False
    drops only the recurrent-side bias (Keras ``reset_after=False``, flax nnx).
    """

    batch: int = size("b", 2)
    time: int = size("t", 5)
    n_input: int = size("i", 3)
    n_units: int = size("u", 4)
    reset_after: bool = flag("reset_before", True)
    bias: bool = flag("no_bias", True)
    recurrent_bias: bool = flag("no_recurrent_bias", True)
    activation: str = setting("TANH")
    recurrent_activation: str = setting("SIGMOID")
    time_major: bool = flag("tm")
    reverse: bool = flag("reverse")
    keep_order: bool = flag("keep_order")
    return_sequences: bool = flag("last", True)
    initial_state: bool = flag("initial_state")

    @property
    def options(self) -> GRUOptions:
        return GRUOptions(self.reset_after, self.activation, self.recurrent_activation, self.time_major)

    @property
    def reference_options(self) -> dict:
        return dict(
            reset_after=self.reset_after, activation=self.activation, recurrent_activation=self.recurrent_activation
        )
