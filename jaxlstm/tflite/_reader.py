"""Importer: .tflite bytes -> `jaxlstm.model.Model`.

The file is parsed with the schema's object API (`ModelT.InitFromPackedBuf`) after cheap
bounds checks, then validated the way the interpreter would: buffer sizes against tensor
shapes, tensor and opcode indices, operator inputs and the recurrent ops' required and
variable inputs. Malformed files raise ValueError naming what is wrong; valid files with
operators jaxlstm has no kernel for raise NotImplementedError naming the operator.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm._text import located
from jaxlstm.model import _integer_lstm
from jaxlstm.model.control_flow import check_loops
from jaxlstm.model.graph import NO_TENSOR, Model, Operator, Subgraph, Tensor, operator_location, options_tuple
from jaxlstm.model.operators import BASIC_LSTM, BUILTINS, INTEGER_LSTM, RECURRENT, spec_of
from jaxlstm.model.rewrite import fuse_tensor_list_writes, remove_state_resets
from jaxlstm.model.runtime import check_operator
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.lstm_integer import RUNTIMES
from jaxlstm.tflite import _format

# State kind -> (size name, the weight and dimension giving the size, whether the kernel
# accepts the state flattened to 1-D). n_output is the last dim of recurrent_to_output_weights
# ([n_cell, n_output], or [n_cell] when diagonal), as in Prepare. The LSTM kernels check only
# the state's element count (lstm.cc, unidirectional_sequence_lstm.cc,
# bidirectional_sequence_lstm.cc); the RNN kernels require [n_batch, n_units] exactly
# (basic_rnn.cc, unidirectional_sequence_rnn.cc, bidirectional_sequence_rnn.cc).
_STATE_SIZES = {
    "output_state": ("n_output", "recurrent_to_output_weights", -1, True),
    "cell_state": ("n_cell", "input_to_output_weights", 0, True),
    "hidden_state": ("n_units", "input_weights", 0, False),
}
_TYPE_NAMES = _format.enum_names(schema.TensorType)
# Types a quantization scale applies to (float tensors may carry calibration ranges, unused).
_QUANTIZED_TYPES = ("int8", "uint8", "int16", "int32", "int64")
_STATE_TYPES = ("float32", "int8", "int16")  # variable tensors: float state, integer LSTM state
# What TensorFlow's converter writes for resource variables (a stateful Keras layer).
_RESOURCE_VARIABLE_OPS = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE")


def load_tflite(data: bytes | bytearray | memoryview | str | os.PathLike, *, runtime: str = "litert") -> Model:
    """Parses a .tflite flatbuffer (bytes or a path) into a `Model`.

    The model's `Model.stateful` says whether the file keeps its recurrent state from one
    invoke to the next (no operator zeroes a state tensor before it is read), so that
    ``export_tflite(load_tflite(data))`` runs in LiteRT as `data` does.

    Every subgraph is read: the main one (subgraph 0) is the `Model`, the others (a WHILE
    loop's cond and body) its `Model.subgraphs`. Inside those, the sequence-output pattern
    TensorFlow's converter writes for a Keras recurrent layer (``TensorListSetItem``
    lowered to SLICE / CONCATENATION with shapes that depend on the loop counter) becomes
    the equivalent DYNAMIC_UPDATE_SLICE (`jaxlstm.model.rewrite.fuse_tensor_list_writes`),
    so loops run under `jax.jit`; WHILE loops are checked (`jaxlstm.model.control_flow`).

    Args:
      data: the file's bytes, or its path.
      runtime: whose integer kernels the model reproduces where they differ: ``"litert"``
        (LiteRT, the default) or ``"tflite-micro"`` (TensorFlow Lite Micro, which alone
        runs int16-activation LSTMs). Float and hybrid models run the same in both.

    Raises:
      ValueError: the data is not a valid .tflite model (the message says what is wrong),
        including integer models the runtime would run wrongly (e.g. an LSTM cell state
        scale that is not a power of two), subgraph references out of range or in a
        cycle, and WHILE loops that never end or whose carries change shape.
      NotImplementedError: a valid model that uses an operator or feature jaxlstm (or the
        runtime) lacks.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            data = f.read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load_tflite takes bytes or a path, got {type(data).__name__}")
    buf = bytes(data)
    model = _format.read_model(buf)
    if model.version != _format.SCHEMA_VERSION:
        raise ValueError(f"schema version {model.version}; expected {_format.SCHEMA_VERSION}")
    if not model.subgraphs:
        raise ValueError("the model has no subgraphs")
    return _Importer(model, buf, runtime).build()


