"""`quantize`: a float `Model` -> a fully integer `Model`, calibrated as TensorFlow Lite's converter does it.

The conventions are the converter's (tensorflow/lite/tools/optimize/operator_property.cc,
quantization_utils.cc; ``activations="int16"`` is its 16x8 mode):

======================================  ===============================  ==========================
tensor                                  ``activations="int8"``           ``"int16"``
======================================  ===============================  ==========================
activations (inputs, op outputs)        int8 asymmetric, calibrated      int16 symmetric
FULLY_CONNECTED weights                 int8 symmetric per channel       same
FULLY_CONNECTED bias                    int32 at s_x * s_w (per channel) int64
SOFTMAX, LOGISTIC output                scale 1/256, zero point -128     1/32768, 0
TANH output                             1/128, 0                         1/32768, 0
STRIDED_SLICE, RESHAPE, REVERSE_V2,     the input's (one quantization    same
CONCATENATION output                    for every tensor they join)
ADD / MUL constant operand              int8 symmetric                   int16 symmetric
LSTM                                    `quantize_lstm` (8x8_16)         `quantize_lstm` (16x8)
======================================  ===============================  ==========================

A BIDIRECTIONAL_SEQUENCE_LSTM, which has no integer kernel, becomes two unidirectional ones
(`jaxlstm.model.rewrite.split_bidirectional_lstm`), as the converter writes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlstm._text import located
from jaxlstm.model.graph import Model, Operator, Tensor
from jaxlstm.model.operators import INTEGER_LSTM, LSTM_FAMILY, NO_TENSOR, OPERATORS, RECURRENT
from jaxlstm.model.rewrite import split_bidirectional_lstm
from jaxlstm.ops._quant import QuantizedTensor, round_half_away
from jaxlstm.ops.lstm import LSTMWeights
from jaxlstm.ops.lstm_integer import QuantParams
from jaxlstm.quantization._calibrate import Calibration, as_model, calibrate
from jaxlstm.quantization._lstm import (
    ACTIVATIONS,
    Range,
    activation_quantization,
    quantize_bias,
    quantize_constant,
    quantize_lstm,
)

IO = ("float", "integer")
# Operators whose output takes the quantization of their inputs: they move values, and
# TFLite's integer kernels require one quantization (CONCATENATION: for all its inputs).
SAME_QUANTIZATION = ("STRIDED_SLICE", "RESHAPE", "REVERSE_V2", "CONCATENATION")
# Operators whose integer output quantization is fixed (operator_property.cc restricted values).
FIXED_OUTPUTS = {
    "int8": {
        "SOFTMAX": QuantParams(1 / 256, -128),
        "LOGISTIC": QuantParams(1 / 256, -128),
        "TANH": QuantParams(1 / 128, 0),
    },
    "int16": {op: QuantParams(1 / 32768, 0) for op in ("SOFTMAX", "LOGISTIC", "TANH")},
}
SUPPORTED = (
    *LSTM_FAMILY,
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    *FIXED_OUTPUTS["int8"],
    *SAME_QUANTIZATION,
)
_NO_INTEGER_KERNEL = {
    "GRU": "TFLite has no GRU operator (the export unrolls it into float builtin operators)",
    **{
        op: "TFLite's RNN kernels run float or hybrid (int8 weights, float activations) only"
        for op in RECURRENT - LSTM_FAMILY
    },
}
_BIAS_TYPES = {"int8": np.int32, "int16": np.int64}
_WEIGHT_NAMES = frozenset(f.name for f in dataclasses.fields(LSTMWeights))


def quantize(
    model: Any,
    calibration_data: Any,
    *,
    activations: str = "int8",
    io: str = "float",
    progress: bool = True,
) -> Model:
    """A fully integer version of float `model`, calibrated on `calibration_data`.

    Runs the float model in JAX over the calibration batches (`calibrate`), records the
    range of every tensor the integer kernels quantize, and quantizes weights and
    activations as TensorFlow Lite's converter does (see the module docstring). The result
    runs in JAX bit for bit as its runtime will, and `jaxlstm.export_tflite` writes it:

    * ``activations="int8"``: LiteRT's 8x8_16 LSTM kernel and int8 glue operators; runs in
      LiteRT and TensorFlow Lite Micro (`Model.runtime` is ``"litert"``;
      ``model.replace(runtime="tflite-micro")`` reproduces TFLite Micro's kernels).
    * ``activations="int16"``: int16 activations, int8 weights, int64 biases (16x8), which
      only TensorFlow Lite Micro runs (`Model.runtime` is ``"tflite-micro"``); its LSTM
      kernel has no CIFG, peephole, projection or layer norm.

    Args:
      model: a float `Model` (or an object with ``to_model()``, such as a
        `jaxlstm.nn.Sequential`) of LSTM layers (uni- or bidirectional, stacked), Dense
        heads (FULLY_CONNECTED), SOFTMAX / LOGISTIC / TANH and the ops that join them
        (STRIDED_SLICE, RESHAPE, REVERSE_V2, CONCATENATION, ADD, MUL).
      calibration_data: an array (one model input; split into batches) or an iterable of
        batches, each an array or a sequence of arrays (one per model input):
        representative inputs, as for the converter's ``representative_dataset``; or the
        `Calibration` that `calibrate` recorded on this model.
      activations: ``"int8"`` or ``"int16"``.
      io: ``"float"``: the model takes and returns float32 (QUANTIZE after each input,
        DEQUANTIZE before each output, as the converter's default); ``"integer"``: the
        inputs and outputs are the integer tensors (quantization in their metadata).
      progress: show a progress bar over the calibration batches.

    Returns:
      The integer `Model`, with the float model's tensor names, signature and semantics
      (`Model.stateful`).

    Raises:
      NotImplementedError: an operator without a fully integer kernel (GRU, the RNN
        operators, ...) or an LSTM configuration the target kernel lacks; the message
        names the operator.
      ValueError: a model that is not float (hybrid int8 weights, integer activations),
        invalid arguments, calibration data that does not fit the model's inputs, or a
        `Calibration` of another model.
    """
    model = as_model(model, "quantize")
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if io not in IO:
        raise ValueError(f"io must be one of {IO}, got {io!r}")
    check_quantizable(model, activations)
    if isinstance(calibration_data, Calibration):
        calibration = calibration_data
        names = [t.name for t in split_bidirectional_lstm(model)[0].tensors]
        if names != [t.name for t in calibration.model.tensors]:
            raise ValueError("the Calibration was recorded on another model (its tensors differ from this model's)")
    else:
        calibration = calibrate(model, calibration_data, progress=progress)
    return _Quantizer(calibration, activations).integer_model(io)


def check_quantizable(model: Model, activations: str) -> None:
    """Refuses what cannot become fully integer, before any calibration.

    Raises:
      NotImplementedError / ValueError: as `quantize` (the message names the operator).
    """
    for position, op in enumerate(model.operators):
        where = f"operator {position} ({op.opcode})"
        if op.opcode in _NO_INTEGER_KERNEL:
            raise NotImplementedError(f"{where} cannot be quantized to integers: {_NO_INTEGER_KERNEL[op.opcode]}")
        if op.opcode not in SUPPORTED:
            raise NotImplementedError(
                f"{where} has no fully integer conversion in jaxlstm.quantize; supported operators: {sorted(SUPPORTED)}"
            )
        for i in (*op.inputs, *op.outputs):
            if i == NO_TENSOR:
                continue
            t = model.tensors[i]
            if isinstance(model.constants.get(i), QuantizedTensor) or not t.dtype.startswith("float"):
                if i in model.constants and not isinstance(model.constants[i], QuantizedTensor) and t.scale is None:
                    continue  # an integer constant that is structure (shape, axis, slice bounds)
                kind = "int8 (hybrid) weights" if i in model.constants else "integer activations"
                raise ValueError(
                    f"{where} has {kind} ({t.name!r}, {t.dtype}); quantize takes a float model (quantize the "
                    "float original, not an already quantized one)"
                )
        if op.opcode in LSTM_FAMILY:
            _check_lstm(op, where, activations)
        if op.opcode == "FULLY_CONNECTED" and op.inputs[1] not in model.constants:
            raise NotImplementedError(
                f"{where}: its weights are computed at run time; integer FULLY_CONNECTED needs constants"
            )


def _check_lstm(op: Operator, where: str, activations: str) -> None:
    if op.opcode == "LSTM" and op.option("kernel_type", "FULL") == "BASIC":
        raise NotImplementedError(f"{where}: the BASIC LSTM kernel has no int8/int16 path (only a uint8 kernel)")
    activation = op.option("fused_activation_function", "TANH")
    if activation != "TANH":
        raise NotImplementedError(
            f"{where}: activation {activation}; the integer LSTM kernels compute tanh whatever the option says"
        )
    if op.option("diagonal_recurrent_tensors", False):
        raise NotImplementedError(f"{where}: diagonal recurrent weights have no integer kernel")
    if activations == "int16" and op.opcode == "LSTM":
        raise NotImplementedError(
            f"{where}: int16 activations run only in TFLite Micro, which has no kernel for the single-step LSTM op"
        )


class _Groups:
    """Union-find over tensor indices: tensors that must share one quantization."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, i: int) -> int:
        while self.parent.get(i, i) != i:
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


@dataclasses.dataclass
class _Quantizer:
    """Assigns the quantization of every tensor of the calibrated float model and builds the
    integer model."""

    calibration: Calibration
    activations: str

    def __post_init__(self) -> None:
        self.model = self.calibration.model
        self.tensors = list(self.model.tensors)
        self.constants = self.model.constants
        self.quantized: set[int] = set()  # constants already replaced
        self.params, self.group_ranges, self.fixed = _activation_quantization(self.calibration, self.activations)

    # -- constants -----------------------------------------------------------------------

    def _set_constant(self, index: int, value: QuantizedTensor, where: str) -> None:
        """Replaces the float constant `index` by its integer `value` (with its scale)."""
        if index in self.quantized:
            old = self.constants[index]
            same = np.array_equal(np.asarray(old.values), np.asarray(value.values)) and np.array_equal(
                np.asarray(old.scale), np.asarray(value.scale)
            )
            if not same:
                raise NotImplementedError(
                    f"{where}: constant {self.tensors[index].name!r} is shared with another operator that "
                    "quantizes it differently; give each operator its own copy"
                )
            return
        scale = np.asarray(value.scale, np.float32)
        self.tensors[index] = dataclasses.replace(
            self.tensors[index],
            dtype=np.asarray(value.values).dtype.name,
            scale=float(scale.ravel()[0]) if scale.size == 1 else tuple(scale.ravel().tolist()),
            zero_point=0,
        )
        self.constants[index] = value
        self.quantized.add(index)

    # -- operators -----------------------------------------------------------------------

    def _lstm(self, position: int, op: Operator) -> Operator:
        where = f"operator {position} ({op.opcode} {self.tensors[op.outputs[0]].name!r})"
        x, h = op.inputs[0], op.outputs[0]
        for i, what in ((x, "input"), (h, "output")):
            if i in self.fixed:
                raise NotImplementedError(
                    f"{where}: its {what} shares the fixed quantization of a SOFTMAX/LOGISTIC/TANH"
                )
        inputs = OPERATORS[op.opcode].named_inputs(op)
        weights = LSTMWeights(**{n: self.model.constants[i] for n, i in inputs.items() if n in _WEIGHT_NAMES})
        recorded = self.calibration.lstms[position]
        ranges = dataclasses.replace(recorded, input=self.group_ranges[x], output=self.group_ranges[h])
        try:
            integer_weights, q = quantize_lstm(weights, ranges, activations=self.activations)
        except (ValueError, NotImplementedError) as e:
            raise located(where, e) from e
        for name, i in inputs.items():
            value = getattr(integer_weights, name, None) if name in _WEIGHT_NAMES else None
            if value is not None:
                self._set_constant(i, value, where)
        h_state, c_state = inputs["output_state"], inputs["cell_state"]
        self.tensors[h_state] = self._integer(self.tensors[h_state], q.output_state)
        self.tensors[c_state] = dataclasses.replace(self.tensors[c_state], dtype="int16", scale=q.cell_state)
        state_name = self.tensors[h_state].name  # "<layer>/output_state" when jaxlstm built the model
        prefix = state_name.removesuffix("output_state") if state_name.endswith("output_state") else f"{state_name}/"
        intermediates = []
        for k, p in enumerate(q.intermediates):
            dtype = "int8" if k == 4 else "int16" if p is not None else "float32"
            scale, zero_point = (None, 0) if p is None else p
            intermediates.append(self._add(Tensor(f"{prefix}intermediate_{k}", (0,), dtype, scale, zero_point)))
        return dataclasses.replace(op, intermediates=tuple(intermediates))

    def _fully_connected(self, position: int, op: Operator) -> Operator:
        where = f"operator {position} (FULLY_CONNECTED {self.tensors[op.outputs[0]].name!r})"
        weights = quantize_per_channel(self.model.constants[op.inputs[1]])
        self._set_constant(op.inputs[1], weights, where)
        if len(op.inputs) > 2 and op.inputs[2] != NO_TENSOR:
            s_x = np.float32(self.params[op.inputs[0]].scale)
            scale = s_x * np.asarray(weights.scale, np.float32).reshape(-1)
            bias = quantize_bias(self.model.constants[op.inputs[2]], scale, _BIAS_TYPES[self.activations])
            self._set_constant(op.inputs[2], bias, where)
        return op

    def _binary(self, position: int, op: Operator) -> Operator:
        """ADD / MUL: a constant operand is quantized symmetrically on its own."""
        for i in op.inputs:
            if i in self.model.constants and i not in self.quantized:
                bits = 8 if self.activations == "int8" else 16
                self._set_constant(i, quantize_constant(self.model.constants[i], bits), f"operator {position}")
        return op

    # -- the model -----------------------------------------------------------------------

    def _integer(self, t: Tensor, p: QuantParams) -> Tensor:
        return dataclasses.replace(t, dtype=self.activations, scale=float(p.scale), zero_point=int(p.zero_point))

    def _add(self, t: Tensor) -> int:
        taken = {u.name for u in self.tensors}
        name, k = t.name, 1
        while name in taken:
            name, k = f"{t.name}_{k}", k + 1
        self.tensors.append(dataclasses.replace(t, name=name))
        return len(self.tensors) - 1

    def integer_model(self, io: str) -> Model:
        for i, p in self.params.items():
            if not self.tensors[i].is_variable:
                self.tensors[i] = self._integer(self.tensors[i], p)
        operators = []
        for position, op in enumerate(self.model.operators):
            if op.opcode in INTEGER_LSTM:
                op = self._lstm(position, op)
            elif op.opcode == "FULLY_CONNECTED":
                op = self._fully_connected(position, op)
            elif op.opcode in ("ADD", "MUL"):
                op = self._binary(position, op)
            operators.append(op)
        inputs, outputs = list(self.model.inputs), list(self.model.outputs)
        if io == "float":
            inputs, operators = self._float_boundary(inputs, operators, "QUANTIZE")
            outputs, operators = self._float_boundary(outputs, operators, "DEQUANTIZE")
        return self.model.replace(
            tensors=self.tensors,
            operators=operators,
            inputs=inputs,
            outputs=outputs,
            constants=self.constants,
            runtime="tflite-micro" if self.activations == "int16" else self.model.runtime,
        )

    def _float_boundary(self, indices: Sequence[int], operators: list[Operator], opcode: str):
        """Float32 model inputs (QUANTIZE) or outputs (DEQUANTIZE) around the integer tensors
        `indices`; the float tensors take the names, the integer ones get ``/int8`` (``/int16``)."""
        boundary, ops = [], []
        for i in indices:
            t = self.tensors[i]
            self.tensors[i] = dataclasses.replace(t, name=f"{t.name}/{self.activations}")
            f = self._add(Tensor(t.name, t.shape))
            boundary.append(f)
            ops.append(Operator(opcode, (f,), (i,)) if opcode == "QUANTIZE" else Operator(opcode, (i,), (f,)))
        return boundary, ops + operators if opcode == "QUANTIZE" else operators + ops


def _activation_quantization(
    calibration: Calibration, activations: str
) -> tuple[dict[int, QuantParams], dict[int, Range], set[int]]:
    """The quantization of every activation tensor and LSTM output state, the calibrated
    range of each one's group (the tensors that share its quantization), and the tensors
    whose quantization an operator fixes."""
    model = calibration.model
    groups = _Groups()
    fixed: dict[int, tuple[str, QuantParams]] = {}
    for op in model.operators:
        if op.opcode in SAME_QUANTIZATION:
            for i in op.inputs if op.opcode == "CONCATENATION" else op.inputs[:1]:
                groups.union(i, op.outputs[0])
        elif op.opcode in INTEGER_LSTM:
            groups.union(op.inputs[OPERATORS[op.opcode].slot("output_state")], op.outputs[0])
        elif op.opcode in FIXED_OUTPUTS[activations]:
            fixed[op.outputs[0]] = (op.opcode, FIXED_OUTPUTS[activations][op.opcode])
    members: dict[int, set[int]] = {}
    for i in (*calibration.tensors, *groups.parent):
        members.setdefault(groups.find(i), set()).add(i)
    params: dict[int, QuantParams] = {}
    group_ranges: dict[int, Range] = {}
    restricted: set[int] = set()
    for tied in members.values():
        restrictions = {fixed[i] for i in tied if i in fixed}
        if len(restrictions) > 1:
            raise NotImplementedError(
                f"tensors {sorted(model.tensors[i].name for i in tied)} must share one quantization, but "
                f"{sorted(op for op, _ in restrictions)} fix different ones"
            )
        ranges = [calibration.tensors[i] for i in tied if i in calibration.tensors]
        value_range = (min(lo for lo, _ in ranges), max(hi for _, hi in ranges))
        if restrictions:
            ((_, p),) = restrictions
            restricted |= tied
        else:
            p = activation_quantization(value_range, activations)
        for i in tied:
            params[i], group_ranges[i] = p, value_range
    return params, group_ranges, restricted


def quantize_per_channel(weights: Any) -> QuantizedTensor:
    """Int8 symmetric weights [n_out, n_in] with one scale per output row (the converter's
    per-channel FULLY_CONNECTED weights): scale = max|row| / 127 (1 for a zero row) and
    q = round(w * 127 / max|row|), as `jaxlstm.ops.quantize_symmetric` per row."""
    w = np.asarray(weights, np.float32)
    extent = np.max(np.abs(w), axis=1, keepdims=True)
    safe = np.where(extent > 0, extent, np.float32(1))
    inverse = np.where(extent > 0, np.float32(127) / safe, np.float32(0)).astype(np.float32)
    q = np.asarray(round_half_away(jnp.asarray(w * inverse)))
    scale = np.where(extent > 0, extent / np.float32(127), np.float32(1)).astype(np.float32)
    return QuantizedTensor(np.clip(q, -127, 127).astype(np.int8), scale)
