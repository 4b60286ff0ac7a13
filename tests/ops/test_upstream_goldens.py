"""jaxlstm.ops (and the NumPy reference) against the vectors published in the LiteRT kernel tests.

Data: `upstream_data.py` (each block cites its file and test). Tolerances are the upstream
ones: float 1e-5 (ArrayFloatNear default); hybrid vs the float goldens with the tolerance the
named upstream test uses for int8 weights. Hybrid weights are quantized per tensor,
symmetrically, like the tests' SignedSymmetricQuantizeAndPopulate (peephole and projection
matrices included; biases and layer-norm coefficients stay float).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numpy.testing import assert_allclose

from jaxlstm.ops import (
    LSTMOptions,
    LSTMWeights,
    RNNOptions,
    RNNWeights,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    lstm,
    rnn,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from jaxlstm.reference import np_lstm, np_rnn

from . import upstream_data as data
from .cases import quantize_weights

FLOAT_TOLERANCE = 1e-5  # ArrayFloatNear's default, used by every float golden test upstream


def _lstm_weights(tensors: dict, n_cell: int, n_output: int) -> LSTMWeights:
    """LSTMWeights from flat row-major upstream vectors."""
    shaped = {}
    for name, values in tensors.items():
        v = np.asarray(values, np.float32)
        if name.startswith(("input_to", "aux_input_to")):
            v = v.reshape(n_cell, -1)
        elif name.startswith("recurrent_to"):
            v = v.reshape(n_cell, n_output)
        elif name == "projection_weights":
            v = v.reshape(n_output, n_cell)
        shaped[name] = v
    return LSTMWeights(**shaped)


def _time_major(per_batch, n: int) -> np.ndarray:
    """[B][T * n] upstream rows -> [T, B, n]."""
    rows = np.asarray(per_batch, np.float32)
    return rows.reshape(rows.shape[0], -1, n).transpose(1, 0, 2)


_INPUT_GATE = (
    "input_to_input_weights",
    "recurrent_to_input_weights",
    "cell_to_input_weights",
    "input_gate_bias",
    "input_layer_norm_coefficients",
)


@dataclasses.dataclass(frozen=True)
class LSTMGolden:
    """One published LSTM test: weights, time-major input [T, B, I] and golden [T, B, O]."""

    name: str
    weights: LSTMWeights
    x: np.ndarray
    golden: np.ndarray
    hybrid_tolerance: float | None  # the upstream int8 (hybrid vs float golden) tolerance, if any

    def __str__(self) -> str:
        return self.name


_SMALL_X = _time_major([data.SMALL_INPUT], 2)
_PROJECTION = _lstm_weights(data.PEEPHOLE_PROJECTION, 20, 16)
_LN_PROJECTION = _lstm_weights(data.LAYER_NORM_PROJECTION, 4, 3)
_CIFG_PEEPHOLE = _lstm_weights(data.CIFG_PEEPHOLE, 4, 4)

# unidirectional_sequence_lstm_test.cc and lstm_test.cc (same vectors; see upstream_data.py).
LSTM_GOLDENS = [
    LSTMGolden(
        "NoCifgNoPeepholeNoProjection",
        _lstm_weights(data.NO_CIFG_NO_PEEPHOLE, 4, 4),
        _SMALL_X,
        _time_major([data.NO_CIFG_NO_PEEPHOLE_GOLDEN], 4),
        0.0157651,
    ),
    LSTMGolden(
        "CifgPeepholeNoProjection", _CIFG_PEEPHOLE, _SMALL_X, _time_major([data.CIFG_PEEPHOLE_GOLDEN], 4), 0.03573
    ),
    # Hybrid: lstm_test.cc NoCifg_Peephole_Projection_NoLayerNorm's INT8 tolerance 0.0015 (the
    # USEQ test allows 0.00467 and skips the asymmetric variant).
    LSTMGolden(
        "NoCifgPeepholeProjection",
        _PROJECTION,
        _time_major(data.PEEPHOLE_PROJECTION_INPUT, 5),
        _time_major(data.PEEPHOLE_PROJECTION_GOLDEN, 16),
        0.0015,
    ),
    LSTMGolden(
        "NoCifgPeepholeProjectionAndBias",
        _PROJECTION.replace(projection_bias=np.asarray(data.PROJECTION_BIAS, np.float32)),
        _time_major(data.PEEPHOLE_PROJECTION_INPUT, 5),
        _time_major(data.PEEPHOLE_PROJECTION_BIAS_GOLDEN, 16),
        None,
    ),
    LSTMGolden(
        "CifgPeepholeNoProjectionLayerNorm",
        _CIFG_PEEPHOLE.replace(**{k: np.asarray(v, np.float32) for k, v in data.CIFG_PEEPHOLE_LAYER_NORM.items()}),
        _SMALL_X,
        _time_major([data.CIFG_PEEPHOLE_LAYER_NORM_GOLDEN], 4),
        None,
    ),
    # lstm_test.cc, LSTM op; inputs and goldens are published [step][batch].
    LSTMGolden(
        "NoCifg_Peephole_Projection_LayerNorm",
        _LN_PROJECTION,
        np.asarray(data.LAYER_NORM_PROJECTION_INPUT, np.float32),
        np.asarray(data.LAYER_NORM_PROJECTION_GOLDEN, np.float32),
        0.00106,
    ),
    LSTMGolden(
        "Cifg_Peephole_Projection_LayerNorm",
        _LN_PROJECTION.replace(**dict.fromkeys(_INPUT_GATE)),
        np.asarray(data.LAYER_NORM_PROJECTION_INPUT, np.float32),
        np.asarray(data.CIFG_LAYER_NORM_PROJECTION_GOLDEN, np.float32),
        0.001,
    ),
]
HYBRID_LSTM_GOLDENS = [
    pytest.param(golden, asymmetric, id=f"{golden.name}-{'asym' if asymmetric else 'sym'}")
    for golden in LSTM_GOLDENS
    if golden.hybrid_tolerance is not None
    for asymmetric in (False, True)
]


USEQ_LSTM_GOLDENS = [pytest.param(g, True, id=f"{g}-time_major") for g in LSTM_GOLDENS] + [
    pytest.param(g, False, id=f"{g}-batch_major") for g in LSTM_GOLDENS[:3]
]


@pytest.mark.parametrize("golden, time_major", USEQ_LSTM_GOLDENS)
def test_unidirectional_sequence_lstm_golden(golden: LSTMGolden, time_major: bool):
    """Upstream runs these time-major (LstmBlackBoxTestBatchMajor has n_batch = 1, so its
    layouts coincide); the batch-major view is the same published numbers transposed (for the
    first three, the third having two batch rows)."""
    x = golden.x if time_major else golden.x.transpose(1, 0, 2)
    y, _ = unidirectional_sequence_lstm(x, golden.weights, options=LSTMOptions(time_major=time_major))
    expected = golden.golden if time_major else golden.golden.transpose(1, 0, 2)
    assert_allclose(y, expected, rtol=0, atol=FLOAT_TOLERANCE)


@pytest.mark.parametrize("golden", LSTM_GOLDENS, ids=str)
def test_lstm_op_golden_one_invoke_per_step(golden: LSTMGolden):
    """The LSTM op as lstm_test.cc drives it: one Invoke per step, the state carried."""
    state = None
    for t in range(golden.x.shape[0]):
        y, state = lstm(golden.x[t], golden.weights, state)
        assert_allclose(y, golden.golden[t], rtol=0, atol=FLOAT_TOLERANCE, err_msg=f"step {t}")


@pytest.mark.parametrize("golden", LSTM_GOLDENS, ids=str)
def test_reference_reproduces_lstm_golden(golden: LSTMGolden):
    """The NumPy oracle itself against the published numbers."""
    y, _, _ = np_lstm.unidirectional_sequence_lstm(golden.x, golden.weights, time_major=True)
    assert_allclose(y, golden.golden, rtol=0, atol=FLOAT_TOLERANCE)


@pytest.mark.parametrize("golden, asymmetric", HYBRID_LSTM_GOLDENS)
def test_unidirectional_sequence_lstm_hybrid_golden(golden: LSTMGolden, asymmetric: bool):
    hybrid = quantize_weights(golden.weights)
    options = LSTMOptions(time_major=True, asymmetric_quantize_inputs=asymmetric)
    y, _ = unidirectional_sequence_lstm(golden.x, hybrid, options=options)
    assert_allclose(y, golden.golden, rtol=0, atol=golden.hybrid_tolerance)
    y_ref, _, _ = np_lstm.unidirectional_sequence_lstm(
        golden.x, hybrid, time_major=True, asymmetric_quantize_inputs=asymmetric
    )
    assert_allclose(y, y_ref, rtol=0, atol=1e-5)  # and equal to the hybrid reference (float32 ulps)


# ----------------------------------------------------------------------------- bidirectional LSTM

_SMALL = _lstm_weights(data.NO_CIFG_NO_PEEPHOLE, 4, 4)
_BIDI_FW, _BIDI_BW = _time_major([data.NO_CIFG_NO_PEEPHOLE_GOLDEN], 4), _time_major([data.BIDI_BW_GOLDEN], 4)


def _aux_weights(tensors: dict) -> LSTMWeights:
    return _SMALL.replace(**{k: np.asarray(v, np.float32).reshape(4, -1) for k, v in tensors.items()})


BIDI_LSTM_GOLDENS = [
    # weights (fw = bw), aux_input, merge_outputs, n_batch, fw golden, bw golden
    pytest.param(_SMALL, None, False, 1, _BIDI_FW, _BIDI_BW, id="BlackBoxTestNoCifgNoPeepholeNoProjectionNoClipping"),
    pytest.param(_SMALL, None, True, 2, _BIDI_FW, _BIDI_BW, id="BlackBoxTestMergedOutput"),
    pytest.param(
        _aux_weights({k: np.zeros(8) for k in data.BIDI_AUX_WEIGHTS}),
        _SMALL_X,
        False,
        1,
        _BIDI_FW,
        _BIDI_BW,
        id="BlackBoxTestWithAuxInputZeroAuxWeight",
    ),
    pytest.param(
        _aux_weights(data.BIDI_AUX_WEIGHTS),
        _SMALL_X,
        False,
        1,
        _time_major([data.BIDI_AUX_FW_GOLDEN], 4),
        _time_major([data.BIDI_AUX_BW_GOLDEN], 4),
        id="BlackBoxTestWithAuxInput",
    ),
]


@pytest.mark.parametrize("quantized", [False, True], ids=["float", "hybrid"])
@pytest.mark.parametrize("weights, aux, merge, n_batch, fw_golden, bw_golden", BIDI_LSTM_GOLDENS)
def test_bidirectional_sequence_lstm_golden(weights, aux, merge, n_batch, fw_golden, bw_golden, quantized):
    """bidirectional_sequence_lstm_test.cc; MergedOutput feeds two identical batch rows.
    Tolerance: 1e-5 float, 1e-2 with quantize_weights (the upstream values)."""
    x = np.repeat(_SMALL_X, n_batch, axis=1)
    fw_golden, bw_golden = np.repeat(fw_golden, n_batch, axis=1), np.repeat(bw_golden, n_batch, axis=1)
    if quantized:
        weights = quantize_weights(weights)
    outputs, _ = bidirectional_sequence_lstm(x, weights, weights, aux_input=aux, merge_outputs=merge)
    expected = (np.concatenate([fw_golden, bw_golden], -1),) if merge else (fw_golden, bw_golden)
    for actual, golden in zip(outputs, expected, strict=True):
        assert_allclose(actual, golden, rtol=0, atol=1e-2 if quantized else FLOAT_TOLERANCE)


def _aux_size1_inputs(batch: int, time_major: bool):
    """TestAuxInputWithDifferentSize's generated inputs, in float32 as the test computes them."""
    b, t, i = np.meshgrid(np.arange(batch), np.arange(3), np.arange(2), indexing="ij")
    f32 = np.float32
    x = f32(0.5) * (b + 1).astype(f32) + f32(0.1) * t.astype(f32) + f32(0.02) * i.astype(f32)
    aux = f32(0.2) * (b[..., :1] + 1).astype(f32) + f32(0.1) * t[..., :1].astype(f32)
    if time_major:
        x, aux = x.transpose(1, 0, 2), aux.transpose(1, 0, 2)
    return x, aux