def _ints(values: Any) -> tuple[int, ...]:
    return () if values is None else tuple(int(v) for v in values)


class _Importer:
    """Turns one unpacked `ModelT` into a `Model`: subgraph 0 (the signature's) and the
    other subgraphs, read one after the other (`_read_subgraph` sets the one being read)."""

    def __init__(self, model: Any, buf: bytes, runtime: str):
        self.model = model
        self.buf = buf
        self.runtime = runtime

    def build(self) -> Model:
        self.opcodes = [self._opcode(i, c) for i, c in enumerate(self.model.operatorCodes or [])]
        tensors, operators, inputs, outputs, constants = self._read_subgraph(0)
        operators = _fold_state_initializers(operators, tensors, constants)
        subgraphs = []
        for k in range(1, len(self.model.subgraphs)):
            name = self.model.subgraphs[k].name
            name = name.decode("utf-8", "replace") if isinstance(name, bytes) else (name or "")
            subgraphs.append(Subgraph(*self._read_subgraph(k), name=name))
        model = Model(
            tensors,
            operators,
            inputs,
            outputs,
            constants,
            signature_key=self._signature_key(),
            signature_names=self._signature_names(inputs, outputs),
            stateful=_carries_state(operators, tensors),
            runtime=self.runtime,
            subgraphs=subgraphs,
        )
        if subgraphs:
            model, _ = fuse_tensor_list_writes(model)
            check_loops(model)
        # A predict file zeroes its states at every invoke: the Model keeps the recurrence
        # alone and `stateful=False` says so (export_tflite writes the resets again).
        return model if model.stateful else remove_state_resets(model)

    def _read_subgraph(self, index: int) -> tuple[list[Tensor], list[Operator], list[int], list[int], dict]:
        """(tensors, operators, inputs, outputs, constants) of subgraph `index`, validated."""
        self.index = index
        self.subgraph = self.model.subgraphs[index]
        self.raw_tensors = self.subgraph.tensors or []
        self.n = len(self.raw_tensors)
        # How messages name the subgraph (the main one as before multi-subgraph models).
        self.label = "subgraph" if index == 0 else f"subgraph {index}"
        self.prefix = "" if index == 0 else f"subgraph {index} "
        tensors, constants = self._tensors()
        inputs = self._indices(f"{self.label} inputs", self.subgraph.inputs)
        outputs = self._indices(f"{self.label} outputs", self.subgraph.outputs)
        available = set(constants) | set(inputs) | {i for i, t in enumerate(tensors) if t.is_variable}
        operators = []
        for position, raw in enumerate(self.subgraph.operators or []):
            op = self._operator(position, raw, self.opcodes, tensors, available, constants)
            operators.append(op)
            available.update(op.outputs)
        missing = [i for i in outputs if i not in available]
        if missing:
            raise ValueError(f"{self.label} outputs {missing} are never computed")
        return tensors, operators, inputs, outputs, constants

    # -- opcodes and tensors ---------------------------------------------------------------

    def _opcode(self, index: int, code: Any) -> str:
        # Files written before the int32 builtin_code field hold the code in the int8 one.
        value = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
        if value not in _format.OPCODE_NAMES:
            raise ValueError(f"operator code {index} has unknown builtin code {value}")
        name = _format.OPCODE_NAMES[value]
        if name == "CUSTOM":
            custom = (code.customCode or b"").decode("utf-8", "replace")
            return f"CUSTOM:{custom}"
        return name

    def _tensors(self) -> tuple[list[Tensor], dict[int, Any]]:
        buffers = self.model.buffers or []
        tensors, constants, seen = [], {}, set()
        for i, t in enumerate(self.raw_tensors):
            what = f"{self.prefix}tensor {i}"
            if t.type not in _TYPE_NAMES:
                raise ValueError(f"{what} has unknown tensor type {t.type}")
            # Unsupported types (resource, string, ...) only matter to the ops that use them,
            # which have no kernel and are reported by name below.
            dtype = _format.TENSOR_TYPES.get(t.type, _TYPE_NAMES[t.type].lower())
            if t.sparsity is not None:
                raise NotImplementedError(f"{what} is sparse; sparse tensors are not supported")
            shape = _ints(t.shape)
            signature = _ints(t.shapeSignature) or shape
            if len(signature) != len(shape) or any(
                d < -1 or (s >= 0 and d not in (-1, s)) or s < -1 for d, s in zip(signature, shape)
            ):
                raise ValueError(f"{what} has an invalid shape {list(shape)} / shape_signature {list(signature)}")
            name = self._unique_name(t.name, i, seen)
            if not 0 <= t.buffer < len(buffers):
                raise ValueError(f"{what} ({name!r}) refers to buffer {t.buffer}, out of range [0, {len(buffers)})")
            raw = self._buffer_bytes(buffers[t.buffer], t.buffer)
            scale, zero_point = self._quantization(what, t, dtype, shape)
            is_variable = bool(t.isVariable)
            if is_variable and dtype not in _STATE_TYPES:
                raise NotImplementedError(
                    f"{what} ({name!r}) is a {dtype} variable; state tensors must be one of {_STATE_TYPES}"
                )
            tensors.append(
                Tensor(
                    name,
                    tuple(-1 if d < 0 else d for d in signature),
                    dtype,
                    None
                    if scale is None
                    else (float(scale) if np.ndim(scale) == 0 else tuple(np.ravel(scale).tolist())),
                    zero_point,
                    is_variable,
                )
            )
            if raw and is_variable:  # the interpreter refuses these too
                raise ValueError(f"{what} ({name!r}) is a variable tensor with a buffer")
            if raw:
                constants[i] = self._value(what, name, raw, dtype, shape, scale)
        return tensors, constants

    @staticmethod
    def _unique_name(raw: Any, index: int, seen: set[str]) -> str:
        name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else (raw or "")
        name = name or f"tensor_{index}"
        candidate, k = name, 1
        while candidate in seen:
            candidate, k = f"{name}_{k}", k + 1
        seen.add(candidate)
        return candidate

    def _buffer_bytes(self, buffer: Any, index: int) -> bytes:
        if buffer.offset > 1:  # data stored after the flatbuffer (models over 2 GB)
            end = buffer.offset + buffer.size
            if end > len(self.buf):
                raise ValueError(
                    _format.truncated_message(len(self.buf), f"buffer {index} spans [{buffer.offset}, {end})")
                )
            return self.buf[buffer.offset : end]
        return b"" if buffer.data is None else np.asarray(buffer.data, np.uint8).tobytes()

    @staticmethod
    def _quantization(what: str, t: Any, dtype: str, shape: tuple[int, ...]) -> tuple[np.ndarray | None, int]:
        """(scale, zero point): the scale a float32 scalar, or an array that broadcasts
        against the tensor along its quantized dimension (per-channel); (None, 0) if the
        tensor is not an integer one with quantization parameters."""
        q = t.quantization
        if dtype not in _QUANTIZED_TYPES or q is None or q.scale is None or len(q.scale) == 0:
            return None, 0  # float tensors may carry calibration ranges; they do not change values
        if q.details is not None:
            raise NotImplementedError(f"{what} uses custom quantization details")
        scale = np.asarray(q.scale, np.float32)
        zero_point = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0], np.int64)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise ValueError(f"{what} has invalid quantization scale(s) {scale[:4].tolist()}")
        if scale.size == 1:
            if zero_point.size != 1:
                raise ValueError(f"{what} has one scale but {zero_point.size} zero points")
            low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
            if not low <= zero_point[0] <= high:
                raise ValueError(f"{what} has zero point {zero_point[0]}, outside the {dtype} range [{low}, {high}]")
            return scale.reshape(()), int(zero_point[0])
        if np.any(zero_point != 0):
            raise NotImplementedError(f"{what}: per-channel quantization with non-zero zero points is not supported")
        axis = int(q.quantizedDimension)
        if not 0 <= axis < len(shape) or shape[axis] != scale.size:
            raise ValueError(
                f"{what} has {scale.size} per-channel scales for quantized_dimension {axis} of shape {list(shape)}"
            )
        return scale.reshape([-1 if a == axis else 1 for a in range(len(shape))]), 0

    @staticmethod
    def _value(what: str, name: str, raw: bytes, dtype: str, shape: tuple[int, ...], scale: Any) -> Any:
        if dtype not in _format.DTYPES or dtype == "uint8":
            raise NotImplementedError(f"{what} ({name!r}): {dtype} constants are not supported")
        if any(d < 0 for d in shape):
            raise ValueError(f"{what} ({name!r}) is constant but has a dynamic shape {list(shape)}")
        itemsize = np.dtype(dtype).itemsize
        expected = math.prod(shape) * itemsize
        if len(raw) != expected:
            raise ValueError(
                f"{what} ({name!r}): buffer holds {len(raw)} bytes but shape {list(shape)} of {dtype} needs {expected}"
            )
        values = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
        if dtype == "int8" and scale is None:
            raise ValueError(f"{what} ({name!r}) is an int8 constant without a quantization scale")
        # Quantized integer constants (weights, biases) are params; plain ones (shapes, axes) structure.
        return values if scale is None else QuantizedTensor(values, scale)

    def _indices(self, what: str, values: Any) -> list[int]:
        indices = list(_ints(values))
        bad = [i for i in indices if not 0 <= i < self.n]
        if bad:
            raise ValueError(f"{what} refer to tensors {bad}, out of range [0, {self.n})")
        return indices

    # -- operators -------------------------------------------------------------------------

    def _operator(
        self,
        position: int,
        raw: Any,
        opcodes: list[str],
        tensors: list[Tensor],
        available: set[int],
        constants: dict[int, Any],
    ) -> Operator:
        if not 0 <= raw.opcodeIndex < len(opcodes):
            raise ValueError(
                f"operator {position} has opcode index {raw.opcodeIndex}, out of range [0, {len(opcodes)})"
            )
        opcode = opcodes[raw.opcodeIndex]
        where = operator_location(self.index, position, opcode)
        if opcode.startswith("CUSTOM:"):
            custom = opcode[7:]
            hint = (
                "; TensorFlow's converter writes TensorList Flex ops for Keras recurrent layers with a dynamic "
                "(None) batch size: give keras.Input a fixed batch_size to get builtin WHILE loops, which jaxlstm runs"
                if custom.startswith("FlexTensorList")
                else ""
            )
            raise NotImplementedError(
                f"{self.prefix}operator {position} is the custom operator {custom!r}, which jaxlstm does not support{hint}"
            )
        if opcode in _RESOURCE_VARIABLE_OPS:
            raise NotImplementedError(
                f"{where}: resource variables ({', '.join(_RESOURCE_VARIABLE_OPS)}, which TensorFlow's converter "
                "writes for a stateful Keras layer) are not supported by jaxlstm; build the layer with "
                "stateful=False, or for a streaming model convert the Keras model with `jaxlstm convert "
                "--stateful`, which keeps the state in TFLite variable tensors"
            )
        if opcode not in BUILTINS:
            raise NotImplementedError(f"{where} is not supported by jaxlstm; supported operators: {sorted(BUILTINS)}")
        inputs = _ints(raw.inputs)
        outputs = _ints(raw.outputs)
        intermediates = _ints(raw.intermediates)
        bad = [i for i in inputs if not NO_TENSOR <= i < self.n] + [
            i for i in outputs + intermediates if not 0 <= i < self.n
        ]
        if bad:
            raise ValueError(f"{where} refers to tensors {bad}, out of range [0, {self.n})")
        options = self._options(where, opcode, raw)
        self._check_recurrent(where, opcode, options, inputs, tensors)
        unset = [i for i in inputs if i != NO_TENSOR and i not in available]
        if unset:
            raise ValueError(f"{where} reads tensors {unset} before any operator computes them")
        op = Operator(opcode, inputs, outputs, options_tuple(options), intermediates)
        try:
            check_operator(op, tensors, self.runtime, constants)
        except (ValueError, TypeError, NotImplementedError) as e:
            e.add_note(f"in {where}")
            raise
        return op

    def _options(self, where: str, opcode: str, raw: Any) -> dict[str, Any]:
        obj = raw.builtinOptions
        expected = _format.OPTIONS.get(opcode, type(obj).__name__[:-1] if obj is not None else None)
        if obj is None:
            if raw.builtinOptionsType != schema.BuiltinOptions.NONE and expected is not None:
                raise ValueError(f"{where} has unreadable builtin options")
            if opcode == "LSTM":  # the interpreter refuses an LSTM without options too
                raise ValueError(f"{where} has no LSTMOptions")
            return {}
        actual = type(obj).__name__[:-1]  # "LSTMOptionsT" -> "LSTMOptions"
        if actual != expected:
            raise ValueError(f"{where} has builtin options {actual}, expected {expected}")
        try:
            return _format.options_to_dict(obj)
        except (ValueError, NotImplementedError) as e:
            raise located(where, e) from e

    @staticmethod
    def _check_recurrent(
        where: str, opcode: str, options: dict, inputs: tuple[int, ...], tensors: list[Tensor]
    ) -> None:
        if opcode not in RECURRENT:
            return
        spec = spec_of(Operator(opcode, inputs, (), options_tuple(options)))
        basic = spec is BASIC_LSTM
        names = spec.inputs
        if len(inputs) not in spec.input_counts:
            counts = spec.input_counts
            raise ValueError(f"{where} has {len(inputs)} inputs, expected {' or '.join(map(str, counts))}")
        for p in spec.required_slots:
            if inputs[p] == NO_TENSOR:
                raise ValueError(f"{where} is missing required input {names[p]} (position {p})")
        # The BASIC kernel keeps its state in whatever tensors feed its state inputs.
        for name in () if basic else spec.states:
            p = names.index(name)
            if not tensors[inputs[p]].is_variable:
                raise ValueError(f"{where}: input {name} (position {p}, tensor {inputs[p]}) must be a variable tensor")
        dtype = tensors[inputs[0]].dtype
        integer_lstm = opcode in INTEGER_LSTM and dtype in _integer_lstm.ACTIVATIONS
        if dtype != "float32" and not integer_lstm:
            raise NotImplementedError(
                f"{where} has a {dtype} input; only float32 activations (float or hybrid int8-weight "
                "models) are supported here; full-integer quantization only for LSTM and "
                "UNIDIRECTIONAL_SEQUENCE_LSTM"
            )
        states = () if basic else spec.states
        wrong = [n for n in states if not integer_lstm and tensors[inputs[names.index(n)]].dtype != "float32"]
        if wrong:
            raise NotImplementedError(f"{where}: state {wrong[0]} is not float32, which a float input requires")
        if not basic:
            _check_state_shapes(where, options, inputs, tensors, names, spec.states)

    # -- signature -------------------------------------------------------------------------

    def _signature(self) -> Any:
        defs = [s for s in (self.model.signatureDefs or []) if s.subgraphIndex == 0]
        keyed = [s for s in defs if (s.signatureKey or b"") == _format.SIGNATURE_KEY.encode()]
        return (keyed or defs or [None])[0]

    def _signature_key(self) -> str:
        sig = self._signature()
        key = None if sig is None else sig.signatureKey
        return key.decode("utf-8", "replace") if key else _format.SIGNATURE_KEY

    def _signature_names(self, inputs: list[int], outputs: list[int]) -> tuple[list[str], list[str]] | None:
        sig = self._signature()
        if sig is None:
            return None
        by_index = [
            {m.tensorIndex: m.name.decode("utf-8", "replace") for m in (maps or []) if m.name}
            for maps in (sig.inputs, sig.outputs)
        ]
        names = [[by_index[k].get(i) for i in indices] for k, indices in enumerate((inputs, outputs))]
        if any(n is None for group in names for n in group):
            return None  # the signature does not cover the subgraph's inputs/outputs
        return names[0], names[1]


