"""Exporter and importer without the interpreter: file format, round trip, options, atomic writes."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

import jaxlstm
from jaxlstm.model import Model, Operator
from jaxlstm.ops import QuantizedTensor, quantize_symmetric
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.models import bidirectional_lstm, lstm_weights, stacked_lstm

LSTM_WEIGHT_INPUTS = tuple(range(1, 12)) + (16,)  # inputs dynamic-range quantization turns int8


def _tree_equal(a, b) -> bool:
    leaves_a, tree_a = jax.tree_util.tree_flatten(a)
    leaves_b, tree_b = jax.tree_util.tree_flatten(b)
    return tree_a == tree_b and all(
        np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y) for x, y in zip(leaves_a, leaves_b)
    )


@pytest.fixture
def model(rng) -> Model:
    return stacked_lstm(rng)


@pytest.mark.parametrize("make", [stacked_lstm, bidirectional_lstm], ids=["stacked", "bidirectional"])
def test_round_trip_is_bit_exact(make, rng):
    m = make(rng)
    back = load_tflite(export_tflite(m))
    assert _tree_equal(m.params, back.params)
    assert back.opcodes == m.opcodes and back.input_names == m.input_names and back.output_names == m.output_names
    assert [(t.name, t.shape, t.dtype, t.is_variable) for t in back.tensors] == [
        (t.name, t.shape, t.dtype, t.is_variable) for t in m.tensors
    ]
    for ours, read in zip(m.operators, back.operators):  # the reader adds schema defaults
        assert dict(ours.options).items() <= dict(read.options).items()
    x = rng.normal(size=(2, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(back(x)[0], m(x)[0])


def test_file_format(model):
    data = export_tflite(model)
    assert data[4:8] == b"TFL3"
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    assert m.version == 3
    assert m.buffers[0].data is None  # buffer 0 is the empty buffer
    for code in m.operatorCodes:
        assert code.deprecatedBuiltinCode == min(code.builtinCode, 127)
    sg = m.subgraphs[0]
    variables = [t for t in sg.tensors if t.isVariable]
    assert len(variables) == 4 and all(t.buffer == 0 for t in variables)
    raw = schema.Model.GetRootAs(data, 0)
    for i in range(1, raw.BuffersLength()):  # constants start 16-byte aligned, like the converter's
        table = raw.Buffers(i)._tab
        assert table.Vector(table.Offset(4)) % 16 == 0
    (sig,) = m.signatureDefs
    assert sig.signatureKey == b"serving_default"
    assert [(s.name, s.tensorIndex) for s in sig.inputs] == [(b"input", sg.inputs[0])]
    assert [(s.name, s.tensorIndex) for s in sig.outputs] == [(b"probabilities", sg.outputs[0])]


def test_dynamic_dimensions_use_shape_signature(model):
    m = schema.ModelT.InitFromPackedBuf(export_tflite(model), 0)
    tensors = {t.name.decode(): t for t in m.subgraphs[0].tensors}
    assert list(tensors["input"].shape) == [1, 1, 5]
    assert list(tensors["input"].shapeSignature) == [-1, -1, 5]
    assert list(tensors["lstm_0/output_state"].shapeSignature) == [-1, 8]
    assert tensors["lstm_0/input_to_forget_weights"].shapeSignature is None


def test_batch_size_fixes_the_batch_dimension(model):
    back = load_tflite(export_tflite(model, batch_size=4))
    shapes = {t.name: t.shape for t in back.tensors}
    assert shapes["input"] == (4, -1, 5)  # time stays dynamic
    assert shapes["lstm_0/output_state"] == (4, 8) and shapes["lstm_1/cell_state"] == (4, 6)
    assert shapes["probabilities"] == (4, 3)


def test_time_major_batch_axis(rng):
    b = jaxlstm.model.ModelBuilder()
    x = b.add_input("input", (-1, -1, 5))
    y = b.add_lstm(x, lstm_weights(rng, 5, 4), jaxlstm.LSTMOptions(time_major=True))
    m = b.build([y])
    assert m.batch_axes()[m.inputs[0]] == 1
    shapes = {t.name: t.shape for t in load_tflite(export_tflite(m, batch_size=2)).tensors}
    assert shapes["input"] == (-1, 2, 5) and shapes["lstm/output_state"] == (2, 4)
    xs = rng.normal(size=(6, 3, 5)).astype(np.float32)  # [T, B, I]
    assert m(xs)[0].shape == (6, 3, 4)


def test_init_state_follows_the_batch(model, rng):
    state = model.init_state(3)
    assert state["lstm_0/output_state"].shape == (3, 8) and state["lstm_1/cell_state"].shape == (3, 6)
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    outputs, new_state = model.apply(model.params, state, x)
    assert outputs[0].shape == (3, 3) and new_state["lstm_0/cell_state"].shape == (3, 8)


@pytest.mark.parametrize("asymmetric", [False, True], ids=["symmetric", "asymmetric"])
def test_dynamic_range_quantization_matches_quantize_symmetric(model, asymmetric):
    back = load_tflite(
        export_tflite(model, quantize="dynamic", quantize_min_elements=0, asymmetric_quantize_inputs=asymmetric)
    )
    consts = {t.name: back.constant(t.name) for t in back.tensors}
    for op_index in (0, 1):
        op = back.operators[op_index]
        assert op.option("asymmetric_quantize_inputs") is asymmetric
        for slot, tensor in enumerate(op.inputs):
            if tensor < 0:
                continue
            name = back.tensors[tensor].name
            original = model.constant(name)
            if slot in LSTM_WEIGHT_INPUTS:
                q = quantize_symmetric(original)
                assert isinstance(consts[name], QuantizedTensor), name
                np.testing.assert_array_equal(consts[name].values, q.values)
                assert np.float32(consts[name].scale) == q.scale
            elif original is not None:  # biases and states stay float
                assert not isinstance(consts[name], QuantizedTensor), name
    fc = back.operators[3]
    assert isinstance(back.constant(back.tensors[fc.inputs[1]].name), QuantizedTensor)
    assert back.constant(back.tensors[fc.inputs[2]].name).dtype == np.float32


def test_quantization_threshold_applies_per_op(model):
    """An op turns hybrid only if every weight matrix reaches the threshold (else the hybrid
    kernel would see mixed int8/float weights)."""

    # layer 0: 8x5 = 40 and 8x8 = 64 elements; layer 1: 6x8 = 48 and 6x6 = 36.
    def hybrid_ops(**kw):
        back = load_tflite(export_tflite(model, quantize="dynamic", **kw))
        return [
            isinstance(back.constant(back.tensors[op.inputs[2]].name), QuantizedTensor) for op in back.operators[:2]
        ]

    assert hybrid_ops(quantize_min_elements=36) == [True, True]
    assert hybrid_ops(quantize_min_elements=37) == [True, False]
    assert hybrid_ops(quantize_min_elements=41) == [False, False]
    assert hybrid_ops() == [False, False]  # TFLite's default threshold, 1024


def test_op_versions(model):
    def versions(data):
        m = schema.ModelT.InitFromPackedBuf(data, 0)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        return {(names[c.builtinCode], c.version) for c in m.operatorCodes}

    assert ("UNIDIRECTIONAL_SEQUENCE_LSTM", 1) in versions(export_tflite(model))
    hybrid = versions(export_tflite(model, quantize="dynamic", quantize_min_elements=0))
    assert {("UNIDIRECTIONAL_SEQUENCE_LSTM", 2), ("FULLY_CONNECTED", 3)} <= hybrid
    asym = versions(export_tflite(model, quantize="dynamic", quantize_min_elements=0, asymmetric_quantize_inputs=True))
    assert {("UNIDIRECTIONAL_SEQUENCE_LSTM", 3), ("FULLY_CONNECTED", 9)} <= asym


def test_shared_weight_is_duplicated_not_changed(rng):
    """A tensor read both as a quantizable weight and as a float operand keeps its float copy."""
    m = stacked_lstm(rng, units=(4,), softmax=False)
    weight = next(i for i, t in enumerate(m.tensors) if t.name == "lstm_0/input_to_cell_weights")
    out = next(i for i, t in enumerate(m.tensors) if t.name == "logits")
    other = [op for op in m.operators] + [
        Operator("ADD", (weight, weight), (len(m.tensors),), (("fused_activation_function", "NONE"),))
    ]
    m = m.replace(
        tensors=list(m.tensors) + [jaxlstm.model.Tensor("doubled", (4, 5))],
        operators=other,
        outputs=[out, len(m.tensors)],
        signature_names=None,
    )
    back = load_tflite(export_tflite(m, quantize="dynamic", quantize_min_elements=0))
    assert back.constant("lstm_0/input_to_cell_weights").dtype == np.float32
    assert isinstance(back.constant("lstm_0/input_to_cell_weights/int8"), QuantizedTensor)


def test_exports_objects_with_to_model(model):
    class Layer:
        def to_model(self):
            return model

    assert export_tflite(Layer()) == export_tflite(model)
    assert jaxlstm.export_tflite is export_tflite and jaxlstm.load_tflite is load_tflite


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"quantize": "int8"}, ValueError), ({"batch_size": 0}, ValueError)],
    ids=["bad_quantize_mode", "bad_batch_size"],
)
def test_bad_options(model, kwargs, error):
    with pytest.raises(error):
        export_tflite(model, **kwargs)


def test_rejects_non_models():
    with pytest.raises(TypeError, match="to_model"):
        export_tflite(object())


def test_unsupported_operator_is_named(model):
    ops = list(model.operators) + [Operator("CUMSUM", (), ())]
    with pytest.raises(NotImplementedError, match=r"operator 5 \(CUMSUM\)"):
        export_tflite(model.replace(operators=ops))


def test_atomic_write(model, tmp_path):
    path = tmp_path / "model.tflite"
    data = export_tflite(model, path)
    assert path.read_bytes() == data
    broken = model.replace(operators=list(model.operators) + [Operator("CUMSUM", (), ())])
    with pytest.raises(NotImplementedError):
        export_tflite(broken, path)
    assert path.read_bytes() == data  # the good file is not clobbered
    with pytest.raises(NotImplementedError):
        export_tflite(broken, tmp_path / "new.tflite")
    assert sorted(os.listdir(tmp_path)) == ["model.tflite"]  # no partial or temporary file


def test_predict_export_zeroes_the_state_with_fill(model, rng):
    """The default export writes one FILL per state tensor; `load_tflite` reads the resets as
    the model's semantics (`Model.stateful` False) rather than as operators."""
    data = export_tflite(model)
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    sg, codes = m.subgraphs[0], m.operatorCodes
    fills = [op.outputs[0] for op in sg.operators if codes[op.opcodeIndex].builtinCode == schema.BuiltinOperator.FILL]
    assert sorted(sg.tensors[i].name.decode() for i in fills) == sorted(t.name for t in model.tensors if t.is_variable)
    back = load_tflite(data)
    assert back.stateful is False and back.opcodes == model.opcodes
    x = rng.normal(size=(2, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(back(x)[0], model(x)[0], atol=1e-6)
    streaming = load_tflite(export_tflite(model, stateful=True))
    assert streaming.stateful is True and streaming.opcodes == model.opcodes
    assert load_tflite(export_tflite(streaming, stateful=False)).stateful is False


def test_batch_major_merged_bidirectional_lstm_is_split(rng):
    """LiteRT mis-indexes the state of a merged batch-major BIDIRECTIONAL_SEQUENCE_LSTM for
    batch > 1, so the exporter writes two outputs and a CONCATENATION instead."""
    m = bidirectional_lstm(rng, merge_outputs=True)
    back = load_tflite(export_tflite(m))
    assert back.opcodes == ["BIDIRECTIONAL_SEQUENCE_LSTM", "CONCATENATION", "STRIDED_SLICE", "FULLY_CONNECTED"]
    assert back.operators[0].option("merge_outputs") is False
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(back(x)[0], m(x)[0])


def test_inputs_are_checked_against_the_input_tensors(model):
    """A wrong feature count is an input error that names the input, not a weight error."""
    message = r"input 'input' has shape \[-1, -1, 5\] \(-1: any size\), got an array of shape \(2, 4, 6\): 6 features"
    with pytest.raises(ValueError, match=message):
        model(np.zeros((2, 4, 6), np.float32))
    with pytest.raises(ValueError, match="got an array of shape \\(2, 5\\): rank 2, expected rank 3"):
        model(np.zeros((2, 5), np.float32))
    with pytest.raises(TypeError, match="takes 1 inputs"):
        model()


def test_a_state_for_another_batch_names_the_fix(model, rng):
    x = rng.normal(size=(3, 4, 5)).astype(np.float32)
    expected = np.asarray(model(x)[0])
    message = r"state tensor 'lstm_0/output_state' has batch 1 \(shape \[1, 8\]\) but operator 0 .* batch 3"
    with pytest.raises(ValueError, match=message) as error:
        model.apply(model.params, model.init_state(), x)
    assert "model.init_state(batch_size=3)" in str(error.value) and "state=None" in str(error.value)
    for state in (None, model.init_state(batch_size=3)):
        np.testing.assert_array_equal(model.apply(model.params, state, x)[0][0], expected)


def test_a_state_fixed_by_the_model_says_so(rng):
    b = jaxlstm.model.ModelBuilder(batch_size=1)  # dynamic input, state fixed at batch 1
    x = b.add_input("input", (-1, -1, 5))
    m = b.build([b.add_lstm(x, lstm_weights(rng, 5, 4), jaxlstm.LSTMOptions())])
    with pytest.raises(ValueError, match="the model fixes this state at batch 1: feed batch 1"):
        m(np.zeros((2, 3, 5), np.float32))
