"""Inspect a .tflite file: operators, fused-op features, tensors, signatures, portability warnings.

Reads the flatbuffer directly with LiteRT's generated schema (object API), so it works on any
model, including ones that `jaxlstm.load_tflite` cannot import (Flex ops, resource variables);
it also runs `load_tflite` on the file and reports what that does (``not_loadable``).

`inspect_tflite(path_or_bytes)` returns a JSON-ready dict with five keys; this is the schema of
``jaxlstm inspect --json`` and it is stable (new keys may be added, existing ones keep their
meaning):

``"operators"``: one entry per operator, every subgraph, in execution order::

    {"subgraph": 0, "index": 0, "opcode": "UNIDIRECTIONAL_SEQUENCE_LSTM", "version": 1,
     "custom_code": None,                      # str for CUSTOM ops, e.g. "FlexTensorListReserve"
     "inputs": [0, 2, ..., -1], "outputs": [13],   # tensor indices; -1 = absent optional input
     "options": {"fused_activation_function": "TANH", "cell_clip": 10.0, ...},  # snake_case
     "slots": {"input": 0, "input_to_input_weights": 2, ..., "cell_to_input_weights": None},
     "features": {"cifg": False, "peephole": False, "projection": False,
                  "diagonal_recurrent": False, "layer_norm": False, "hybrid": False,
                  "quantization": "float", "integer_path": "float"}}

  A WHILE operator also has ``"loop"``: what `jaxlstm.model.loop_fusion.fuse_while_loops` (and
  ``jaxlstm convert``) does with it, ``{"fusable": bool, "body": int, "layer": "LSTM" | "GRU" |
  "SimpleRNN" | None, "fused_into": opcode | None, "reason": why it stays a loop | None, "error":
  the check's largest relative difference | None}`` (None when ``inspect_tflite(..., loops=False)``).

  ``slots`` (input name -> tensor index or None when absent) and ``features`` are present for the
  fused recurrent ops only (LSTM, UNIDIRECTIONAL_SEQUENCE_LSTM, BIDIRECTIONAL_SEQUENCE_LSTM, RNN,
  UNIDIRECTIONAL_SEQUENCE_RNN, BIDIRECTIONAL_SEQUENCE_RNN) and are ``None`` otherwise. For the
  bidirectional ops the per-direction features carry a ``fw_`` / ``bw_`` prefix and
  ``aux_input`` replaces ``layer_norm``; the RNN ops have ``hybrid``, ``quantization`` (and
  ``aux_input``) only. ``quantization`` is ``"float"``, ``"hybrid"`` (int8 weights, float
  activations: dynamic-range quantization) or ``"integer"`` (int8/int16 activations or state:
  full-integer quantization); ``hybrid`` is ``quantization == "hybrid"``. ``integer_path``
  names the kernel path: ``"float"``, ``"hybrid"``, and for integer LSTMs ``"8x8_16"`` (int8
  activations, int16 cell: LiteRT's kernel, and TFLite Micro's int8 one), ``"8x8_8"``
  (LiteRT's experimental LSTM with 12 intermediates) or ``"16x8"`` (int16 activations:
  TFLite Micro only); ``"integer"`` for the other recurrent ops, which no runtime has an
  integer kernel for.

``"tensors"``: ``{"subgraph", "index", "name", "shape", "shape_signature", "dtype",
"is_variable", "is_constant", "quantization"}``; ``shape_signature`` has -1 for dynamic
dimensions; ``quantization`` is ``{"scale": [...], "zero_point": [...],
"quantized_dimension": int}`` or ``None``.

``"signatures"``: ``{"key", "subgraph", "inputs": [{"name", "tensor"}], "outputs": [...]}``.

``"runtimes"``: ``{"litert": [...], "tflite-micro": [...]}``, for each runtime the reasons it
cannot run the file (an empty list: nothing inspect knows of stops it): Flex and custom ops
(both), int16-activation LSTMs (LiteRT registers LSTM versions 1-4 only), and for TFLite
Micro: the ops it has no kernel for (LSTM, BIDIRECTIONAL_SEQUENCE_LSTM, the RNN ops), integer
LSTMs with CIFG, peephole, projection or layer norm, hybrid LSTMs (its kernel computes NaN
from int8 weights with float activations), uint8 tensors and dynamic dimensions.

``"warnings"``: ``{"code", "subgraph", "operator", "message"}`` (the operator's index, or
``None`` for both when the warning is about the whole file), codes:
``flex_op``, ``custom_op`` (the model needs more than a plain builtin-op runtime and jaxlstm
cannot import it), ``while_loop`` (a WHILE loop in a file that `load_tflite` refuses: jaxlstm
runs WHILE loops, so the warning comes only with ``not_loadable``), ``unsupported_op`` (a
builtin jaxlstm has no kernel for),
``keras_cell_clip`` (an LSTM with cell_clip=10, which TFLiteConverter writes for Keras LSTMs
although Keras never clips), ``activation_none`` (an LSTM with activation NONE, ill-defined in
TFLite's kernels), ``merged_batch_major`` (a BIDIRECTIONAL_SEQUENCE_LSTM with merged outputs in
batch-major layout and batch > 1, which TFLite's kernel mis-indexes), and for the whole file:
``not_loadable`` (`jaxlstm.load_tflite` refuses the file; the message is its error),
``streaming_state`` (the recurrent state carries over from one invoke to the next: what a
LiteRT user must do about it).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm.model.operators import BIDIRECTIONAL, BUILTINS, LSTM_FAMILY, OPERATORS, RECURRENT
from jaxlstm.tflite._format import ENUM_FIELDS, FILE_IDENTIFIER, enum_names, read_model, snake_case

KERAS_CELL_CLIP = 10.0  # written by TFLiteConverter's Keras LSTM fusion (lstm_utils.cc)

_LSTM_OPS = LSTM_FAMILY - BIDIRECTIONAL
_RNN_OPS = RECURRENT - LSTM_FAMILY - BIDIRECTIONAL
_INTEGER_TYPES = ("int8", "uint8", "int16")
RUNTIME_NAMES = {"litert": "LiteRT", "tflite-micro": "TFLite Micro"}
# Recurrent ops TFLite Micro registers no kernel for (micro_mutable_op_resolver.h).
_NOT_IN_TFLITE_MICRO = RECURRENT - {"UNIDIRECTIONAL_SEQUENCE_LSTM"}


def read_tflite_bytes(model: str | os.PathLike | bytes) -> bytes:
    """The bytes of a .tflite file (or `model` itself), checked for the TFL3 identifier.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the data is not a TFLite flatbuffer.
    """
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, where = bytes(model), "the given bytes"
    else:
        with open(model, "rb") as f:
            data = f.read()
        where = os.fspath(model)
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError(f"{where} is not a .tflite file (no {FILE_IDENTIFIER.decode()} identifier)")
    return data


def inspect_tflite(model: str | os.PathLike | bytes, loops: bool = True) -> dict[str, Any]:
    """Describes a .tflite model as a JSON-ready dict (schema in the module docstring).

    Args:
      model: a path to a .tflite file, or its bytes.
      loops: say for each WHILE operator whether `jaxlstm.model.loop_fusion.fuse_while_loops`
        fuses it (which runs its check: about a second per loop); False leaves ``"loop"`` None.

    Returns:
      ``{"operators": [...], "tensors": [...], "signatures": [...], "runtimes": {...},
      "warnings": [...]}``.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a TFLite flatbuffer.
    """
    data = read_tflite_bytes(model)
    m = read_model(data)
    try:
        report = _describe(m)
    except (IndexError, KeyError, TypeError) as e:  # indices that point outside their tables
        raise ValueError(f"malformed .tflite file: {type(e).__name__}: {e}") from e
    load_warnings, loaded = _load(data)
    if loaded is not None:  # the loops load and run
        report["warnings"] = [w for w in report["warnings"] if w["code"] != "while_loop"]
    report["warnings"] += load_warnings
    if loops:
        _describe_loops(report["operators"], loaded)
    return report


def _load(data: bytes) -> tuple[list[dict[str, Any]], Any]:
    """What `jaxlstm.load_tflite` does with the file: (its error (``not_loadable``), or what
    a streaming model asks of a LiteRT user (``streaming_state``); the `Model`, or None)."""
    from jaxlstm.tflite import load_tflite

    try:
        model = load_tflite(data)
    except Exception as e:  # any failure is reported, not raised: inspect describes the file
        message = f"jaxlstm.load_tflite refuses this file: {type(e).__name__}: {e}"
        return [_file_warning("not_loadable", message)], None
    if not model.stateful:
        return [], model
    states = ", ".join(f"{t.name!r} {list(t.shape)}" for t in model.tensors if t.is_variable)
    return [
        _file_warning(
            "streaming_state",
            f"the recurrent state carries over from one invoke to the next (variable tensors {states}): "
            "call reset_all_variables() between independent inputs, and to run another batch resize "
            "these tensors too (the input alone fails); `jaxlstm convert MODEL.tflite --no-stateful "
            "-o predict.tflite` writes a file that starts every invoke from zero state",
        )
    ], model


def _describe_loops(operators: list[dict[str, Any]], model: Any) -> None:
    """Sets ``"loop"`` of each WHILE operator entry: what `fuse_while_loops` does with it."""
    from jaxlstm.model.loop_fusion import LoopFusion, fuse_while_loops

    whiles = [op for op in operators if op["opcode"] == "WHILE"]
    if not whiles:
        return
    failure = None
    try:
        fusions = iter(fuse_while_loops(model)[1] if model is not None else ())
    except Exception as e:  # reported, not raised: inspect describes the file
        failure = f"fuse_while_loops failed: {type(e).__name__}: {e}"
    for op in whiles:  # the model's main-subgraph WHILEs are the file's, in order
        if op["subgraph"] == 0 and model is not None and failure is None:
            op["loop"] = next(fusions).to_dict()
            continue
        if model is None:
            reason = "jaxlstm.load_tflite refuses the file (see not_loadable)"
        elif op["subgraph"] != 0:
            reason = f"a loop inside subgraph {op['subgraph']}: jaxlstm fuses the loops of the main subgraph"
        else:
            reason = failure
        op["loop"] = LoopFusion(op["index"], op["options"].get("body_subgraph_index"), reason=reason).to_dict()


def _describe(m: Any) -> dict[str, Any]:
    names = enum_names(schema.BuiltinOperator)
    opcodes = [_opcode(c, names) for c in m.operatorCodes or []]
    report: dict[str, Any] = {"operators": [], "tensors": [], "signatures": [], "runtimes": {}, "warnings": []}
    for s, graph in enumerate(m.subgraphs or []):
        tensors = [_tensor(s, i, t, m.buffers) for i, t in enumerate(graph.tensors or [])]
        report["tensors"] += tensors
        for i, op in enumerate(graph.operators or []):
            opcode, version, custom = opcodes[op.opcodeIndex]
            entry = _operator(s, i, opcode, version, custom, op, tensors)
            report["operators"].append(entry)
            report["warnings"] += _operator_warnings(entry, tensors)
    report["warnings"] = _merge_repeats(report["warnings"])
    report["runtimes"] = _runtimes(report["operators"], report["tensors"])
    for sig in m.signatureDefs or []:
        report["signatures"].append(
            {
                "key": _text(sig.signatureKey),
                "subgraph": int(sig.subgraphIndex),
                "inputs": [{"name": _text(t.name), "tensor": int(t.tensorIndex)} for t in sig.inputs or []],
                "outputs": [{"name": _text(t.name), "tensor": int(t.tensorIndex)} for t in sig.outputs or []],
            }
        )
    return report


def format_report(report: dict[str, Any], title: str = "") -> str:
    """A human-readable rendering of an `inspect_tflite` report."""
    tensors = {(t["subgraph"], t["index"]): t for t in report["tensors"]}

    def tensor(s: int, i: int) -> str:
        t = tensors[(s, i)]
        shape = ",".join(str(d) for d in t["shape_signature"])
        return f"t{i} {t['dtype']}[{shape}]"

    lines = [title] if title else []
    for sig in report["signatures"]:
        s = sig["subgraph"]
        ins = ", ".join(f"{x['name']}={tensor(s, x['tensor'])}" for x in sig["inputs"])
        outs = ", ".join(f"{x['name']}={tensor(s, x['tensor'])}" for x in sig["outputs"])
        lines.append(f"signature {sig['key']!r}: ({ins}) -> ({outs})")
    for runtime, reasons in report["runtimes"].items():
        lines.append(f"{RUNTIME_NAMES[runtime]}: " + ("runs this file" if not reasons else "cannot run this file:"))
        lines += [f"  - {reason}" for reason in reasons]
    lines.append(f"operators ({len(report['operators'])}):")
    for op in report["operators"]:
        s = op["subgraph"]
        name = op["opcode"] + (f" {op['custom_code']!r}" if op["custom_code"] else "")
        ins = ", ".join(tensor(s, i) for i in op["inputs"][:1] if i >= 0)
        outs = ", ".join(tensor(s, i) for i in op["outputs"])
        lines.append(f"  [{s}:{op['index']}] {name} v{op['version']}: {ins} -> {outs}")
        if op["features"] is not None:
            flags = " ".join(
                f"{k}={v if isinstance(v, str) else 'yes' if v else 'no'}" for k, v in op["features"].items()
            )
            lines.append(f"      features: {flags}")
            variables = [
                f"{slot}={tensor(s, i)}"
                for slot, i in op["slots"].items()
                if i is not None and tensors[(s, i)]["is_variable"]
            ]
            lines.append(f"      state (variable tensors): {', '.join(variables) or 'none'}")
        loop = op.get("loop")
        if loop is not None:
            if loop["fusable"]:
                lines.append(f"      loop: {loop['layer']}, fusable into {loop['fused_into']} (jaxlstm convert)")
            else:
                lines.append(f"      loop: not fusable: {loop['reason']}")
        if op["options"]:
            lines.append("      options: " + " ".join(f"{k}={v}" for k, v in op["options"].items()))
    lines.append(f"tensors ({len(report['tensors'])}):")
    for t in report["tensors"]:
        kind = "variable" if t["is_variable"] else "constant" if t["is_constant"] else ""
        q = t["quantization"]
        quant = (
            f" scale={q['scale'][0]:.6g}"
            if q and len(q["scale"]) == 1
            else (f" scale=[{len(q['scale'])} per-channel]" if q else "")
        )
        lines.append(
            f"  [{t['subgraph']}:{t['index']}] {t['name']}: {t['dtype']}{t['shape_signature']} {kind}{quant}".rstrip()
        )
    lines.append(f"warnings ({len(report['warnings'])}):" if report["warnings"] else "warnings: none")
    for w in report["warnings"]:
        where = "" if w["operator"] is None else f" at operator [{w['subgraph']}:{w['operator']}]"
        lines.append(f"  {w['code']}{where}: {w['message']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- internals


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _opcode(code: Any, names: dict[int, str]) -> tuple[str, int, str | None]:
    # Opcodes above 127 live only in builtinCode; older files only fill the deprecated byte.
    value = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    return names.get(value, f"UNKNOWN_{value}"), int(code.version), _text(code.customCode)


def _tensor(s: int, i: int, t: Any, buffers: list) -> dict[str, Any]:
    buffer = buffers[t.buffer] if buffers and t.buffer < len(buffers) else None
    has_data = buffer is not None and ((buffer.data is not None and len(buffer.data) > 0) or buffer.offset > 1)
    q = t.quantization
    quant = None
    if q is not None and q.scale is not None and len(q.scale):
        quant = {
            "scale": [float(v) for v in q.scale],
            "zero_point": [int(v) for v in (q.zeroPoint if q.zeroPoint is not None else [])],
            "quantized_dimension": int(q.quantizedDimension),
        }
    shape = [int(d) for d in (t.shape if t.shape is not None else [])]
    signature = [int(d) for d in t.shapeSignature] if t.shapeSignature is not None else shape
    return {
        "subgraph": s,
        "index": i,
        "name": _text(t.name),
        "shape": shape,
        "shape_signature": signature,
        "dtype": enum_names(schema.TensorType).get(t.type, str(t.type)).lower(),
        "is_variable": bool(t.isVariable),
        "is_constant": bool(has_data) and not t.isVariable,
        "quantization": quant,
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (np.ndarray, list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return _text(value)
    if hasattr(value, "__dict__"):  # a nested options table
        return {snake_case(k): _json_value(v) for k, v in vars(value).items()}
    return value


def _options(op: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for table in (op.builtinOptions, getattr(op, "builtinOptions2", None)):
        if table is None:
            continue
        for key, value in vars(table).items():
            name = snake_case(key)
            if name in ENUM_FIELDS and isinstance(value, (int, np.integer)):
                value = enum_names(ENUM_FIELDS[name]).get(int(value), int(value))
            out[name] = _json_value(value)
    return out


def _operator(
    s: int,
    i: int,
    opcode: str,
    version: int,
    custom: str | None,
    op: Any,
    tensors: list[dict[str, Any]],
) -> dict[str, Any]:
    inputs = [int(x) for x in (op.inputs if op.inputs is not None else [])]
    entry = {
        "subgraph": s,
        "index": i,
        "opcode": opcode,
        "version": version,
        "custom_code": custom,
        "inputs": inputs,
        "outputs": [int(x) for x in (op.outputs if op.outputs is not None else [])],
        "options": _options(op),
        "slots": None,
        "features": None,
    }
    if opcode == "WHILE":
        entry["loop"] = None  # set by _describe_loops
    table = OPERATORS[opcode].inputs if opcode in RECURRENT else None
    if table is not None and not (opcode == "LSTM" and entry["options"].get("kernel_type") == "BASIC"):
        slots = {name: (inputs[k] if k < len(inputs) and inputs[k] >= 0 else None) for k, name in enumerate(table)}
        entry["slots"] = slots
        entry["features"] = _features(opcode, slots, tensors, 0 if op.intermediates is None else len(op.intermediates))
    return entry


def _features(
    opcode: str, slots: dict[str, int | None], tensors: list[dict[str, Any]], n_intermediates: int
) -> dict[str, Any]:
    def present(name: str) -> bool:
        return slots.get(name) is not None

    def dtype(name: str) -> str | None:
        return tensors[slots[name]]["dtype"] if present(name) else None

    spec = OPERATORS[opcode]
    prefixes = ("fw_", "bw_") if opcode in BIDIRECTIONAL else ("",)
    states = spec.states
    if dtype("input") in _INTEGER_TYPES or any(dtype(s) in _INTEGER_TYPES for s in states):
        quantization = "integer"  # full-integer: int8 activations, int8/int16 state
    elif dtype(spec.inputs[spec.weight_slot]) in _INTEGER_TYPES:
        quantization = "hybrid"  # int8 weights, float activations
    else:
        quantization = "float"
    integer_path = quantization
    if quantization == "integer" and opcode in _LSTM_OPS:
        eight_bit = "8x8_8" if opcode == "LSTM" and n_intermediates == 12 else "8x8_16"
        integer_path = "16x8" if dtype("input") == "int16" else eight_bit
    quantized = {"hybrid": quantization == "hybrid", "quantization": quantization, "integer_path": integer_path}
    if opcode in _RNN_OPS:
        return quantized
    if opcode == "BIDIRECTIONAL_SEQUENCE_RNN":
        return {"aux_input": present("aux_input"), **quantized}
    features: dict[str, Any] = {}
    for p in prefixes:
        recurrent = slots[f"{p}recurrent_to_output_weights"]
        features.update(
            {
                f"{p}cifg": not present(f"{p}input_to_input_weights"),
                f"{p}peephole": present(f"{p}cell_to_forget_weights"),
                f"{p}projection": present(f"{p}projection_weights"),
                f"{p}diagonal_recurrent": recurrent is not None and len(tensors[recurrent]["shape"]) == 1,
            }
        )
    if opcode in _LSTM_OPS:
        features["layer_norm"] = present("forget_layer_norm_coefficients")
    else:
        features["aux_input"] = present("aux_input")
    return {**features, **quantized}


def _runtimes(operators: list[dict[str, Any]], tensors: list[dict[str, Any]]) -> dict[str, list[str]]:
    """For LiteRT and TFLite Micro, the reasons it cannot run the file (module docstring)."""
    litert: list[str] = []
    micro: list[str] = []
    for op in operators:
        where = f"operator [{op['subgraph']}:{op['index']}] {op['opcode']}"
        if op["opcode"] == "CUSTOM":
            reason = f"{where} is the custom op {op['custom_code']!r}, which needs its own kernel registered"
            litert.append(reason)
            micro.append(reason)
            continue
        features = op["features"] or {}
        path = features.get("integer_path")
        if path == "16x8":
            litert.append(f"{where} has int16 activations (16x8); LiteRT has no such LSTM kernel")
        if op["opcode"] in _NOT_IN_TFLITE_MICRO:
            micro.append(f"{where}: TFLite Micro has no kernel for this op")
        elif path in ("8x8_16", "16x8"):
            unsupported = [f for f in ("cifg", "peephole", "projection", "layer_norm") if features.get(f)]
            if unsupported:
                micro.append(f"{where} uses {', '.join(unsupported)}, which TFLite Micro's integer LSTM lacks")
        elif path == "hybrid" and op["opcode"] in _LSTM_OPS:
            micro.append(f"{where} is hybrid (int8 weights, float activations); TFLite Micro's kernel computes NaN")
    uint8 = [t["name"] for t in tensors if t["dtype"] == "uint8" and not t["is_constant"]]
    if uint8:
        micro.append(f"uint8 tensors ({', '.join(uint8[:3])}); TFLite Micro's kernels take int8 and int16")
    dynamic = [t["name"] for t in tensors if any(d < 0 for d in t["shape_signature"])]
    if dynamic:
        micro.append(
            f"dynamic dimensions (-1 in the shape signature of {', '.join(dynamic[:3])}); TFLite Micro needs "
            "static shapes: export with batch_size and time_steps"
        )
    return {"litert": litert, "tflite-micro": micro}


def _warning(op: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    return {"code": code, "subgraph": op["subgraph"], "operator": op["index"], "message": message}


def _file_warning(code: str, message: str) -> dict[str, Any]:
    return {"code": code, "subgraph": None, "operator": None, "message": message}


_PER_OPCODE = ("unsupported_op", "flex_op", "custom_op")


def _merge_repeats(warnings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One warning per unsupported/Flex/custom opcode (at its first operator), with a count."""
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], int] = {}
    out = []
    for w in warnings:
        key = (w["code"], w["message"])
        if w["code"] in _PER_OPCODE and key in merged:
            counts[key] += 1
            continue
        merged[key], counts[key] = dict(w), 1
        out.append(merged[key])
    for key, n in counts.items():
        if n > 1:
            merged[key]["message"] += f" ({n} operators)"
    return out