def _check_state_shapes(
    where: str,
    options: dict,
    inputs: tuple[int, ...],
    tensors: list[Tensor],
    names: tuple[str, ...],
    states: tuple[str, ...],
) -> None:
    """Checks each state tensor against [n_batch, size] as the kernels' Prepare does.

    n_batch is the input's batch dimension (axis 1 if time_major, else 0) and the size comes
    from the direction's weights (`_STATE_SIZES`). A dynamic (-1) batch on either side matches
    any batch. A size the weights' shapes do not give is left to the kernel.
    """
    x = tensors[inputs[0]]
    axis = 1 if options.get("time_major", False) else 0
    n_batch = x.shape[axis] if len(x.shape) > axis else -1
    for name in states:
        kind = next(k for k in _STATE_SIZES if name.endswith(k))
        size_name, weight_name, dim, flat_ok = _STATE_SIZES[kind]
        weight_name = name[: -len(kind)] + weight_name  # with the fw_/bw_ prefix
        weight = tensors[inputs[names.index(weight_name)]]
        size = weight.shape[dim] if weight.shape else -1
        p = names.index(name)
        state = tensors[inputs[p]]
        if size < 0 or _state_fits(state.shape, n_batch, size, flat_ok):
            continue
        flat = f"; a 1-D state of n_batch * {size} elements is also accepted" if flat_ok else ""
        raise ValueError(
            f"{where}: state input {name} (position {p}, tensor {inputs[p]} {state.name!r}) has shape "
            f"{list(state.shape)}, expected {[n_batch, size]} (n_batch from input {x.name!r} "
            f"{list(x.shape)}, {size_name} from {weight_name} {list(weight.shape)}){flat}"
        )