@pytest.mark.parametrize(
    "time_major, batch",
    [
        pytest.param(True, 1, id="BlackBoxTestWithAuxInputDifferentSize"),
        pytest.param(False, 2, id="BlackBoxTestWithAuxInputBatchMajorDifferentSize"),
    ],
)
def test_bidirectional_sequence_lstm_aux_of_different_size_golden(time_major, batch):
    weights = _aux_weights(data.BIDI_AUX_SIZE1_WEIGHTS)
    x, aux = _aux_size1_inputs(batch, time_major)
    (fw, bw), _ = bidirectional_sequence_lstm(
        x, weights, weights, aux_input=aux, options=LSTMOptions(time_major=time_major)
    )
    fw_golden = np.asarray(data.BIDI_AUX_SIZE1_FW_GOLDEN[:batch], np.float32).reshape(batch, 3, 4)
    bw_golden = np.asarray(data.BIDI_AUX_SIZE1_BW_GOLDEN[:batch], np.float32).reshape(batch, 3, 4)
    if time_major:
        fw_golden, bw_golden = fw_golden.transpose(1, 0, 2), bw_golden.transpose(1, 0, 2)
    assert_allclose(fw, fw_golden, rtol=0, atol=FLOAT_TOLERANCE)
    assert_allclose(bw, bw_golden, rtol=0, atol=FLOAT_TOLERANCE)


