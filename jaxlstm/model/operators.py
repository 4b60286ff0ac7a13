"""The operator table: one `OperatorSpec` per opcode jaxlstm reads, runs and writes.

Every fact about an operator that is not its arithmetic lives here: the builtin options
table (schema.fbs ``BuiltinOptions``), its inputs by slot, which of them are required,
variable (the recurrent state), weights that dynamic-range quantization turns to int8, the
sequence inputs whose batch axis follows ``time_major``, and the version TFLite's converter
writes (tensorflow/lite/tools/versioning/op_version.cc). The importer, the exporter, the
runtime kernels, the builder, the rewrites and ``inspect`` read slots by name from here:

    spec = OPERATORS["UNIDIRECTIONAL_SEQUENCE_LSTM"]
    spec.slot("cell_state")          # 19
    spec.named(args)                 # {"input": x, "input_to_forget_weights": w, ...}
    spec_of(op).state_slots          # the op's variable inputs (an LSTM's BASIC kernel: its own)

The recurrent input names are the `LSTMWeights` / `RNNWeights` / `GRUWeights` field names
(tflite/kernels/lstm_shared.h, bidirectional_sequence_lstm.cc, basic_rnn.cc,
bidirectional_sequence_rnn.cc).

Adding an operator means adding one record here (`_BUILTINS`) and one kernel registered
with ``@kernel("OPCODE")`` in `jaxlstm.model.kernels` (or a module beside it imported by
`jaxlstm.model.runtime`): the importer then accepts it and the exporter writes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxlstm.ops.gru import GRUWeights
from jaxlstm.ops.lstm import GATES

if TYPE_CHECKING:
    from jaxlstm.model.graph import Operator, Tensor

NO_TENSOR = -1  # an absent optional operator input
# The GRU operator (no TFLite builtin): the exporter unrolls it into builtin operators.
GRU = "GRU"

VersionRule = Callable[["OperatorSpec", "Sequence[Tensor]", "Operator"], int]


@dataclasses.dataclass(frozen=True)
class OperatorSpec:
    """What jaxlstm knows of one operator besides its arithmetic.

    Attributes:
      opcode: the schema `BuiltinOperator` name (or ``"GRU"``, jaxlstm's own).
      options: the schema options table it carries (e.g. "LSTMOptions"); None: none.
      inputs: input names by slot; empty where the kernel reads its inputs by position.
      input_counts: the accepted numbers of inputs; empty: any.
      required: inputs that must be present (not `NO_TENSOR`).
      states: variable inputs, which the operator reads and writes back.
      quantizable: weight inputs that dynamic-range quantization turns to int8
        (tools/optimize/quantize_weights.cc): matrices, peepholes and projections; never
        biases, layer-norm coefficients or states.
      sequences: inputs laid out [B, T, ...], or [T, B, ...] with the ``time_major``
        option (with the op's outputs); empty for ops without a time axis.
      builtin: a TFLite builtin operator (False: GRU, which only the JAX model runs).
      integer_versions: the version for an int8 / int16 first input (op_version.cc).
      bool_version: the version for a bool first input (op_version.cc).
      version_rule: the op's own version rule where op_version.cc reads more than its
        first input's type.
    """

    opcode: str
    options: str | None = None
    inputs: tuple[str, ...] = ()
    input_counts: tuple[int, ...] = ()
    required: tuple[str, ...] = ()
    states: tuple[str, ...] = ()
    quantizable: tuple[str, ...] = ()
    sequences: tuple[str, ...] = ()
    builtin: bool = True
    integer_versions: Mapping[str, int] = dataclasses.field(default_factory=dict)
    bool_version: int = 1
    version_rule: VersionRule | None = None

    def slot(self, name: str) -> int:
        """The input position of input `name`."""
        try:
            return self.inputs.index(name)
        except ValueError:
            raise KeyError(f"{self.opcode} has no input {name!r}; its inputs: {self.inputs}") from None

    def slots(self, names: Sequence[str]) -> tuple[int, ...]:
        return tuple(self.slot(n) for n in names)

    @property
    def state_slots(self) -> tuple[int, ...]:
        return self.slots(self.states)

    @property
    def quantizable_slots(self) -> tuple[int, ...]:
        return self.slots(self.quantizable)

    @property
    def sequence_slots(self) -> tuple[int, ...]:
        return self.slots(self.sequences)

    @property
    def required_slots(self) -> tuple[int, ...]:
        return self.slots(self.required)

    @property
    def weight_slot(self) -> int:
        """The first required weight, whose type tells a hybrid op (int8) from a float one."""
        return next(s for s in self.quantizable_slots if self.inputs[s] in self.required)

    def named(self, values: Sequence[Any]) -> dict[str, Any]:
        """{input name: value} of an operator's input values by slot, absent (None) ones left out."""
        return {n: v for n, v in zip(self.inputs, values) if v is not None}

    def named_inputs(self, op: Operator) -> dict[str, int]:
        """{input name: tensor index} of `op`'s present inputs."""
        return {n: i for n, i in zip(self.inputs, op.inputs) if i != NO_TENSOR}

    def arrange(self, named: Mapping[str, int]) -> tuple[int, ...]:
        """An operator's input tensor indices by slot from {input name: tensor index}; the
        inputs not named are absent (`NO_TENSOR`)."""
        unknown = sorted(set(named) - set(self.inputs))
        if unknown:
            raise KeyError(f"{self.opcode} has no inputs {unknown}")
        return tuple(named.get(n, NO_TENSOR) for n in self.inputs)

    def version(self, tensors: Sequence[Tensor], op: Operator) -> int:
        """The operator version TFLite's converter writes for `op` (`tensors`: its subgraph's)."""
        if self.version_rule is not None:
            return self.version_rule(self, tensors, op)
        return _first_input_version(self, tensors, op)


def spec_of(op: Operator) -> OperatorSpec:
    """The record of `op` (an LSTM with ``kernel_type=BASIC``: `BASIC_LSTM`).

    Raises:
      KeyError: an opcode jaxlstm does not know.
    """
    if op.opcode == "LSTM" and op.option("kernel_type", "FULL") == "BASIC":
        return BASIC_LSTM
    return OPERATORS[op.opcode]


def state_slots(op: Operator) -> tuple[int, ...]:
    """The input positions of the recurrent state `op` reads and updates (variable tensors)."""
    spec = OPERATORS.get(op.opcode)
    return () if spec is None else spec_of(op).state_slots


def batch_axis(op: Operator) -> int:
    """The batch axis of `op`'s sequence inputs and outputs: 1 when time-major, else 0."""
    spec = OPERATORS.get(op.opcode)
    return 1 if spec is not None and spec.sequences and op.option("time_major", False) else 0


# ----------------------------------------------------------------------------- version rules


def _dtype(tensors: Sequence[Tensor], op: Operator, slot: int) -> str | None:
    if slot >= len(op.inputs) or op.inputs[slot] == NO_TENSOR:
        return None
    return tensors[op.inputs[slot]].dtype


def _asymmetric(op: Operator) -> bool:
    return bool(op.option("asymmetric_quantize_inputs", False))


def _first_input_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    dtype = _dtype(tensors, op, 0)
    if dtype in ("int8", "int16"):
        return spec.integer_versions.get(dtype, 1)
    return spec.bool_version if dtype == "bool" else 1


def _integer_lstm_version(tensors: Sequence[Tensor], op: Operator) -> int | None:
    """Full-integer: int8 activations keep version 1; int16 activations (16x8) are version 5,
    which LiteRT does not register and TFLite Micro does not check."""
    dtype = _dtype(tensors, op, 0)
    return {"int8": 1, "int16": 5}.get(dtype)


def _lstm_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    integer = _integer_lstm_version(tensors, op)
    if integer is not None:
        return integer
    if op.option("kernel_type", "FULL") == "BASIC":
        return 2
    hybrid = _dtype(tensors, op, spec.weight_slot) == "int8"
    return (4 if _asymmetric(op) else 3) if hybrid else 1


def _sequence_lstm_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    integer = _integer_lstm_version(tensors, op)
    if integer is not None:
        return integer
    recurrent = spec.slots([f"recurrent_to_{g}_weights" for g in GATES])
    if any(len(tensors[op.inputs[s]].shape) == 1 for s in recurrent if op.inputs[s] != NO_TENSOR):
        return 4  # diagonal recurrent weights
    return _hybrid_version(spec, tensors, op)


def _hybrid_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    """Float 1; hybrid (int8 weights) 2, or 3 with asymmetric input quantization."""
    hybrid = _dtype(tensors, op, spec.weight_slot) == "int8"
    return (3 if _asymmetric(op) else 2) if hybrid else 1


def _fully_connected_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    x, w = _dtype(tensors, op, 0), _dtype(tensors, op, 1)
    if x in ("int8", "int16"):  # full integer
        if x == "int16" and op.option("quantized_bias_type", "FLOAT32") != "FLOAT32":
            return 11
        if len(op.inputs) == 2:
            return 6
        if op.option("keep_num_dims", False):
            return 5
        return 4 if x == "int8" else 1
    if w == "int8" and isinstance(tensors[op.inputs[1]].scale, tuple):
        return 12  # per-channel hybrid
    if op.option("keep_num_dims", False):
        return 5
    if w == "int8":
        return 9 if _asymmetric(op) else 3
    return 1


def _convolution_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    x, w = (tensors[op.inputs[s]] for s in (0, 1))
    depthwise = spec.opcode == "DEPTHWISE_CONV_2D"
    channels = w.shape[3 if depthwise else 0]  # op_signature.cc: per-channel = a scale per filter
    per_channel = len(w.scale) == channels if isinstance(w.scale, tuple) else channels == 1
    if not depthwise:
        if x.shape[-1] != w.shape[3]:
            return 6  # grouped
        return (5 if per_channel else 2) if w.dtype == "int8" else 1
    if w.dtype == "int8":
        return 6 if per_channel else 4
    return 2 if (op.option("dilation_h_factor", 1), op.option("dilation_w_factor", 1)) != (1, 1) else 1


def _rank_version(above: int, version: int) -> VersionRule:
    """`version` when the first input's rank is above `above`, else the first-input rule."""

    def rule(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
        rank = len(tensors[op.inputs[0]].shape) if op.inputs and op.inputs[0] != NO_TENSOR else 0
        return version if rank > above else _first_input_version(spec, tensors, op)

    return rule


def _batch_space_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    rank = len(tensors[op.inputs[0]].shape) if op.inputs and op.inputs[0] != NO_TENSOR else 0
    return 3 if rank != 4 else _first_input_version(spec, tensors, op)


def _add_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    if _dtype(tensors, op, 0) == "int16":
        return 1 if op.option("pot_scale_int16", True) else 3
    return _first_input_version(spec, tensors, op)


def _mul_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    if _dtype(tensors, op, 0) == "int8":
        a, b, y = (tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
        return 3 if np.float32(a.scale) * np.float32(b.scale) / np.float32(y.scale) >= 1 else 2
    return _first_input_version(spec, tensors, op)


def _constant_version(version: int) -> VersionRule:
    return lambda spec, tensors, op: version


def _slot_dtype_version(slot: int, versions: Mapping[str, int]) -> VersionRule:
    """The version for input `slot`'s dtype (others: the first-input rule)."""

    def rule(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
        version = versions.get(_dtype(tensors, op, slot))
        return version if version is not None else _first_input_version(spec, tensors, op)

    return rule


def _quantize_version(spec: OperatorSpec, tensors: Sequence[Tensor], op: Operator) -> int:
    return 2 if tensors[op.outputs[0]].dtype == "int16" else 1


# ----------------------------------------------------------------------------- the recurrent ops

# One direction of an LSTM: inputs 1-17 of LSTM / UNIDIRECTIONAL_SEQUENCE_LSTM.
LSTM_DIRECTION_INPUTS = (
    *(f"input_to_{g}_weights" for g in GATES),  # 1-4
    *(f"recurrent_to_{g}_weights" for g in GATES),  # 5-8
    *(f"cell_to_{g}_weights" for g in ("input", "forget", "output")),  # 9-11
    *(f"{g}_gate_bias" for g in GATES),  # 12-15
    "projection_weights",  # 16
    "projection_bias",  # 17
)
# The inputs every LSTM direction needs (lstm.cc CheckInputTensorDimensions).
LSTM_REQUIRED_WEIGHTS = (
    *(f"{kind}_to_{g}_weights" for kind in ("input", "recurrent") for g in ("forget", "cell", "output")),
    *(f"{g}_gate_bias" for g in ("forget", "cell", "output")),
)
_LSTM_QUANTIZABLE = tuple(n for n in LSTM_DIRECTION_INPUTS if n.endswith("_weights"))
LSTM_LAYER_NORM_INPUTS = tuple(f"{g}_layer_norm_coefficients" for g in GATES)  # 20-23
# LSTM (FULL kernel) and UNIDIRECTIONAL_SEQUENCE_LSTM: 24 inputs (the legacy 20 omit layer norm).
LSTM_INPUTS = (
    "input",
    *LSTM_DIRECTION_INPUTS,
    "output_state",  # 18, variable
    "cell_state",  # 19, variable
    *LSTM_LAYER_NORM_INPUTS,
)
# The `LSTMWeights` fields among them (all but the sequence and the state).
LSTM_WEIGHT_INPUTS = tuple(n for n in LSTM_INPUTS if n not in ("input", "output_state", "cell_state"))


def _lstm(opcode: str, options: str, rule: VersionRule, sequences: tuple[str, ...]) -> OperatorSpec:
    return OperatorSpec(
        opcode,
        options,
        LSTM_INPUTS,
        input_counts=(20, 24),
        required=("input", *LSTM_REQUIRED_WEIGHTS, "output_state", "cell_state"),
        states=("output_state", "cell_state"),
        quantizable=_LSTM_QUANTIZABLE,
        sequences=sequences,
        version_rule=rule,
    )


_DIRECTIONS = ("fw", "bw")
_BIDIRECTIONAL_LSTM = OperatorSpec(
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "BidirectionalSequenceLSTMOptions",
    (
        "input",
        *(f"fw_{n}" for n in LSTM_DIRECTION_INPUTS),  # 1-17
        *(f"bw_{n}" for n in LSTM_DIRECTION_INPUTS),  # 18-34
        "fw_output_state",  # 35, variable
        "fw_cell_state",  # 36, variable
        "bw_output_state",  # 37, variable
        "bw_cell_state",  # 38, variable
        "aux_input",  # 39
        *(f"fw_aux_input_to_{g}_weights" for g in GATES),  # 40-43
        *(f"bw_aux_input_to_{g}_weights" for g in GATES),  # 44-47
    ),
    input_counts=(48,),
    required=(
        "input",
        *(f"{d}_{n}" for d in _DIRECTIONS for n in LSTM_REQUIRED_WEIGHTS),
        *(f"{d}_{s}" for d in _DIRECTIONS for s in ("output_state", "cell_state")),
    ),
    states=tuple(f"{d}_{s}" for d in _DIRECTIONS for s in ("output_state", "cell_state")),
    quantizable=(
        *(f"{d}_{n}" for d in _DIRECTIONS for n in _LSTM_QUANTIZABLE),
        *(f"{d}_aux_input_to_{g}_weights" for d in _DIRECTIONS for g in GATES),
    ),
    sequences=("input", "aux_input"),
    version_rule=_hybrid_version,
)

# LSTM with kernel_type=BASIC: 5 inputs, 4 outputs (lstm.cc); its state inputs need not be
# variable tensors (the kernel writes whatever tensors feed them).
BASIC_LSTM = OperatorSpec(
    "LSTM",
    "LSTMOptions",
    ("input", "prev_activation", "weights", "bias", "prev_state"),
    input_counts=(5,),
    required=("input", "prev_activation", "weights", "bias", "prev_state"),
    states=("prev_activation", "prev_state"),
    version_rule=_lstm_version,
)

# RNN and UNIDIRECTIONAL_SEQUENCE_RNN: 5 inputs (basic_rnn.cc, unidirectional_sequence_rnn.cc).
RNN_INPUTS = ("input", "input_weights", "recurrent_weights", "bias", "hidden_state")
RNN_WEIGHT_INPUTS = RNN_INPUTS[1:4]


def _rnn(opcode: str, options: str, sequences: tuple[str, ...]) -> OperatorSpec:
    return OperatorSpec(
        opcode,
        options,
        RNN_INPUTS,
        input_counts=(5,),
        required=RNN_INPUTS,
        states=("hidden_state",),
        quantizable=("input_weights", "recurrent_weights"),
        sequences=sequences,
        version_rule=_hybrid_version,
    )


_BIDIRECTIONAL_RNN_INPUTS = (
    "input",
    *(f"fw_{n}" for n in RNN_INPUTS[1:]),  # 1-4, fw_hidden_state variable
    *(f"bw_{n}" for n in RNN_INPUTS[1:]),  # 5-8, bw_hidden_state variable
    "aux_input",  # 9
    "fw_aux_input_weights",  # 10
    "bw_aux_input_weights",  # 11
)
_BIDIRECTIONAL_RNN = OperatorSpec(
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "BidirectionalSequenceRNNOptions",
    _BIDIRECTIONAL_RNN_INPUTS,
    input_counts=(12,),
    required=_BIDIRECTIONAL_RNN_INPUTS[:9],
    states=("fw_hidden_state", "bw_hidden_state"),
    quantizable=(
        *(f"{d}_{n}" for d in _DIRECTIONS for n in ("input_weights", "recurrent_weights")),
        "fw_aux_input_weights",
        "bw_aux_input_weights",
    ),
    sequences=("input", "aux_input"),
    version_rule=_hybrid_version,
)

# GRU (jaxlstm's own): the sequence, the `GRUWeights` fields (absent recurrent biases:
# NO_TENSOR), the state.
GRU_WEIGHT_INPUTS = tuple(f.name for f in dataclasses.fields(GRUWeights))
_GRU = OperatorSpec(
    GRU,
    inputs=("input", *GRU_WEIGHT_INPUTS, "hidden_state"),
    required=("input", "hidden_state"),
    states=("hidden_state",),
    sequences=("input",),
    builtin=False,
)

# ----------------------------------------------------------------------------- the table


def _op(opcode: str, options: str | None = None, **fields: Any) -> OperatorSpec:
    return OperatorSpec(opcode, options, **fields)


_INT8_INT16 = {"int8": 2, "int16": 3}

_BUILTINS = (
    _lstm("LSTM", "LSTMOptions", _lstm_version, ()),
    _lstm("UNIDIRECTIONAL_SEQUENCE_LSTM", "UnidirectionalSequenceLSTMOptions", _sequence_lstm_version, ("input",)),
    _BIDIRECTIONAL_LSTM,
    _rnn("RNN", "RNNOptions", ()),
    _rnn("UNIDIRECTIONAL_SEQUENCE_RNN", "SequenceRNNOptions", ("input",)),
    _BIDIRECTIONAL_RNN,
    _op(
        "FULLY_CONNECTED",
        "FullyConnectedOptions",
        inputs=("input", "weights", "bias"),
        quantizable=("weights",),
        version_rule=_fully_connected_version,
    ),
    _op("SOFTMAX", "SoftmaxOptions", integer_versions=_INT8_INT16),
    _op("CONCATENATION", "ConcatenationOptions", integer_versions=_INT8_INT16),
    _op("ADD", "AddOptions", integer_versions={"int8": 2}, version_rule=_add_version),
    _op("SUB", "SubOptions"),
    _op("MUL", "MulOptions", integer_versions={"int16": 4}, version_rule=_mul_version),
    _op("RESHAPE", "ReshapeOptions"),
    _op("STRIDED_SLICE", "StridedSliceOptions", integer_versions={"int8": 2}, bool_version=3),
    _op("TRANSPOSE", "TransposeOptions", integer_versions={"int8": 2, "int16": 5}, bool_version=3),
    _op("REVERSE_V2", "ReverseV2Options", integer_versions={"int8": 3}, bool_version=2),
    _op("GATHER", "GatherOptions", integer_versions={"int8": 2, "int16": 4}, bool_version=3),
    _op("PACK", "PackOptions", integer_versions=_INT8_INT16),
    _op("UNPACK", "UnpackOptions", integer_versions={"int8": 2, "int16": 4}, bool_version=3),
    _op("SHAPE", "ShapeOptions"),
    _op("FILL", "FillOptions", inputs=("dims", "value"), version_rule=_slot_dtype_version(1, {"int8": 3, "int16": 3})),
    _op("DEQUANTIZE", "DequantizeOptions", version_rule=_slot_dtype_version(0, {"int8": 2, "int16": 3, "float16": 3})),
    _op("QUANTIZE", "QuantizeOptions", version_rule=_quantize_version),
    _op("SPLIT", "SplitOptions"),
    _op("LOGISTIC", integer_versions=_INT8_INT16),
    _op("TANH", integer_versions=_INT8_INT16),
    _op("RELU"),
    _op("RELU6"),
    _op("RELU_N1_TO_1"),
    # front ends and the glue around recurrent loops (jaxlstm/model/conv_kernels.py, array_kernels.py)
    _op("CONV_2D", "Conv2DOptions", inputs=("input", "filter", "bias"), version_rule=_convolution_version),
    _op(
        "DEPTHWISE_CONV_2D",
        "DepthwiseConv2DOptions",
        inputs=("input", "filter", "bias"),
        version_rule=_convolution_version,
    ),
    _op("MAX_POOL_2D", "Pool2DOptions"),
    _op("AVERAGE_POOL_2D", "Pool2DOptions"),
    _op("LEAKY_RELU", "LeakyReluOptions"),
    _op("NEG", "NegOptions"),
    _op("RSQRT"),
    _op("DIV", "DivOptions"),
    _op("SQUARED_DIFFERENCE", "SquaredDifferenceOptions"),
    _op("MAXIMUM", "MaximumMinimumOptions"),
    _op("MINIMUM", "MaximumMinimumOptions"),
    _op("LESS", "LessOptions"),
    _op("LESS_EQUAL", "LessEqualOptions"),
    _op("GREATER", "GreaterOptions"),
    _op("GREATER_EQUAL", "GreaterEqualOptions"),
    _op("EQUAL", "EqualOptions"),
    _op("NOT_EQUAL", "NotEqualOptions"),
    _op("LOGICAL_AND", "LogicalAndOptions"),
    _op("LOGICAL_OR", "LogicalOrOptions"),
    _op("LOGICAL_NOT", "LogicalNotOptions"),
    _op("SELECT", "SelectOptions"),
    _op("SELECT_V2", "SelectV2Options"),
    _op("CAST", "CastOptions"),
    _op("ZEROS_LIKE", "ZerosLikeOptions"),
    *(_op(r, "ReducerOptions") for r in ("MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN")),
    *(_op(r, "ReducerOptions") for r in ("REDUCE_ANY", "REDUCE_ALL")),
    _op("PAD", "PadOptions", version_rule=_rank_version(4, 4)),
    _op("PADV2", "PadV2Options", version_rule=_rank_version(4, 4)),
    _op("SLICE", "SliceOptions", version_rule=_rank_version(4, 5)),
    _op("EXPAND_DIMS", "ExpandDimsOptions"),
    _op("SQUEEZE", "SqueezeOptions"),
    _op("BROADCAST_TO", "BroadcastToOptions", version_rule=_constant_version(2)),  # version 1 was withdrawn
    _op("TILE", "TileOptions"),
    _op("SPLIT_V", "SplitVOptions"),
    _op("SPACE_TO_BATCH_ND", "SpaceToBatchNDOptions", version_rule=_batch_space_version),
    _op("BATCH_TO_SPACE_ND", "BatchToSpaceNDOptions", version_rule=_batch_space_version),
    # control flow (jaxlstm/model/control_flow.py) and the loop bodies' sequence writes
    _op("WHILE", "WhileOptions"),
    _op(
        "DYNAMIC_UPDATE_SLICE",
        "DynamicUpdateSliceOptions",
        inputs=("operand", "update", "start_indices"),
        version_rule=_slot_dtype_version(2, {"int64": 2}),
    ),
)

OPERATORS: Mapping[str, OperatorSpec] = {spec.opcode: spec for spec in (*_BUILTINS, _GRU)}
# The TFLite builtin operators jaxlstm knows (those it reads and writes: `supported_builtins`).
BUILTINS = frozenset(spec.opcode for spec in OPERATORS.values() if spec.builtin)
# The fused recurrent builtin operators: those with a variable (state) input.
RECURRENT = frozenset(op for op in BUILTINS if OPERATORS[op].states)
# The two-direction ones (with an aux input), and the fused LSTM builtins.
BIDIRECTIONAL = frozenset(op for op in RECURRENT if "aux_input" in OPERATORS[op].inputs)
LSTM_FAMILY = frozenset(op for op in RECURRENT if op.endswith("LSTM"))
# The LSTMs with a fully integer kernel (lstm.cc, unidirectional_sequence_lstm.cc).
INTEGER_LSTM = LSTM_FAMILY - BIDIRECTIONAL