def _state_fits(shape: tuple[int, ...], n_batch: int, size: int, flat_ok: bool) -> bool:
    """Whether a state of `shape` holds [n_batch, size]; -1 is a dynamic dimension."""
    if flat_ok and len(shape) == 1 and shape[0] >= 0 and size > 0 and shape[0] % size == 0:
        shape = (shape[0] // size, size)
    return len(shape) == 2 and shape[1] == size and (shape[0] == n_batch or -1 in (shape[0], n_batch))


def _carries_state(operators: list[Operator], tensors: list[Tensor]) -> bool:
    """Whether the file keeps state across invokes: an operator reads a variable tensor that
    no earlier operator of the same invoke wrote (a predict file zeroes its states first)."""
    written: set[int] = set()
    for op in operators:
        if any(i != NO_TENSOR and tensors[i].is_variable and i not in written for i in op.inputs):
            return True
        written.update(op.outputs)
    return False


def _fold_state_initializers(
    operators: list[Operator], tensors: list[Tensor], constants: dict[int, Any]
) -> list[Operator]:
    """Turns DEQUANTIZE(constant) -> variable tensor into the variable's initial value.

    The float16 converter writes the zero initial states this way. LiteRT dequantizes a
    constant input only on the first invoke (dequantize.cc), so afterwards the variable
    carries the recurrent state like any other: an initializer, not a per-invoke reset.
    """
    kept = []
    for op in operators:
        source = op.inputs[0] if op.opcode == "DEQUANTIZE" and op.inputs else NO_TENSOR
        target = op.outputs[0] if op.outputs else NO_TENSOR
        if source in constants and target != NO_TENSOR and tensors[target].is_variable:
            value = constants[source]
            value = value.dequantize() if isinstance(value, QuantizedTensor) else value
            constants[target] = np.asarray(value, np.float32).reshape([max(d, 1) for d in tensors[target].shape])
        else:
            kept.append(op)
    return kept