def test_reference_reproduces_bidirectional_lstm_goldens():
    (fw, bw), _, _ = np_lstm.bidirectional_sequence_lstm(
        _SMALL_X, *[_aux_weights(data.BIDI_AUX_WEIGHTS)] * 2, aux_input=_SMALL_X
    )
    assert_allclose(fw, _time_major([data.BIDI_AUX_FW_GOLDEN], 4), rtol=0, atol=FLOAT_TOLERANCE)
    assert_allclose(bw, _time_major([data.BIDI_AUX_BW_GOLDEN], 4), rtol=0, atol=FLOAT_TOLERANCE)
    x, aux = _aux_size1_inputs(2, False)
    (fw, _), _, _ = np_lstm.bidirectional_sequence_lstm(
        x, *[_aux_weights(data.BIDI_AUX_SIZE1_WEIGHTS)] * 2, aux_input=aux, time_major=False
    )
    assert_allclose(fw.reshape(2, -1), data.BIDI_AUX_SIZE1_FW_GOLDEN, rtol=0, atol=FLOAT_TOLERANCE)


# ----------------------------------------------------------------------------- RNN family

RNN_WEIGHTS = RNNWeights(
    input_weights=np.asarray(data.RNN_WEIGHTS, np.float32).reshape(16, 8),
    recurrent_weights=np.eye(16, dtype=np.float32) * np.float32(data.RNN_RECURRENT_DIAGONAL),
    bias=np.asarray(data.RNN_BIAS, np.float32),
)
RELU = RNNOptions("RELU")
# Both batch rows get the same 16-step input: [B = 2, T = 16, 8] and goldens [2, 16, 16].
RNN_X = np.repeat(np.asarray(data.RNN_INPUT, np.float32).reshape(1, 16, 8), 2, axis=0)
RNN_FW = np.repeat(np.asarray(data.RNN_GOLDEN, np.float32).reshape(1, 16, 16), 2, axis=0)
RNN_BW = np.repeat(np.asarray(data.RNN_BW_GOLDEN, np.float32).reshape(1, 16, 16), 2, axis=0)
WEIGHT_KINDS = [(False, False), (True, False), (True, True)]
WEIGHT_KIND_IDS = ["float", "hybrid", "hybrid_asym"]


