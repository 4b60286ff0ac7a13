"""Exporter: `jaxlstm.model.Model` -> .tflite bytes with fused recurrent operators.

Export runs graph rewrites on a copy of the model, then serializes it with the schema's
object API (`ModelT.Pack`):

1. ``time_steps``: fixes the time dimension of the sequence inputs.
2. ``batch_size``: fixes the dynamic batch dimension (or keeps it dynamic, -1 in
   ``shape_signature``).
3. Predict (``stateful=False``): zeroes every recurrent state at the start of each invoke.
   LiteRT requires the states to be variable tensors and never resets them itself, so a
   FILL operator (for an integer state: FILL then QUANTIZE) whose output *is* the variable
   tensor runs right before each recurrent op
   (the converter itself writes the same pattern with DEQUANTIZE in float16 models). With
   a dynamic batch the FILL dims come from SHAPE of the op's input, so the state follows
   ``resize_tensor_input`` of the input alone. Streaming (``stateful=True``) leaves the
   variable tensors alone.
4. GRU operators (no TFLite builtin) are unrolled into builtin operators over the input's
   static length or ``time_steps`` (`jaxlstm.model.builder.unroll_gru`).
5. ``quantize="dynamic"``: int8 weights exactly as TFLite's dynamic-range quantizer
   (`jaxlstm.ops.quantize_symmetric`), turning the recurrent ops and FULLY_CONNECTED hybrid,
   in every subgraph.

Steps 1-4 concern the main subgraph; the other subgraphs (WHILE loops' conds and bodies,
`Model.subgraphs`) are written as they are, after it, in order.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tempfile
from collections.abc import Sequence
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm._text import located
from jaxlstm.model.builder import unroll_gru
from jaxlstm.model.graph import (
    GRU,
    NO_TENSOR,
    Model,
    Operator,
    Subgraph,
    Tensor,
    operator_location,
    options_tuple,
    state_slots,
)
from jaxlstm.model.operators import BUILTINS, OPERATORS, RECURRENT
from jaxlstm.model.rewrite import Graph, remove_state_resets
from jaxlstm.ops._quant import QuantizedTensor, quantize_symmetric
from jaxlstm.tflite import _format

# Weight inputs that dynamic-range quantization turns to int8, by operator (`OperatorSpec.quantizable`).
QUANTIZABLE_INPUTS = {op: OPERATORS[op].quantizable_slots for op in sorted(BUILTINS) if OPERATORS[op].quantizable}
_RECURRENT_INPUTS = {op: OPERATORS[op].inputs for op in sorted(RECURRENT)}


def export_tflite(
    model: Any,
    path: str | os.PathLike | None = None,
    *,
    quantize: str | None = None,
    quantize_min_elements: int = 1024,
    asymmetric_quantize_inputs: bool = False,
    stateful: bool | None = None,
    batch_size: int | None = None,
    time_steps: int | None = None,
) -> bytes:
    """Serializes a model to .tflite bytes (and writes `path` atomically if given).

    By default the file behaves like Keras ``predict``: every ``invoke`` starts from zero
    state, and resizing the input alone (``resize_tensor_input`` + ``allocate_tensors``, or
    ``get_signature_runner()`` called with a new shape) runs it at any batch and length.

    Streaming (``stateful=True``): the recurrent state (TFLite variable tensors) carries over
    from one invoke to the next, so a long sequence can be fed in chunks; a LiteRT user must
    call ``interpreter.reset_all_variables()`` to start a new sequence, and fix the batch:
    either export with ``batch_size=N``, or resize every variable tensor (the state tensors,
    ``is_variable`` in ``jaxlstm inspect``) to ``[B, n]`` together with the input before
    ``allocate_tensors()`` (`jaxlstm.parity.litert.run_litert`'s ``state_batch`` does this).

    Args:
      model: a `jaxlstm.model.Model`, or any object with a ``to_model()`` method.
      path: file to write; a temporary file in the same directory is renamed over it, so
        a failed export leaves no partial file and an existing file intact.
      quantize: None (float weights) or ``"dynamic"``: int8 per-tensor symmetric weights
        (TFLite dynamic-range quantization), float activations (the hybrid kernels).
      quantize_min_elements: with ``"dynamic"``, an op is quantized only when each of its
        weight matrices has at least this many elements (TFLite's default 1024); its
        peephole vectors follow the op. FULLY_CONNECTED weights are judged alone.
      asymmetric_quantize_inputs: the hybrid kernels quantize activations asymmetrically
        (per row, with a zero point) in the ops this export quantizes.
      stateful: False: predict (above); True: streaming (above); None (default): the
        model's own `Model.stateful`, i.e. predict for models that jaxlstm builds or
        converts, and what the file did for a model read by `load_tflite`.
      batch_size: None keeps the model's dynamic dimensions dynamic (-1 in
        ``shape_signature``); an int fixes the dynamic batch dimension of every tensor,
        state included.
      time_steps: fixes the dynamic time dimension of the sequence inputs; required for a
        GRU whose length is dynamic (TFLite has no GRU operator: it is unrolled over
        this many steps).

    Returns:
      The .tflite flatbuffer (schema version 3, identifier "TFL3", signature
      "serving_default").

    Raises:
      NotImplementedError: the model has an operator jaxlstm cannot write.
      ValueError / TypeError: invalid options (a GRU of dynamic length without
        `time_steps`, say) or a malformed model.
      OSError: `path` cannot be written (the message names `path`).
    """
    if not isinstance(model, Model):
        to_model = getattr(model, "to_model", None)
        if to_model is None:
            raise TypeError(f"export_tflite takes a Model or an object with to_model(), got {type(model).__name__}")
        model = to_model()
    if quantize not in (None, "dynamic"):
        raise ValueError(f"quantize must be None or 'dynamic', got {quantize!r}")
    for name, value in (("batch_size", batch_size), ("time_steps", time_steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int or None, got {value!r}")
    _check_exportable(model)
    if time_steps is not None:
        model = fix_time(model, time_steps)
    if batch_size is not None:
        model = fix_batch(model, batch_size)
    if stateful is None and model.stateful:
        pass  # a streaming file read by load_tflite: written as it was
    elif stateful:
        model = remove_state_resets(model)
    else:
        model = zero_state_each_invoke(model)
    model = unroll_gru(model, time_steps=time_steps, stateful=bool(stateful or model.stateful))
    if quantize == "dynamic":
        model = quantize_dynamic_range(model, quantize_min_elements, asymmetric_quantize_inputs)
        model = model.replace(
            subgraphs=[
                quantize_dynamic_range(g, quantize_min_elements, asymmetric_quantize_inputs) for g in model.subgraphs
            ]
        )
    data = serialize(avoid_litert_defects(model))
    if path is not None:
        write_atomic(path, data)
    return data


def _check_exportable(model: Model) -> None:
    """Every operator can be written (GRU: unrolled), before rewrites renumber them."""
    for k in range(1 + len(model.subgraphs)):
        for position, op in enumerate(model.subgraph(k).operators):
            if op.opcode == GRU:
                continue
            try:
                _format.dict_to_options(op.opcode, dict(op.options))
            except (ValueError, NotImplementedError) as e:
                raise located(operator_location(k, position, op.opcode), e) from e


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temporary file next to `path`, then renames it over `path`.

    The file gets the mode of the file it replaces, or the one ``open(path, "w")`` would
    give (0666 & ~umask) rather than the temporary file's 0600. An `OSError` names `path`,
    not the temporary file.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".jaxlstm-", suffix=".tflite.tmp", dir=directory)
    except OSError as e:
        raise _naming(e, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _mode_for(path))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:
            raise _naming(e, path) from e
        raise


def _naming(error: OSError, path: str | os.PathLike) -> OSError:
    """The same error (type, errno, reason) about `path`."""
    return type(error)(error.errno, error.strerror, os.fspath(path))


def _mode_for(path: str | os.PathLike) -> int:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0o022)  # reading the umask means setting it; restored at once
        os.umask(umask)
        return 0o666 & ~umask


# ----------------------------------------------------------------------------- rewrites


def quantize_dynamic_range(model: Graph, min_elements: int, asymmetric: bool) -> Graph:
    """Int8 weights for every recurrent/FULLY_CONNECTED op whose weight matrices all have
    at least `min_elements` elements. A weight tensor that another consumer reads as float
    is duplicated rather than changed under it."""
    constants = model.constants
    tensors = list(model.tensors)
    float_weights = {i for i, t in enumerate(tensors) if i in constants and t.dtype == "float32" and not t.is_variable}
    plans = {}  # op position -> quantized input positions
    for position, op in enumerate(model.operators):
        slots = [s for s in QUANTIZABLE_INPUTS.get(op.opcode, ()) if s < len(op.inputs) and op.inputs[s] != NO_TENSOR]
        if not slots or any(op.inputs[s] not in float_weights for s in slots):
            continue
        slots = [s for s in slots if not _is_diagonal_recurrent(op, s, tensors)]  # read as float
        matrices = [s for s in slots if len(tensors[op.inputs[s]].shape) >= 2]
        if matrices and all(np.size(constants[op.inputs[s]]) >= min_elements for s in matrices):
            plans[position] = slots
    quantized_reads = {(p, s) for p, slots in plans.items() for s in slots}
    float_reads = {
        op.inputs[s]
        for p, op in enumerate(model.operators)
        for s in range(len(op.inputs))
        if (p, s) not in quantized_reads and op.inputs[s] != NO_TENSOR
    }
    replacement: dict[int, int] = {}
    operators = list(model.operators)
    for position, slots in plans.items():
        op = operators[position]
        inputs = list(op.inputs)
        for s in slots:
            source = inputs[s]
            if source not in replacement:
                q = quantize_symmetric(constants[source])
                t = dataclasses.replace(tensors[source], dtype="int8", scale=float(q.scale))
                if source in float_reads or source in model.outputs:
                    t = dataclasses.replace(t, name=_fresh_name(tensors, t.name + "/int8"))
                    tensors.append(t)
                    replacement[source] = len(tensors) - 1
                else:
                    tensors[source] = t
                    replacement[source] = source
                constants[replacement[source]] = q
            inputs[s] = replacement[source]
        options = dict(op.options)
        options["asymmetric_quantize_inputs"] = asymmetric
        operators[position] = dataclasses.replace(op, inputs=tuple(inputs), options=options_tuple(options))
    return model.replace(tensors=tensors, operators=operators, constants=constants)


def _is_diagonal_recurrent(op: Operator, slot: int, tensors: Sequence[Tensor]) -> bool:
    names = _RECURRENT_INPUTS.get(op.opcode)
    return bool(names) and "recurrent_to" in names[slot] and len(tensors[op.inputs[slot]].shape) == 1


def fix_time(model: Model, time_steps: int) -> Model:
    """Sets the time dimension of every sequence input ([B, T, F], or [T, B, F] when
    time-major) to `time_steps`.

    Raises:
      ValueError: an input whose time dimension is static and differs.
    """
    axes = model.batch_axes()
    tensors = list(model.tensors)
    for i in model.inputs:
        t = tensors[i]
        if len(t.shape) != 3:
            continue
        axis = 1 - axes.get(i, 0)
        if t.shape[axis] >= 0 and t.shape[axis] != time_steps:
            raise ValueError(
                f"time_steps={time_steps}, but input {t.name!r} has a fixed time dimension of "
                f"{t.shape[axis]} (shape {list(t.shape)})"
            )
        tensors[i] = dataclasses.replace(t, shape=t.shape[:axis] + (time_steps,) + t.shape[axis + 1 :])
    return model.replace(tensors=tensors)


def fix_batch(model: Model, batch_size: int) -> Model:
    """Replaces the dynamic batch dimension of every tensor by `batch_size`."""
    axes = model.batch_axes()
    tensors = []
    for i, t in enumerate(model.tensors):
        axis = axes.get(i, 0)
        if len(t.shape) > axis and t.shape[axis] < 0:
            t = dataclasses.replace(t, shape=t.shape[:axis] + (batch_size,) + t.shape[axis + 1 :])
        tensors.append(t)
    return model.replace(tensors=tensors)


def zero_state_each_invoke(model: Model) -> Model:
    """Zeroes every state tensor at the start of each invoke (predict semantics).

    A FILL of 0 whose output is the variable tensor runs right before the first operator that
    reads it, unless an operator writes it first (an imported predict model); an integer
    state is a QUANTIZE of a float FILL (real 0: its zero point), which LiteRT and TFLite
    Micro both run. Static state
    shapes get constant FILL dims; a dynamic batch gets dims built from SHAPE(x)[batch axis]
    and the state size, where x is the recurrent op's input (or the model's first input for
    a state read by other operators), so the state follows the resizing of the input alone.
    """
    tensors = list(model.tensors)
    constants = model.constants
    axes = model.batch_axes()
    operators: list[Operator] = []
    written: set[int] = set()
    batches: dict[int, int] = {}  # tensor x -> the [1] int32 tensor SHAPE(x)[batch axis]

    def add(name: str, shape: tuple[int, ...], dtype: str = "float32", value: Any = None) -> int:
        tensors.append(Tensor(_fresh_name(tensors, name), shape, dtype))
        if value is not None:
            constants[len(tensors) - 1] = value
        return len(tensors) - 1

    zero = None  # the FILL value, a float32 scalar 0
    for op in model.operators:
        for state in op.inputs:
            if state == NO_TENSOR or not tensors[state].is_variable or state in written:
                continue
            written.add(state)
            t = tensors[state]
            if zero is None:
                zero = add("zero_state/value", (), "float32", np.zeros((), np.float32))
            shape, prefix = t.shape, t.name
            if all(d >= 0 for d in shape):
                dims = add(prefix + "/zero_dims", (len(shape),), "int32", np.asarray(shape, np.int32))
            else:
                x = op.inputs[0] if state_slots(op) else model.inputs[0]
                if x not in batches:
                    batches[x] = _batch_of(operators, add, x, axes.get(x, 0), len(tensors[x].shape), prefix)
                rest = add(prefix + "/zero_dims_rest", (len(shape) - 1,), "int32", np.asarray(shape[1:], np.int32))
                dims = add(prefix + "/zero_dims", (len(shape),), "int32")
                operators.append(
                    Operator(
                        "CONCATENATION",
                        (batches[x], rest),
                        (dims,),
                        options_tuple({"axis": 0, "fused_activation_function": "NONE"}),
                    )
                )
            if t.scale is None:
                operators.append(Operator("FILL", (dims, zero), (state,)))
            else:  # TFLite Micro's FILL writes float32 and int32 only (fill.cc)
                zeros = add(prefix + "/zero", shape, "float32")
                operators.append(Operator("FILL", (dims, zero), (zeros,)))
                operators.append(Operator("QUANTIZE", (zeros,), (state,)))
        operators.append(op)
        written.update(op.outputs)
    return model.replace(tensors=tensors, operators=operators, constants=constants)


def _batch_of(operators: list[Operator], add: Any, x: int, axis: int, rank: int, prefix: str) -> int:
    """Appends SHAPE(x)[axis:axis+1] (an int32 [1] tensor) and returns its index."""
    shape = add(prefix + "/input_shape", (rank,), "int32")
    operators.append(Operator("SHAPE", (x,), (shape,), options_tuple({"out_type": "INT32"})))
    begin, end, strides = (
        add(f"{prefix}/batch_{n}", (1,), "int32", np.asarray([v], np.int32))
        for n, v in (("begin", axis), ("end", axis + 1), ("strides", 1))
    )
    batch = add(prefix + "/batch", (1,), "int32")
    operators.append(
        Operator(
            "STRIDED_SLICE",
            (shape, begin, end, strides),
            (batch,),
            options_tuple(
                {
                    "begin_mask": 0,
                    "end_mask": 0,
                    "ellipsis_mask": 0,
                    "new_axis_mask": 0,
                    "shrink_axis_mask": 0,
                    "offset": False,
                }
            ),
        )
    )
    return batch


def avoid_litert_defects(model: Model) -> Model:
    """Rewrites operator configurations that LiteRT computes wrongly into equivalent ones.

    * BIDIRECTIONAL_SEQUENCE_LSTM with merge_outputs in batch-major layout: the kernel
      offsets the state pointer by the merged row width (lstm_eval.cc EvalFloat/EvalHybrid),
      reading and writing past the state for batch > 1;
    * hybrid BIDIRECTIONAL_SEQUENCE_RNN with merge_outputs, time-major, symmetric inputs:
      the kernel passes ``zero_points + k`` (a null pointer plus k) per batch row
      (kernel_utils.cc RnnBatchStep) and crashes for batch > 1.
    Both become ``merge_outputs=False`` plus a CONCATENATION of the two outputs.

    Raises:
      NotImplementedError: a cross-linked BIDIRECTIONAL_SEQUENCE_RNN whose aux input is
        narrower than its input in the layouts where the kernel strides the aux input
        by the input size (time-major, or hybrid): LiteRT would read past its end.
    """
    tensors = list(model.tensors)
    operators: list[Operator] = []
    for op in model.operators:
        merged = bool(op.option("merge_outputs", False))
        time_major = bool(op.option("time_major", False))
        if op.opcode == "BIDIRECTIONAL_SEQUENCE_RNN":
            hybrid = tensors[op.inputs[1]].dtype == "int8"
            aux, aux_weights = op.inputs[9], op.inputs[10]
            if (
                aux != NO_TENSOR
                and aux_weights != NO_TENSOR
                and (time_major or hybrid)
                and (tensors[aux].shape[-1] < tensors[op.inputs[0]].shape[-1])
            ):
                raise NotImplementedError(
                    "BIDIRECTIONAL_SEQUENCE_RNN with aux weights and an aux input narrower than "
                    "the input: LiteRT steps through aux_input with the input size and would read "
                    "past its end; pad aux_input to the input size"
                )
            split = merged and time_major and hybrid and not op.option("asymmetric_quantize_inputs", False)
            widths = (tensors[op.inputs[1]].shape[0], tensors[op.inputs[5]].shape[0])
        elif op.opcode == "BIDIRECTIONAL_SEQUENCE_LSTM":
            split = merged and not time_major
            widths = (tensors[op.inputs[8]].shape[-1], tensors[op.inputs[25]].shape[-1])
        else:
            split = False
        if not split:
            operators.append(op)
            continue
        out = tensors[op.outputs[0]]
        halves = []
        for direction, width in zip(("fw", "bw"), widths):
            tensors.append(Tensor(_fresh_name(tensors, f"{out.name}/{direction}"), out.shape[:-1] + (width,)))
            halves.append(len(tensors) - 1)
        options = dict(op.options, merge_outputs=False)
        operators.append(dataclasses.replace(op, outputs=tuple(halves), options=options_tuple(options)))
        operators.append(
            Operator(
                "CONCATENATION",
                tuple(halves),
                op.outputs,
                options_tuple({"axis": len(out.shape) - 1, "fused_activation_function": "NONE"}),
            )
        )
    return model.replace(tensors=tensors, operators=operators)


def _fresh_name(tensors: Sequence[Tensor], name: str) -> str:
    taken = {t.name for t in tensors}
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate


# ----------------------------------------------------------------------------- serialize


class _AlignedBufferT(schema.BufferT):
    """A buffer whose data starts 16-byte aligned (as the converter writes them), so
    kernels can read weights in place."""

    def Pack(self, builder: flatbuffers.Builder) -> int:
        if self.data is not None:
            builder.Prep(16, self.data.nbytes)
        return super().Pack(builder)


def serialize(model: Model) -> bytes:
    """The flatbuffer bytes of `model` as it stands (no rewrites)."""
    buffers = [schema.BufferT()]  # buffer 0 is the empty buffer by convention
    opcode_index: dict[tuple[str, int], int] = {}
    operator_codes: list = []
    subgraphs = [
        _subgraph(model.subgraph(k), k, buffers, opcode_index, operator_codes) for k in range(1 + len(model.subgraphs))
    ]

    signature = schema.SignatureDefT()
    signature.signatureKey = model.signature_key
    signature.subgraphIndex = 0
    signature.inputs, signature.outputs = (
        [_tensor_map(name, i) for name, i in zip(names, indices)]
        for names, indices in zip(model.signature_names, (model.inputs, model.outputs))
    )

    m = schema.ModelT()
    m.version = _format.SCHEMA_VERSION
    m.description = "jaxlstm"
    m.operatorCodes = operator_codes
    m.subgraphs = subgraphs
    m.buffers = buffers
    m.signatureDefs = [signature]
    builder = flatbuffers.Builder(1024 + sum(b.data.nbytes for b in buffers if b.data is not None))
    builder.Finish(m.Pack(builder), file_identifier=_format.FILE_IDENTIFIER)
    return bytes(builder.Output())


def _subgraph(
    graph: Subgraph, index: int, buffers: list, opcode_index: dict[tuple[str, int], int], operator_codes: list
) -> Any:
    """The `SubGraphT` of subgraph `index`, appending its constants to `buffers` and new
    (opcode, version) pairs to `operator_codes`."""
    constants = graph.constants
    tensors = [_tensor(t, constants.get(i), buffers) for i, t in enumerate(graph.tensors)]
    operators = []
    for position, op in enumerate(graph.operators):
        try:
            options_type, options = _format.dict_to_options(op.opcode, dict(op.options))
        except (ValueError, NotImplementedError) as e:
            raise located(operator_location(index, position, op.opcode), e) from e
        key = (op.opcode, OPERATORS[op.opcode].version(graph.tensors, op))
        if key not in opcode_index:
            code = _format.OPCODES[op.opcode]
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(code, _format.PLACEHOLDER_FOR_GREATER_OP_CODES)
            oc.version = key[1]
            opcode_index[key] = len(operator_codes)
            operator_codes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = opcode_index[key]
        o.inputs = list(op.inputs)
        o.outputs = list(op.outputs)
        o.builtinOptionsType = options_type
        o.builtinOptions = options
        if op.intermediates:
            o.intermediates = list(op.intermediates)
        operators.append(o)
    subgraph = schema.SubGraphT()
    subgraph.name = graph.name
    subgraph.tensors = tensors
    subgraph.inputs = list(graph.inputs)
    subgraph.outputs = list(graph.outputs)
    subgraph.operators = operators
    return subgraph


def _tensor(t: Tensor, value: Any, buffers: list) -> Any:
    out = schema.TensorT()
    out.name = t.name
    out.shape = [1 if d < 0 else d for d in t.shape]  # dynamic dims are allocated at size 1
    if any(d < 0 for d in t.shape):
        out.shapeSignature = list(t.shape)
    out.isVariable = t.is_variable
    out.buffer = 0
    if isinstance(value, QuantizedTensor):
        out.quantization = _quantization(np.asarray(value.scale, np.float32), t.zero_point)
        data = np.asarray(value.values)
    elif t.scale is not None:  # a quantized activation, state or intermediate
        out.quantization = _quantization(np.asarray(t.scale, np.float32), t.zero_point)
        data = None if value is None else np.asarray(value)
    elif value is not None:
        data = np.asarray(value)
    else:
        data = None
    dtype = t.dtype if data is None else data.dtype.name
    if dtype not in _format.DTYPES:
        raise TypeError(f"tensor {t.name!r} has dtype {dtype}, which .tflite export does not support")
    out.type = _format.DTYPES[dtype]
    if t.is_variable:
        if data is not None and np.any(data):
            raise NotImplementedError(
                f"variable tensor {t.name!r} has a non-zero initial value; LiteRT variable "
                "tensors cannot hold a buffer (they start at zero)"
            )
    elif data is not None:
        if tuple(data.shape) != t.shape:
            raise ValueError(f"tensor {t.name!r}: value has shape {data.shape}, tensor shape is {t.shape}")
        buffer = _AlignedBufferT()
        buffer.data = np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).view(np.uint8).reshape(-1)
        out.buffer = len(buffers)
        buffers.append(buffer)
    return out


def _quantization(scale: np.ndarray, zero_point: int) -> Any:
    """Quantization parameters: one scale, or one per channel along the axis where the
    scale array (which broadcasts against the tensor) is not 1."""
    q = schema.QuantizationParametersT()
    q.scale = scale.reshape(-1).tolist()
    q.zeroPoint = [int(zero_point)] * scale.size
    q.quantizedDimension = int(np.argmax(scale.shape)) if scale.size > 1 else 0
    return q


def _tensor_map(name: str, index: int) -> Any:
    m = schema.TensorMapT()
    m.name = name
    m.tensorIndex = index
    return m
