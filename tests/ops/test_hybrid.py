"""Hybrid path (int8 weights, float activations) against the NumPy hybrid reference; LSTM cases
also against the float reference within the loosest upstream hybrid-vs-float tolerance. (The RNN
family's hybrid-vs-float tolerances are checked on the published vectors, test_upstream_goldens.py:
on random data their RELU outputs grow past the range those tolerances were set for.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numpy.testing import assert_allclose

from jaxlstm.ops import (
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    lstm,
    rnn,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from jaxlstm.reference import np_lstm, np_rnn
from tests.cases import LSTMCase, RNNCase

from .cases import (
    FLOAT_ATOL,
    HYBRID_ATOL,
    LSTM_HYBRID_VS_FLOAT_ATOL,
    lstm_state,
    lstm_weights,
    normal,
    quantize_weights,
    rnn_weights,
    structural_lstm_cases,
)

# Half of the 16 structural combinations (those of odd feature parity: each feature is on in
# four of them), alternating symmetric batch-major and asymmetric time-major; hybrid compiles
# are slow.
USEQ_CASES = [
    dataclasses.replace(case, time_major=i % 2 == 0, asymmetric=i % 2 == 0)
    for i, case in enumerate(c for c in structural_lstm_cases() if c.time_major)
] + [
    LSTMCase(diagonal=True, peephole=True),  # diagonal recurrent weights stay float
    LSTMCase(diagonal=True, cifg=True, asymmetric=True, time_major=True),
    LSTMCase(
        batch=3,
        time=7,
        n_input=6,
        n_cell=6,
        n_output=3,
        peephole=True,
        projection=True,
        projection_bias=True,
        layer_norm=True,
        asymmetric=True,
    ),
]
BIDI_LSTM_CASES = [
    LSTMCase(time_major=True, aux="cross", n_aux=2, peephole=True, merge_outputs=True),
    LSTMCase(aux="bw_input", projection=True, n_output=3, asymmetric=True),
]
RNN_CASES = [RNNCase(), RNNCase(asymmetric=True, time_major=True), RNNCase(activation="TANH", asymmetric=True)]
BIDI_RNN_CASES = [
    RNNCase(),
    RNNCase(aux="cross", n_aux=2, asymmetric=True),  # quirk (a) in EvalHybrid batch-major
    RNNCase(aux="cross", merge_outputs=True),
    RNNCase(time_major=True, activation="TANH"),  # quirk (c): the sequence runs T times
    RNNCase(time_major=True, aux="cross", n_aux=2, asymmetric=True, merge_outputs=True),
    RNNCase(time_major=True, aux="bw_input"),
]


def _assert_all_close(actual, expected, atol, what=""):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_allclose(a, e, rtol=0, atol=atol, err_msg=f"{what} result {i}")


@pytest.mark.parametrize("case", USEQ_CASES, ids=str)
def test_unidirectional_sequence_lstm_hybrid(case: LSTMCase):
    rng = np.random.default_rng(20)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    hybrid = quantize_weights(weights)
    x = normal(rng, *case.input_shape, scale=1.0)

    y, (h, c) = unidirectional_sequence_lstm(x, hybrid, state, options=case.options)
    kwargs = dict(time_major=case.time_major, **case.reference_options)
    _assert_all_close(
        (y, h, c), np_lstm.unidirectional_sequence_lstm(x, hybrid, *state, **kwargs), HYBRID_ATOL, "hybrid reference"
    )
    _assert_all_close(
        (y, h, c),
        np_lstm.unidirectional_sequence_lstm(x, weights, *state, **kwargs),
        LSTM_HYBRID_VS_FLOAT_ATOL,
        "float reference",
    )


def test_lstm_step_hybrid():
    case = LSTMCase(cifg=True, peephole=True, projection=True, n_output=3, layer_norm=True, asymmetric=True)
    rng = np.random.default_rng(21)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    hybrid = quantize_weights(weights)
    x = normal(rng, case.time, case.batch, case.n_input, scale=1.0)
    h_ref, c_ref = state
    for t in range(case.time):
        y, state = lstm(x[t], hybrid, state, options=case.options)
        y_ref, h_ref, c_ref = np_lstm.lstm(x[t], hybrid, h_ref, c_ref, **case.reference_options)
        assert_allclose(y, y_ref, rtol=0, atol=HYBRID_ATOL, err_msg=f"step {t}")


@pytest.mark.parametrize("case", BIDI_LSTM_CASES, ids=str)
def test_bidirectional_sequence_lstm_hybrid(case: LSTMCase):
    rng = np.random.default_rng(22)
    n_aux = case.n_aux if case.aux == "cross" else 0
    fw, bw = lstm_weights(case, rng, n_aux), lstm_weights(case, rng, n_aux)
    fw_state, bw_state = lstm_state(case, rng), lstm_state(case, rng)
    x = normal(rng, *case.input_shape, scale=1.0)
    aux_shape = (*case.input_shape[:2], case.n_aux) if case.aux == "cross" else case.input_shape
    aux = normal(rng, *aux_shape, scale=1.0)

    outputs, (fw_final, bw_final) = bidirectional_sequence_lstm(
        x,
        quantize_weights(fw),
        quantize_weights(bw),
        fw_state,
        bw_state,
        aux,
        options=case.options,
        merge_outputs=case.merge_outputs,
    )
    actual = (*outputs, *fw_final, *bw_final)

    def reference(*weights):
        ref_outputs, ref_fw, ref_bw = np_lstm.bidirectional_sequence_lstm(
            x,
            *weights,
            fw_state,
            bw_state,
            aux,
            time_major=case.time_major,
            merge_outputs=case.merge_outputs,
            **case.reference_options,
        )
        return (*ref_outputs, *ref_fw, *ref_bw)

    _assert_all_close(actual, reference(quantize_weights(fw), quantize_weights(bw)), HYBRID_ATOL)
    _assert_all_close(actual, reference(fw, bw), LSTM_HYBRID_VS_FLOAT_ATOL, "float reference")


@pytest.mark.parametrize("case", RNN_CASES, ids=str)
def test_rnn_and_unidirectional_sequence_rnn_hybrid(case: RNNCase):
    rng = np.random.default_rng(23)
    weights = rnn_weights(case.n_input, case.n_units, rng)
    hybrid = quantize_weights(weights)
    h0 = normal(rng, case.batch, case.n_units)
    x = normal(rng, *case.input_shape, scale=1.0)

    y, h = unidirectional_sequence_rnn(x, hybrid, h0, options=case.options)
    _assert_all_close(
        (y, h),
        np_rnn.unidirectional_sequence_rnn(x, hybrid, h0, time_major=case.time_major, **case.reference_options),
        HYBRID_ATOL,
    )

    y_step, _ = rnn(x[0] if case.time_major else x[:, 0], hybrid, h0, options=case.options)
    y_ref, _ = np_rnn.rnn(x[0] if case.time_major else x[:, 0], hybrid, h0, **case.reference_options)
    assert_allclose(y_step, y_ref, rtol=0, atol=HYBRID_ATOL)


@pytest.mark.parametrize("case", BIDI_RNN_CASES, ids=str)
def test_bidirectional_sequence_rnn_hybrid(case: RNNCase):
    """Against the hybrid reference, quirks included: time-major hybrid repeats the sequence
    (quirk c), batch-major hybrid strides aux by the input size (quirk a)."""
    rng = np.random.default_rng(24)
    n_aux = case.n_aux if case.aux == "cross" else 0
    fw = rnn_weights(case.n_input, case.n_units, rng, n_aux)
    bw = rnn_weights(case.n_input, case.n_units + 1, rng, n_aux)
    fw_h, bw_h = normal(rng, case.batch, case.n_units), normal(rng, case.batch, case.n_units + 1)
    x = normal(rng, *case.input_shape, scale=1.0)
    aux_shape = (*case.input_shape[:2], case.n_aux) if case.aux == "cross" else case.input_shape
    aux = None if case.aux == "none" else normal(rng, *aux_shape, scale=1.0)
    kwargs = dict(time_major=case.time_major, merge_outputs=case.merge_outputs)

    outputs, finals = bidirectional_sequence_rnn(
        x,
        quantize_weights(fw),
        quantize_weights(bw),
        fw_h,
        bw_h,
        aux,
        options=case.options,
        merge_outputs=case.merge_outputs,
    )
    ref_outputs, ref_finals = np_rnn.bidirectional_sequence_rnn(
        x, quantize_weights(fw), quantize_weights(bw), fw_h, bw_h, aux, **kwargs, **case.reference_options
    )
    _assert_all_close((*outputs, *finals), (*ref_outputs, *ref_finals), HYBRID_ATOL, "hybrid reference")


TIE_ROWS = {
    # Rows spanning exactly [-a, a]: the asymmetric zero point is a .5 tie, resolved in double.
    "zero_point_tie_range1": [1.0, -1.0, 0.3, 0.7, -0.2],
    "zero_point_tie_range0.25": [0.25, -0.25, 0.1, 0.0, 0.2],
    "zero_point_tie_range2": [2.0, -2.0, 1.0, 0.5, 0.25],
    # scale 0.5, zero point -128, 63.75 / 0.5 = 127.5 exactly: round(127.5) - 128 = 0, whereas
    # the portable kernel's round(-128 + 127.5) would give -1.
    "value_tie_after_zero_point": [127.5, 63.75, 0.0, 10.0, 1.0],
    "value_tie_with_rounded_product": [0.8, 0.1, 0.2, 0.4, 0.5],
}


@pytest.mark.parametrize("row", TIE_ROWS.values(), ids=TIE_ROWS.keys())
def test_asymmetric_quantization_ties_round_like_litert(row):
    """Exact ties of the asymmetric input quantization, resolved as LiteRT does (checked against
    the LiteRT interpreter when these cases were written; see np_common.quantize_row)."""
    case = RNNCase(asymmetric=True, n_input=5, activation="NONE")
    hybrid = quantize_weights(rnn_weights(case.n_input, case.n_units, np.random.default_rng(26)))
    x = np.array([row, row[::-1]], np.float32)
    h0 = np.zeros((case.batch, case.n_units), np.float32)
    y, _ = rnn(x, hybrid, h0, options=case.options)
    y_ref, _ = np_rnn.rnn(x, hybrid, h0, **case.reference_options)
    # NONE activation: outputs reach ~100, so 1e-5 relative (float32 ulps) rather than absolute.
    assert_allclose(y, y_ref, rtol=0, atol=HYBRID_ATOL * max(1.0, float(np.abs(y_ref).max())))


def test_quantized_peephole_is_dequantized():
    """The peephole vectors are int8 in a hybrid model and enter the gates as float(q) * scale."""
    case = LSTMCase(peephole=True, cifg=True)
    rng = np.random.default_rng(25)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    hybrid = quantize_weights(weights)
    float_peephole = hybrid.replace(
        **{name: getattr(hybrid, name).dequantize() for name in ("cell_to_forget_weights", "cell_to_output_weights")}
    )
    x = normal(rng, *case.input_shape)
    a, _ = unidirectional_sequence_lstm(x, hybrid, state, options=case.options)
    with pytest.raises(TypeError, match="cell_to_forget_weights is float"):
        unidirectional_sequence_lstm(x, float_peephole, state, options=case.options)
    y_ref, _, _ = np_lstm.unidirectional_sequence_lstm(x, hybrid, *state)
    assert_allclose(a, y_ref, rtol=0, atol=FLOAT_ATOL)
