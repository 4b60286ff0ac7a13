"""Malformed, hostile and unsupported .tflite files give clear errors, never crashes or hangs."""

from __future__ import annotations

from struct import error as struct_error

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.models import edit_flatbuffer, stacked_lstm


@pytest.fixture(scope="module")
def data() -> bytes:
    """A streaming export: no state-zeroing operators, so operator 0 is the first LSTM."""
    return export_tflite(stacked_lstm(np.random.default_rng(0), units=(4, 3), batch=2, time=3), stateful=True)


def _tensor_index(model, name: bytes) -> int:
    return next(i for i, t in enumerate(model.subgraphs[0].tensors) if t.name == name)


def _set(attr_path: str, value):
    """An edit that sets e.g. ``subgraphs[0].operators[0].opcodeIndex``."""

    def edit(model):
        *parents, last = attr_path.split(".")
        obj = model
        for part in parents:
            name, _, index = part.partition("[")
            obj = getattr(obj, name)
            if index:
                obj = obj[int(index[:-1])]
        setattr(obj, last, value)

    return edit


def _drop_input(position: int):
    def edit(model):
        op = model.subgraphs[0].operators[0]
        op.inputs = [-1 if p == position else i for p, i in enumerate(op.inputs)]

    return edit


def _unset_variable(model):
    model.subgraphs[0].tensors[_tensor_index(model, b"lstm_0/cell_state")].isVariable = False


def _wrong_buffer_size(model):
    t = model.subgraphs[0].tensors[_tensor_index(model, b"lstm_0/input_to_forget_weights")]
    t.shape = np.asarray([4, 6], np.int32)


def _read_before_write(model):
    ops = model.subgraphs[0].operators
    ops[0], ops[1] = ops[1], ops[0]


def _if_op(model):
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.IF
    code.version = 1
    model.operatorCodes.append(code)
    model.subgraphs[0].operators[2].opcodeIndex = len(model.operatorCodes) - 1


def _custom_op(model):
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = "MyLstm"
    model.operatorCodes.append(code)
    model.subgraphs[0].operators[0].opcodeIndex = len(model.operatorCodes) - 1


def _options_mismatch(model):
    op = model.subgraphs[0].operators[0]
    op.builtinOptionsType = schema.BuiltinOptions.SoftmaxOptions
    op.builtinOptions = schema.SoftmaxOptionsT()


def _int8_activation_input(model):
    t = model.subgraphs[0].tensors[model.subgraphs[0].inputs[0]]
    t.type = schema.TensorType.INT8


MALFORMED = {
    "buffer_out_of_range": (_set("subgraphs[0].tensors[1].buffer", 999), "refers to buffer 999, out of range"),
    "tensor_shape_vs_buffer_size": (
        _wrong_buffer_size,
        "buffer holds 80 bytes but shape \\[4, 6\\] of float32 needs 96",
    ),
    "missing_required_lstm_input": (_drop_input(2), "missing required input input_to_forget_weights \\(position 2\\)"),
    "state_not_a_variable_tensor": (_unset_variable, "cell_state \\(position 19.*must be a variable tensor"),
    "operator_tensor_out_of_range": (
        _set("subgraphs[0].operators[2].outputs", [12345]),
        "refers to tensors \\[12345\\]",
    ),
    "opcode_index_out_of_range": (_set("subgraphs[0].operators[1].opcodeIndex", 77), "opcode index 77, out of range"),
    "read_before_write": (_read_before_write, "reads tensors \\[.*\\] before any operator computes them"),
    "options_of_another_op": (
        _options_mismatch,
        "has builtin options SoftmaxOptions, expected UnidirectionalSequenceLSTMOptions",
    ),
    "schema_version": (_set("version", 2), "schema version 2; expected 3"),
    "subgraph_output_out_of_range": (
        _set("subgraphs[0].outputs", [4242]),
        "subgraph outputs refer to tensors \\[4242\\]",
    ),
    # an int8 input selects the integer LSTM kernel, which reads the input's quantization
    "int8_activations_without_quantization": (
        _int8_activation_input,
        r"input \(tensor 0 .*, int8\) has no quantization parameters",
    ),
}