def _rnn_weights(quantized: bool) -> RNNWeights:
    return quantize_weights(RNN_WEIGHTS) if quantized else RNN_WEIGHTS


@pytest.mark.parametrize("quantized, asymmetric", WEIGHT_KINDS, ids=WEIGHT_KIND_IDS)
def test_rnn_golden_one_invoke_per_step(quantized, asymmetric):
    """basic_rnn_test.cc RnnOpTest.BlackBoxTest / HybridRnnOpTest.BlackBoxTestInt8 (0.0104).
    Those tests run sizeof(rnn_input) / (input_size * num_batches) = 8 steps, so only the first
    8 of the 16 published steps."""
    weights, h = _rnn_weights(quantized), None
    for t in range(8):
        y, h = rnn(RNN_X[:, t], weights, h, options=RELU.replace(asymmetric_quantize_inputs=asymmetric))
        assert_allclose(y, RNN_FW[:, t], rtol=0, atol=0.0104 if quantized else FLOAT_TOLERANCE, err_msg=f"step {t}")


@pytest.mark.parametrize("time_major", [False, True], ids=["BlackBoxTest", "TimeMajorBlackBoxTest"])
@pytest.mark.parametrize("quantized, asymmetric", WEIGHT_KINDS, ids=WEIGHT_KIND_IDS)
def test_unidirectional_sequence_rnn_golden(quantized, asymmetric, time_major):
    """unidirectional_sequence_rnn_test.cc; hybrid (BlackBoxTest{Uint8,Int8}) tolerance 0.013."""
    x = RNN_X.transpose(1, 0, 2) if time_major else RNN_X
    options = RNNOptions("RELU", time_major, asymmetric)
    y, _ = unidirectional_sequence_rnn(x, _rnn_weights(quantized), options=options)
    expected = RNN_FW.transpose(1, 0, 2) if time_major else RNN_FW
    assert_allclose(y, expected, rtol=0, atol=0.013 if quantized else FLOAT_TOLERANCE)