def _operator_warnings(op: dict[str, Any], tensors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    code, opts = op["opcode"], op["options"]
    if code == "WHILE":
        return [
            _warning(
                op,
                "while_loop",
                "a WHILE loop (what TensorFlow's converter writes for Keras 3 LSTM, GRU and SimpleRNN "
                "layers) in a file jaxlstm.load_tflite refuses (see not_loadable); loops whose TensorList "
                "ops are Flex ops come from a dynamic (None) batch size: re-convert with a fixed batch "
                "(keras.Input(..., batch_size=N)), whose builtin loops jaxlstm runs",
            )
        ]
    if code == "CUSTOM":
        if (op["custom_code"] or "").startswith("Flex"):
            return [
                _warning(
                    op,
                    "flex_op",
                    f"Flex (SELECT_TF_OPS) op {op['custom_code']!r} needs the TensorFlow "
                    "Select ops runtime, not in plain LiteRT or on accelerators; "
                    "re-convert with builtin ops only",
                )
            ]
        return [_warning(op, "custom_op", f"custom op {op['custom_code']!r} needs an op resolver that registers it")]
    warnings = []
    if code not in BUILTINS:
        warnings.append(
            _warning(
                op,
                "unsupported_op",
                f"{code} has no jaxlstm kernel: load_tflite/parity cannot run "
                "this model (inspect and LiteRT still can)",
            )
        )
    if code in LSTM_FAMILY and op["features"] is not None:
        if float(opts.get("cell_clip", 0.0)) == KERAS_CELL_CLIP:
            warnings.append(
                _warning(
                    op,
                    "keras_cell_clip",
                    "cell_clip=10: TFLiteConverter writes this for Keras LSTMs, "
                    "but Keras never clips, so outputs differ from Keras once "
                    "|cell state| > 10 (long or large inputs). "
                    "`jaxlstm convert --strip-cell-clip` removes it",
                )
            )
        if opts.get("fused_activation_function") == "NONE":
            warnings.append(
                _warning(
                    op,
                    "activation_none",
                    "activation NONE: TFLite's LSTM kernels leave the activation "
                    "buffer unwritten (h = o*g instead of o*c); use TANH",
                )
            )
    if code == "BIDIRECTIONAL_SEQUENCE_LSTM" and opts.get("merge_outputs") and not opts.get("time_major", True):
        batch = tensors[op["inputs"][0]]["shape_signature"][0]
        if batch != 1:
            warnings.append(
                _warning(
                    op,
                    "merged_batch_major",
                    "merge_outputs with batch-major input and batch != 1: "
                    "TFLite's kernel offsets the state by the merged width "
                    "(lstm_eval.cc), so rows after the first are wrong; use "
                    "time_major or merge_outputs=False + CONCATENATION",
                )
            )
    return warnings
