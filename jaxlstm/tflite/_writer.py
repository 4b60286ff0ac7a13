"""Exporter: `jaxlstm.model.Model` -> .tflite bytes with fused recurrent operators.

Export rewrites a copy of the model for the file (`jaxlstm.model.export_rewrites`: fixed
time or batch, state zeroed at each invoke for predict semantics, GRU unrolled, dynamic-range
quantization, LiteRT defects avoided), then serializes it with the schema's object API
(`ModelT.Pack`; tflite/converter/schema/schema.fbs): the main subgraph first, then the other
subgraphs (WHILE loops' conds and bodies, `Model.subgraphs`) in order.
"""

from __future__ import annotations

import os
import stat
import tempfile
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm._text import located
from jaxlstm.model.export_rewrites import prepare_for_export
from jaxlstm.model.graph import (
    GRU,
    Model,
    Subgraph,
    Tensor,
    operator_location,
)
from jaxlstm.model.operators import OPERATORS
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.tflite import _format


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
    model = prepare_for_export(
        model,
        quantize=quantize,
        quantize_min_elements=quantize_min_elements,
        asymmetric_quantize_inputs=asymmetric_quantize_inputs,
        stateful=stateful,
        batch_size=batch_size,
        time_steps=time_steps,
    )
    data = serialize(model)
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
