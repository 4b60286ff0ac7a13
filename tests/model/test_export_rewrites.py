"""The rewrites that prepare a Model for a .tflite file (jaxlstm.model.export_rewrites), on the
model itself, run in JAX: each keeps the model's outputs (float32, same kernels: compared
exactly or to 1e-6 where the operator order changes) and changes what its docstring says.
How LiteRT runs the written files is tested in tests/tflite/."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm.model import ModelBuilder
from jaxlstm.model.export_rewrites import (
    avoid_litert_defects,
    fix_batch,
    fix_time,
    prepare_for_export,
    quantize_dynamic_range,
    zero_state_each_invoke,
)
from jaxlstm.ops import LSTMOptions, QuantizedTensor
from tests.tflite.models import N_INPUT, bidirectional_lstm, lstm_weights, stacked_lstm


def _lstm_sequence_model(rng, batch=-1, time=-1):
    """input [batch, time, 5] -> UNIDIRECTIONAL_SEQUENCE_LSTM(4): the whole sequence out."""
    b = ModelBuilder()
    x = b.add_input("input", (batch, time, N_INPUT))
    return b.build([b.add_lstm(x, lstm_weights(rng, N_INPUT, 4), LSTMOptions(), name="lstm")])


def _opcodes(model):
    return [op.opcode for op in model.operators]


def test_fix_batch_and_time_fix_dynamic_dimensions_only():
    model = _lstm_sequence_model(np.random.default_rng(0))
    fixed = fix_time(fix_batch(model, 3), 7)
    assert fixed.tensors[fixed.inputs[0]].shape == (3, 7, N_INPUT)
    assert fixed.tensors[fixed.outputs[0]].shape[:2] == (3, -1)  # outputs follow at run time
    states = [t.shape for t in fixed.tensors if t.is_variable]
    assert states == [(3, 4), (3, 4)]
    assert [t.shape for t in model.tensors if t.is_variable] == [(-1, 4), (-1, 4)]  # the original is unchanged


def test_fix_time_refuses_a_different_static_length():
    model = _lstm_sequence_model(np.random.default_rng(0), time=5)
    with pytest.raises(ValueError, match=r"time_steps=6.*'input'.*fixed time dimension of 5"):
        fix_time(model, 6)


@pytest.mark.parametrize("batch", [-1, 2], ids=["dynamic_batch", "static_batch"])
def test_zero_state_each_invoke_makes_every_call_start_from_zero(batch):
    rng = np.random.default_rng(1)
    model = _lstm_sequence_model(rng, batch=batch)
    x = rng.normal(size=(2, 6, N_INPUT)).astype(np.float32)
    (first,), state = model.apply(model.params, None, x)
    (carried,), _ = model.apply(model.params, state, x)
    assert not np.allclose(first, carried)  # the plain model streams

    predict = zero_state_each_invoke(model)
    expected = "SHAPE" if batch < 0 else "FILL"
    assert expected in _opcodes(predict) and _opcodes(predict).count("FILL") == 2
    (again,), _ = predict.apply(predict.params, state, x)  # a non-zero state is ignored
    np.testing.assert_array_equal(again, first)


def test_zero_state_each_invoke_leaves_state_that_an_operator_writes_first():
    predict = zero_state_each_invoke(_lstm_sequence_model(np.random.default_rng(2)))
    assert _opcodes(zero_state_each_invoke(predict)) == _opcodes(predict)


def test_quantize_dynamic_range_matches_tflite_symmetric_rule():
    """TFLite's dynamic-range quantizer: per-tensor scale max|w| / 127, int8 round-half-away."""
    rng = np.random.default_rng(3)
    model = stacked_lstm(rng, units=(8, 6))
    quantized = quantize_dynamic_range(model, min_elements=0, asymmetric=True)
    lstm = next(op for op in quantized.operators if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    original = next(op for op in model.operators if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    w = np.asarray(model.constants[original.inputs[2]])  # input_to_forget_weights
    q = quantized.constants[lstm.inputs[2]]
    assert isinstance(q, QuantizedTensor)
    # tensor_utils SymmetricQuantizeFloats: std::round(w * (127 / max|w|)) in float32
    inverse = np.float32(127) / np.abs(w).max()
    np.testing.assert_allclose(float(q.scale), np.abs(w).max() / 127, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(q.values), np.sign(w) * np.floor(np.abs(w * inverse) + 0.5))
    assert lstm.option("asymmetric_quantize_inputs") is True
    assert not isinstance(quantized.constants[lstm.inputs[12]], QuantizedTensor)  # biases stay float


def test_quantize_dynamic_range_respects_min_elements():
    """An op is quantized when each weight matrix has >= min_elements elements; FC alone."""
    model = stacked_lstm(np.random.default_rng(4), units=(8, 6))  # matrices 8x5, 8x8 | 6x8, 6x6 | FC 3x6

    def quantized_ops(min_elements):
        q = quantize_dynamic_range(model, min_elements=min_elements, asymmetric=False)
        return [
            op.opcode for op in q.operators if any(isinstance(q.constants.get(i), QuantizedTensor) for i in op.inputs)
        ]

    assert quantized_ops(40) == ["UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert quantized_ops(36) == ["UNIDIRECTIONAL_SEQUENCE_LSTM"] * 2
    assert quantized_ops(18) == ["UNIDIRECTIONAL_SEQUENCE_LSTM"] * 2 + ["FULLY_CONNECTED"]
    assert quantized_ops(10**6) == []


def test_quantize_dynamic_range_duplicates_a_weight_read_as_float_elsewhere():
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.add_input("x", (-1, 4))
    w = b.add_constant("shared", rng.normal(size=(4, 4)).astype(np.float32))
    y = b.add_intermediate("y", (-1, 4))
    b.add_operator("FULLY_CONNECTED", [x, w, None], [y], fused_activation_function="NONE")
    b.add_operator("ADD", [y, w], [z := b.add_intermediate("z", (4, 4))], fused_activation_function="NONE")
    model = b.build([z])
    quantized = quantize_dynamic_range(model, min_elements=0, asymmetric=False)
    fc, add = quantized.operators
    assert fc.inputs[1] != add.inputs[1]
    assert isinstance(quantized.constants[fc.inputs[1]], QuantizedTensor)
    assert not isinstance(quantized.constants[add.inputs[1]], QuantizedTensor)


def test_avoid_litert_defects_splits_merged_batch_major_bidirectional_lstm():
    rng = np.random.default_rng(6)
    model = bidirectional_lstm(rng, merge_outputs=True)
    fixed = avoid_litert_defects(model)
    assert _opcodes(fixed)[:2] == ["BIDIRECTIONAL_SEQUENCE_LSTM", "CONCATENATION"]
    assert fixed.operators[0].option("merge_outputs") is False
    x = rng.normal(size=(3, 4, N_INPUT)).astype(np.float32)
    np.testing.assert_allclose(fixed(x)[0], model(x)[0], rtol=0, atol=1e-6)


def test_prepare_for_export_runs_the_steps_in_order():
    model = _lstm_sequence_model(np.random.default_rng(7))
    prepared = prepare_for_export(model, batch_size=2, quantize="dynamic", quantize_min_elements=0)
    assert prepared.tensors[prepared.inputs[0]].shape == (2, -1, N_INPUT)
    assert _opcodes(prepared).count("FILL") == 2 and "SHAPE" not in _opcodes(prepared)  # static dims
    assert any(isinstance(v, QuantizedTensor) for v in prepared.constants.values())
    streaming = prepare_for_export(model, stateful=True)
    assert _opcodes(streaming) == ["UNIDIRECTIONAL_SEQUENCE_LSTM"]
