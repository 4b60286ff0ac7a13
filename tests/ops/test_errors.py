"""Bad user input gives ValueError / TypeError naming the tensor, with expected and actual shapes."""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxlstm.ops import (
    GATES,
    LSTMOptions,
    LSTMState,
    LSTMWeights,
    RNNOptions,
    basic_lstm_cell,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    lstm,
    lstm_cell,
    quantize_symmetric,
    rnn,
    rnn_cell,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from tests.cases import LSTMCase

from .cases import lstm_weights, normal, rnn_weights

RNG = np.random.default_rng(40)
W = lstm_weights(LSTMCase(peephole=True), RNG)  # n_input = 3, n_cell = n_output = 4
CIFG = lstm_weights(LSTMCase(cifg=True), RNG)
LN = lstm_weights(LSTMCase(layer_norm=True), RNG)
PROJ = lstm_weights(LSTMCase(projection=True, n_output=3), RNG)
X = normal(RNG, 2, 5, 3)  # [B, T, n_input]
RW = rnn_weights(3, 4, RNG)
Z = np.zeros


def _useq(weights=W, x=X, state=None, **options):
    return lambda: unidirectional_sequence_lstm(x, weights, state, options=LSTMOptions(**options))


# (id, call, exception, message regex)
LSTM_ERRORS = [
    (
        "weight_shape",
        _useq(W.replace(input_to_forget_weights=Z((8, 3), np.float32))),
        ValueError,
        r"input_to_forget_weights has shape \(8, 3\), expected \(n_cell=4, n_input=3\)",
    ),
    (
        "recurrent_shape",
        _useq(W.replace(recurrent_to_cell_weights=Z((4, 5), np.float32))),
        ValueError,
        r"recurrent_to_cell_weights has shape \(4, 5\), expected \(n_cell=4, n_output=4\)",
    ),
    (
        "input_size",
        _useq(x=normal(RNG, 2, 5, 4)),
        ValueError,
        r"input has n_input=4 features \(shape \(2, 5, 4\)\) but input_to_forget_weights is \(4, 3\): "
        r"the weights expect n_input=3",
    ),
    (
        "peephole_shape",
        _useq(W.replace(cell_to_forget_weights=Z(5, np.float32))),
        ValueError,
        r"cell_to_forget_weights has shape \(5,\), expected \(n_cell=4,\)",
    ),
    (
        "bias_shape",
        _useq(W.replace(output_gate_bias=Z(3, np.float32))),
        ValueError,
        r"output_gate_bias has shape \(3,\), expected \(n_cell=4,\)",
    ),
    (
        "layer_norm_shape",
        _useq(LN.replace(cell_layer_norm_coefficients=Z(2, np.float32))),
        ValueError,
        r"cell_layer_norm_coefficients has shape \(2,\), expected \(n_cell=4,\)",
    ),
    (
        "projection_shape",
        _useq(PROJ.replace(projection_weights=Z((3, 5), np.float32))),
        ValueError,
        r"projection_weights has shape \(3, 5\), expected \(n_output=3, n_cell=4\)",
    ),
    (
        "projection_bias_shape",
        _useq(PROJ.replace(projection_bias=Z(4, np.float32))),
        ValueError,
        r"projection_bias has shape \(4,\), expected \(n_output=3,\)",
    ),
    (
        "output_state_shape",
        _useq(state=LSTMState(Z((3, 4), np.float32), Z((2, 4), np.float32))),
        ValueError,
        r"output_state has shape \(3, 4\), expected \(n_batch=2, n_output=4\)",
    ),
    (
        "cell_state_shape",
        _useq(state=LSTMState(Z((2, 4), np.float32), Z((2, 5), np.float32))),
        ValueError,
        r"cell_state has shape \(2, 5\), expected \(n_batch=2, n_cell=4\)",
    ),
    ("negative_cell_clip", _useq(cell_clip=-1.0), ValueError, r"cell_clip=-1.0 is invalid; it must be >= 0"),
    ("negative_proj_clip", _useq(proj_clip=-0.5), ValueError, r"proj_clip=-0.5 is invalid"),
    ("nan_cell_clip", _useq(cell_clip=float("nan")), ValueError, r"cell_clip=nan is invalid"),
    (
        "missing_forget_bias",
        _useq(W.replace(forget_gate_bias=None)),
        ValueError,
        r"required weights \['forget_gate_bias'\] are None",
    ),
    (
        "missing_recurrent",
        _useq(W.replace(recurrent_to_output_weights=None)),
        ValueError,
        r"required weights \['recurrent_to_output_weights'\] are None",
    ),
    (
        "partial_peephole",
        _useq(W.replace(cell_to_output_weights=None)),
        ValueError,
        r"peephole weights must be given for every gate",
    ),
    (
        "peephole_input_only",
        _useq(W.replace(cell_to_forget_weights=None, cell_to_output_weights=None)),
        ValueError,
        r"peephole weights must be given for every gate",
    ),
    (
        "projection_bias_without_weights",
        _useq(W.replace(projection_bias=Z(4, np.float32))),
        ValueError,
        r"projection_bias is given without projection_weights",
    ),
    (
        "cifg_with_input_gate_bias",
        _useq(CIFG.replace(input_gate_bias=Z(4, np.float32))),
        ValueError,
        r"input_gate_bias must be None under CIFG",
    ),
    (
        "input_gate_without_bias",
        _useq(W.replace(input_gate_bias=None)),
        ValueError,
        r"input_gate_bias must be None under CIFG .* and given otherwise",
    ),
    (
        "half_cifg",
        _useq(W.replace(recurrent_to_input_weights=None)),
        ValueError,
        r"input_to_input_weights and recurrent_to_input_weights must both be given",
    ),
    (
        "partial_layer_norm",
        _useq(LN.replace(output_layer_norm_coefficients=None)),
        ValueError,
        r"layer norm needs forget, cell and output layer_norm_coefficients",
    ),
    (
        "cifg_with_input_layer_norm",
        _useq(CIFG.replace(**{f"{g}_layer_norm_coefficients": Z(4, np.float32) for g in GATES})),
        ValueError,
        r"input_layer_norm_coefficients exactly when the input gate exists",
    ),
    (
        "n_output_without_projection",
        _useq(PROJ.replace(projection_weights=None)),
        ValueError,
        r"without projection_weights, n_output .* must equal n_cell",
    ),
    (
        "activation_none",
        _useq(fused_activation_function="NONE"),
        ValueError,
        r"fused_activation_function='NONE' is not supported",
    ),
    (
        "activation_unknown",
        _useq(fused_activation_function="GELU"),
        ValueError,
        r"fused_activation_function='GELU' is not supported",
    ),
    ("input_rank", _useq(x=X[0]), ValueError, r"input has shape \(5, 3\) \(rank 2\), expected \[B, T, n_input\]"),
    ("input_dtype", _useq(x=X.astype(np.int32)), TypeError, r"input has dtype int32, expected a float dtype"),
    (
        "mixed_int8_and_float",
        _useq(W.replace(input_to_cell_weights=quantize_symmetric(W.input_to_cell_weights))),
        TypeError,
        r"input_to_\w+_weights is (int8|float) but input_to_forget_weights is (int8|float)",
    ),
    (
        "aux_weights_on_unidirectional",
        _useq(lstm_weights(LSTMCase(), RNG, n_aux=2)),
        ValueError,
        r"aux_input_to_\*_weights belong to the bidirectional op",
    ),
    (
        "lstm_step_rank",
        lambda: lstm(X, W),
        ValueError,
        r"lstm: input has shape \(2, 5, 3\) \(rank 3\), expected \[n_batch, n_input\]",
    ),
    (
        "lstm_step_none",
        lambda: lstm(X[:, 0], W, options=LSTMOptions(fused_activation_function="NONE")),
        ValueError,
        r"lstm: fused_activation_function='NONE' is not supported",
    ),
    (
        "basic_weights_shape",
        lambda: basic_lstm_cell(
            X[:, 0], Z((2, 4), np.float32), Z((16, 6), np.float32), Z(16, np.float32), Z((2, 4), np.float32)
        ),
        ValueError,
        r"weights has shape \(16, 6\), expected \(4\*n_output=16, n_input\+n_output=7\)",
    ),
    (
        "basic_state_shape",
        lambda: basic_lstm_cell(
            X[:, 0], Z((2, 4), np.float32), Z((16, 7), np.float32), Z(16, np.float32), Z((2, 3), np.float32)
        ),
        ValueError,
        r"prev_state has shape \(2, 3\), expected \(n_batch=2, n_output=4\)",
    ),
    (
        "cell_state_shape",
        lambda: lstm_cell(LSTMState(Z((2, 4), np.float32), Z((2, 5), np.float32)), X[:, 0], W),
        ValueError,
        r"lstm_cell: cell_state has shape \(2, 5\), expected \(n_batch=2, n_cell=4\)",
    ),
    (
        "cell_aux_without_aux_weights",
        lambda: lstm_cell(LSTMState(Z((2, 4), np.float32), Z((2, 4), np.float32)), X[:, 0], W, aux_input=X[:, 0]),
        ValueError,
        r"lstm_cell: aux_input and the aux_input_to_\*_weights go together",
    ),
    (
        "cell_input_size",
        lambda: lstm_cell(LSTMState(Z((2, 4), np.float32), Z((2, 4), np.float32)), normal(RNG, 2, 5), W),
        ValueError,
        r"lstm_cell: input has n_input=5 features \(shape \(2, 5\)\) but input_to_forget_weights is \(4, 3\)",
    ),
]

TM = np.swapaxes(X, 0, 1)  # [T, B, n_input]: the bidirectional LSTM's default layout
CROSS = lstm_weights(LSTMCase(), RNG, n_aux=2)
BIDI_LSTM_ERRORS = [
    (
        "layer_norm",
        lambda: bidirectional_sequence_lstm(TM, LN, LN),
        ValueError,
        r"fw_weights: the bidirectional op has no layer norm inputs",
    ),
    (
        "aux_weights_one_side",
        lambda: bidirectional_sequence_lstm(TM, CROSS, W, aux_input=normal(RNG, 5, 2, 2)),
        ValueError,
        r"aux weights must be given for both directions or for neither",
    ),
    (
        "aux_weights_without_aux_input",
        lambda: bidirectional_sequence_lstm(TM, CROSS, CROSS),
        ValueError,
        r"aux_input_to_\*_weights are given but aux_input is None",
    ),
    (
        "aux_weight_shape",
        lambda: bidirectional_sequence_lstm(TM, CROSS, CROSS, aux_input=normal(RNG, 5, 2, 3)),
        ValueError,
        r"fw_aux_input_to_\w+_weights has shape \(4, 2\), expected \(n_cell=4, n_aux=3\)",
    ),
    (
        "bw_input_shape",
        lambda: bidirectional_sequence_lstm(TM, W, W, aux_input=normal(RNG, 5, 2, 2)),
        ValueError,
        r"aux_input has shape \(5, 2, 2\), expected \(5, 2, 3\)",
    ),
    (
        "aux_input_rank",
        lambda: bidirectional_sequence_lstm(TM, CROSS, CROSS, aux_input=normal(RNG, 5, 2)),
        ValueError,
        r"aux_input has shape \(5, 2\) \(rank 2\)",
    ),
    (
        "bw_sizes",
        lambda: bidirectional_sequence_lstm(TM, W, lstm_weights(LSTMCase(n_cell=5, n_output=5), RNG)),
        ValueError,
        r"bw_weights have \(n_cell, n_output\) = \(5, 5\), but TFLite requires the forward sizes \(4, 4\)",
    ),
    (
        "bw_state_shape",
        lambda: bidirectional_sequence_lstm(TM, W, W, bw_state=LSTMState(Z((2, 4), np.float32), Z((1, 4), np.float32))),
        ValueError,
        r"bw_cell_state has shape \(1, 4\), expected \(n_batch=2, n_cell=4\)",
    ),
    (
        "bw_input_size",
        lambda: bidirectional_sequence_lstm(TM, W, lstm_weights(LSTMCase(n_input=2), RNG)),
        ValueError,
        r"input has n_input=3 features \(shape \(5, 2, 3\)\) but bw_input_to_forget_weights is \(4, 2\): "
        r"the weights expect n_input=2",
    ),
]

RNN_ERRORS = [
    (
        "rnn_input_size",
        lambda: rnn(X[:, 0], RW.replace(input_weights=Z((4, 2), np.float32))),
        ValueError,
        r"input has n_input=3 features \(shape \(2, 3\)\) but input_weights is \(4, 2\): "
        r"the weights expect n_input=2",
    ),
    (
        "input_weights_rows",
        lambda: rnn(X[:, 0], RW.replace(input_weights=Z((5, 3), np.float32))),
        ValueError,
        r"recurrent_weights has shape \(4, 4\), expected \(n_units=5, n_units=5\)",
    ),
    (
        "recurrent_not_square",
        lambda: rnn(X[:, 0], RW.replace(recurrent_weights=Z((4, 3), np.float32))),
        ValueError,
        r"recurrent_weights has shape \(4, 3\), expected \(n_units=4, n_units=4\)",
    ),
    (
        "bias_shape",
        lambda: rnn(X[:, 0], RW.replace(bias=Z(5, np.float32))),
        ValueError,
        r"bias has shape \(5,\), expected \(n_units=4,\)",
    ),
    (
        "state_shape",
        lambda: rnn(X[:, 0], RW, Z((2, 5), np.float32)),
        ValueError,
        r"state has shape \(2, 5\), expected \(n_batch=2, n_units=4\)",
    ),
    ("missing_bias", lambda: rnn(X[:, 0], RW.replace(bias=None)), ValueError, r"required weights \['bias'\] are None"),
    (
        "mixed_int8_and_float",
        lambda: rnn(X[:, 0], RW.replace(input_weights=quantize_symmetric(RW.input_weights))),
        TypeError,
        r"input_weights and recurrent_weights must both be int8 or both float",
    ),
    (
        "activation_unknown",
        lambda: rnn(X[:, 0], RW, options=RNNOptions("GELU")),
        ValueError,
        r"fused_activation_function='GELU' is not supported",
    ),
    (
        "input_rank",
        lambda: unidirectional_sequence_rnn(X[:, 0], RW),
        ValueError,
        r"unidirectional_sequence_rnn: input has shape \(2, 3\) \(rank 2\)",
    ),
    (
        "input_dtype",
        lambda: unidirectional_sequence_rnn(X.astype(np.int64), RW),
        TypeError,
        r"input has dtype int(32|64), expected a float dtype",
    ),
    (
        "aux_weights_on_unidirectional",
        lambda: unidirectional_sequence_rnn(X, rnn_weights(3, 4, RNG, 2)),
        ValueError,
        r"aux_input_weights belong to the bidirectional op",
    ),
    (
        "bidi_aux_one_side",
        lambda: bidirectional_sequence_rnn(X, rnn_weights(3, 4, RNG, 2), RW, aux_input=normal(RNG, 2, 5, 2)),
        ValueError,
        r"aux_input_weights must be given for both directions or for neither",
    ),
    (
        "bidi_aux_weight_shape",
        lambda: bidirectional_sequence_rnn(X, *[rnn_weights(3, 4, RNG, 2)] * 2, aux_input=normal(RNG, 2, 5, 3)),
        ValueError,
        r"fw_aux_input_weights has shape \(4, 2\), expected \(n_units=4, n_aux=3\)",
    ),
    (
        "bidi_bw_state",
        lambda: bidirectional_sequence_rnn(X, RW, RW, bw_state=Z((2, 3), np.float32)),
        ValueError,
        r"bw_state has shape \(2, 3\), expected \(n_batch=2, n_units=4\)",
    ),
    (
        "rnn_cell_state_shape",
        lambda: rnn_cell(Z((2, 5), np.float32), X[:, 0], RW),
        ValueError,
        r"rnn_cell: state has shape \(2, 5\), expected \(n_batch=2, n_units=4\)",
    ),
    (
        "rnn_cell_aux_without_aux_weights",
        lambda: rnn_cell(Z((2, 4), np.float32), X[:, 0], RW, aux_input=X[:, 0]),
        ValueError,
        r"rnn_cell: aux_input and aux_input_weights go together",
    ),
]


def _params(table):
    return [pytest.param(call, error, message, id=name) for name, call, error, message in table]


@pytest.mark.parametrize("call, error, message", _params(LSTM_ERRORS + BIDI_LSTM_ERRORS + RNN_ERRORS))
def test_bad_input_is_rejected_with_a_clear_message(call, error, message):
    with pytest.raises(error, match=message) as info:
        call()
    op = re.match(r"^\w[\w ()]*:", str(info.value))
    assert op, f"the message should start with the op's name: {info.value}"


def test_missing_required_field_at_construction():
    with pytest.raises(TypeError, match="input_to_forget_weights"):
        LSTMWeights(**{k: v for k, v in vars(W).items() if k != "input_to_forget_weights"})