@pytest.mark.parametrize("merge", [False, True], ids=["ClosedBoxTest", "ClosedBoxTestMergeOutputs"])
@pytest.mark.parametrize("quantized, asymmetric", WEIGHT_KINDS, ids=WEIGHT_KIND_IDS)
def test_bidirectional_sequence_rnn_golden(quantized, asymmetric, merge):
    """bidirectional_sequence_rnn_test.cc, batch-major; hybrid tolerance 1.42e-2."""
    weights = _rnn_weights(quantized)
    outputs, _ = bidirectional_sequence_rnn(
        RNN_X, weights, weights, options=RNNOptions("RELU", False, asymmetric), merge_outputs=merge
    )
    expected = (np.concatenate([RNN_FW, RNN_BW], -1),) if merge else (RNN_FW, RNN_BW)
    for actual, golden in zip(outputs, expected, strict=True):
        assert_allclose(actual, golden, rtol=0, atol=1.42e-2 if quantized else FLOAT_TOLERANCE)


@pytest.mark.parametrize("quantized, asymmetric", WEIGHT_KINDS, ids=WEIGHT_KIND_IDS)
def test_bidirectional_sequence_rnn_time_major_golden(quantized, asymmetric):
    """ClosedBoxTestTimeMajor (fw output checked; hybrid tolerance 3.57e-1, wide because the
    hybrid time-major kernel runs the sequence max_time times) and, float only,
    ClosedBoxTestTimeMajorMergeOutputs."""
    x = RNN_X.transpose(1, 0, 2)
    weights = _rnn_weights(quantized)
    options = RNNOptions("RELU", True, asymmetric)
    (fw, _), _ = bidirectional_sequence_rnn(x, weights, weights, options=options)
    assert_allclose(fw, RNN_FW.transpose(1, 0, 2), rtol=0, atol=3.57e-1 if quantized else FLOAT_TOLERANCE)
    if not quantized:
        (merged,), _ = bidirectional_sequence_rnn(x, weights, weights, options=options, merge_outputs=True)
        expected = np.concatenate([RNN_FW, RNN_BW], -1).transpose(1, 0, 2)
        assert_allclose(merged, expected, rtol=0, atol=FLOAT_TOLERANCE)


def test_bidirectional_sequence_rnn_reversed_input_golden():
    """ClosedBoxTestReverseInputs: reversing the sequence swaps (and reverses) fw and bw."""
    (fw, bw), _ = bidirectional_sequence_rnn(RNN_X[:, ::-1], RNN_WEIGHTS, RNN_WEIGHTS, options=RELU)
    assert_allclose(fw, RNN_BW[:, ::-1], rtol=0, atol=FLOAT_TOLERANCE)
    assert_allclose(bw, RNN_FW[:, ::-1], rtol=0, atol=FLOAT_TOLERANCE)


def test_reference_reproduces_rnn_goldens():
    (fw, bw), _ = np_rnn.bidirectional_sequence_rnn(RNN_X, RNN_WEIGHTS, RNN_WEIGHTS, activation="RELU")
    assert_allclose(fw, RNN_FW, rtol=0, atol=FLOAT_TOLERANCE)
    assert_allclose(bw, RNN_BW, rtol=0, atol=FLOAT_TOLERANCE)