@pytest.mark.parametrize("edit,message", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_model(data, edit, message):
    with pytest.raises(ValueError, match=message):
        load_tflite(edit_flatbuffer(data, edit))


UNSUPPORTED = {
    "builtin_op": (_if_op, r"operator 2 \(IF\) is not supported"),
    "custom_op": (_custom_op, "operator 0 is the custom operator 'MyLstm'"),
}


@pytest.mark.parametrize("edit,message", UNSUPPORTED.values(), ids=list(UNSUPPORTED))
def test_unsupported_model(data, edit, message):
    with pytest.raises(NotImplementedError, match=message):
        load_tflite(edit_flatbuffer(data, edit))


@pytest.mark.parametrize(
    "blob,message",
    [
        (b"", "shorter than a flatbuffer header"),
        (b"\x00" * 64, "file identifier"),
        (b"\x10\x00\x00\x00TFL3" + b"\xff" * 8, "truncated .tflite file"),
    ],
    ids=["empty", "bad_identifier", "garbage_after_identifier"],
)
def test_not_a_model(blob, message):
    with pytest.raises(ValueError, match=message):
        load_tflite(blob)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_file_says_it_is_truncated(data, fraction):
    with pytest.raises(ValueError, match=r"^truncated \.tflite file: its [\d,]+ bytes end before"):
        load_tflite(data[: int(len(data) * fraction)])


def test_wrong_argument_type():
    with pytest.raises(TypeError, match="bytes or a path"):
        load_tflite(12)


def test_fuzz_mutated_and_truncated_models(data):
    """Seeded random byte flips and truncations: loading either succeeds or raises
    ValueError / NotImplementedError; a model that loads runs or raises ValueError/TypeError."""
    rng = np.random.default_rng(1234)
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    outcomes = {"loaded": 0, "rejected": 0, "ran": 0}
    for case in range(300):
        blob = bytearray(data)
        if case % 4 == 0:
            blob = blob[: int(rng.integers(0, len(data)))]
        else:
            for _ in range(int(rng.integers(1, 9))):
                blob[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
        try:
            m = load_tflite(bytes(blob))
        except (ValueError, NotImplementedError):
            outcomes["rejected"] += 1
            continue
        outcomes["loaded"] += 1
        try:
            m(*[x] * len(m.inputs))
            outcomes["ran"] += 1
        except (ValueError, TypeError, NotImplementedError):
            pass
    # Both paths are exercised (most flips hit offsets: the weights are a small part of the file).
    assert outcomes["rejected"] > 0 and outcomes["ran"] > 0, outcomes


def _mutate_field(model, rng) -> None:
    """Sets one structural field of the unpacked model to a random, often invalid, value."""
    sg = model.subgraphs[0]
    tensor = sg.tensors[int(rng.integers(len(sg.tensors)))]
    op = sg.operators[int(rng.integers(len(sg.operators)))]
    n = len(sg.tensors)
    kind = int(rng.integers(9))
    if kind == 0 and tensor.shape is not None and len(tensor.shape):
        shape = list(tensor.shape)
        shape[int(rng.integers(len(shape)))] = int(rng.integers(-2, 12))
        tensor.shape = shape
    elif kind == 1:
        tensor.buffer = int(rng.integers(-1, len(model.buffers) + 2))
    elif kind == 2:
        inputs = list(op.inputs)
        inputs[int(rng.integers(len(inputs)))] = int(rng.integers(-2, n + 2))
        op.inputs = inputs
    elif kind == 3:
        op.outputs = [int(rng.integers(-1, n + 2))]
    elif kind == 4:
        op.opcodeIndex = int(rng.integers(0, len(model.operatorCodes) + 2))
    elif kind == 5:
        tensor.type = int(rng.integers(0, 20))
    elif kind == 6:
        tensor.isVariable = not tensor.isVariable
    elif kind == 7 and op.builtinOptions is not None:
        fields = sorted(vars(op.builtinOptions))
        field = fields[int(rng.integers(len(fields)))]
        value = getattr(op.builtinOptions, field)
        if isinstance(value, bool):
            setattr(op.builtinOptions, field, not value)
        elif isinstance(value, int):
            setattr(op.builtinOptions, field, int(rng.integers(-1, 12)))
        elif isinstance(value, float):
            setattr(op.builtinOptions, field, float(rng.choice([-1.0, 0.0, 0.25, np.nan, np.inf])))
    elif kind == 8:
        sg.outputs = [int(rng.integers(-1, n + 1))]


def test_fuzz_structural_fields(data):
    """Seeded random values in shapes, indices, types, flags and options (repacked validly)."""
    import jax

    rng = np.random.default_rng(99)
    x = rng.normal(size=(2, 3, 5)).astype(np.float32)
    outcomes = {"rejected": 0, "ran": 0, "failed_to_run": 0}
    for _ in range(200):
        try:
            blob = edit_flatbuffer(data, lambda model: _mutate_field(model, rng))
        except (ValueError, TypeError, OverflowError, struct_error):  # the value does not fit the field
            continue
        try:
            m = load_tflite(blob)
        except (ValueError, NotImplementedError):
            outcomes["rejected"] += 1
            continue
        try:
            with jax.disable_jit():  # eager: no compile per mutated shape
                m(*[x] * len(m.inputs))
            outcomes["ran"] += 1
        except (ValueError, TypeError, NotImplementedError):
            outcomes["failed_to_run"] += 1
    assert min(outcomes.values()) > 0, outcomes
