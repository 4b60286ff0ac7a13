"""A catalogue of bad op inputs: each raises an error naming the tensor and the fix, or has a
documented result that matches the LiteRT interpreter."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from jaxlstm import export_tflite, load_tflite
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.model.graph import NO_TENSOR
from jaxlstm.ops import (
    LSTMOptions,
    LSTMState,
    LSTMWeights,
    RNNOptions,
    RNNWeights,
    basic_lstm_cell,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    lstm,
    quantize_symmetric,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from jaxlstm.parity.litert import run_litert
from tests.tflite.models import edit_flatbuffer

ATOL = 1e-5  # float32 kernels: LiteRT's GEMMs sum in another order (its own tests use 1e-5)
N_INPUT, N_CELL = 3, 4


def _lstm_weights(n_input: int = N_INPUT, n_cell: int = N_CELL, seed: int = 0) -> LSTMWeights:
    rng = np.random.default_rng(seed)
    return lstm_weights_from_fused(
        rng.normal(size=(n_input, 4 * n_cell)).astype(np.float32),
        rng.normal(size=(n_cell, 4 * n_cell)).astype(np.float32),
        rng.normal(size=4 * n_cell).astype(np.float32),
    )


def _rnn_weights(n_input: int = N_INPUT, units: int = N_CELL, seed: int = 0) -> RNNWeights:
    rng = np.random.default_rng(seed)
    return RNNWeights(
        rng.normal(size=(units, n_input)).astype(np.float32),
        rng.normal(size=(units, units)).astype(np.float32),
        rng.normal(size=units).astype(np.float32),
    )


X = np.ones((2, 5, N_INPUT), np.float32)
W = _lstm_weights()
R = _rnn_weights()
f32 = np.float32


@dataclasses.dataclass(frozen=True)
class Bad:
    """One bad call: the error type and the words the message must contain (the tensor
    or option it names, and what it expects)."""

    name: str
    call: Callable[[], object]
    error: type
    words: tuple[str, ...]

    def __str__(self) -> str:
        return self.name


U_LSTM, U_RNN = unidirectional_sequence_lstm, unidirectional_sequence_rnn

CATALOGUE = [
    # -- ranks and shapes
    Bad("lstm_input_rank_2", lambda: U_LSTM(X[0], W), ValueError, ("input", "rank 2", "[B, T, n_input]")),
    Bad("lstm_cell_input_rank_3", lambda: lstm(X, W), ValueError, ("input", "rank 3", "[n_batch, n_input]")),
    Bad(
        "lstm_n_input_mismatch",
        lambda: U_LSTM(np.ones((2, 5, 7), f32), W),
        ValueError,
        ("input has n_input=7 features", "(2, 5, 7)", "input_to_forget_weights is (4, 3)", "expect n_input=3"),
    ),
    Bad(
        "lstm_weight_shape",
        lambda: U_LSTM(X, W.replace(input_to_forget_weights=np.ones((5, 3), f32))),
        ValueError,
        ("input_to_forget_weights", "(5, 3)", "n_cell=4, n_input=3"),
    ),
    Bad(
        "lstm_recurrent_shape",
        lambda: U_LSTM(X, W.replace(recurrent_to_cell_weights=np.ones((4, 3), f32))),
        ValueError,
        ("recurrent_to_cell_weights", "(4, 3)", "n_cell=4, n_output=4"),
    ),
    Bad(
        "lstm_bias_shape",
        lambda: U_LSTM(X, W.replace(output_gate_bias=np.ones(5, f32))),
        ValueError,
        ("output_gate_bias", "(5,)", "n_cell=4"),
    ),
    Bad(
        "lstm_state_batch",
        lambda: U_LSTM(X, W, LSTMState(np.zeros((2, 4), f32), np.zeros((3, 4), f32))),
        ValueError,
        ("cell_state", "(3, 4)", "n_batch=2, n_cell=4"),
    ),
    Bad(
        "lstm_n_output_without_projection",
        lambda: U_LSTM(
            X,
            W.replace(
                **{f"recurrent_to_{g}_weights": np.ones((4, 2), f32) for g in ("input", "forget", "cell", "output")}
            ),
        ),
        ValueError,
        ("without projection_weights", "n_output", "must equal n_cell"),
    ),
    Bad(
        "basic_lstm_packed_weights",
        lambda: basic_lstm_cell(
            X[:, 0], np.zeros((2, 4), f32), np.ones((16, 6), f32), np.ones(16, f32), np.zeros((2, 4), f32)
        ),
        ValueError,
        ("weights", "(16, 6)", "n_input+n_output=7"),
    ),
    Bad("rnn_input_rank_2", lambda: U_RNN(X[0], R), ValueError, ("input", "rank 2")),
    Bad(
        "rnn_recurrent_shape",
        lambda: U_RNN(X, R.replace(recurrent_weights=np.ones((4, 3), f32))),
        ValueError,
        ("recurrent_weights", "(4, 3)", "n_units=4"),
    ),
    Bad(
        "rnn_state_shape",
        lambda: U_RNN(X, R, np.zeros((2, 5), f32)),
        ValueError,
        ("state", "(2, 5)", "n_batch=2, n_units=4"),
    ),
    # -- dtypes
    Bad("lstm_int_input", lambda: U_LSTM(X.astype(np.int32), W), TypeError, ("input", "int32", "float")),
    Bad(
        "lstm_int_weights",
        lambda: U_LSTM(X, W.replace(input_to_cell_weights=np.ones((4, 3), np.int32))),
        TypeError,
        ("input_to_cell_weights", "int32", "float"),
    ),
    Bad(
        "lstm_int_bias",
        lambda: U_LSTM(X, W.replace(forget_gate_bias=np.ones(4, np.int32))),
        TypeError,
        ("forget_gate_bias", "int32", "float"),
    ),
    Bad(
        "lstm_mixed_int8_and_float",
        lambda: U_LSTM(X, W.replace(input_to_forget_weights=quantize_symmetric(W.input_to_forget_weights))),
        TypeError,
        ("is float but input_to_forget_weights is int8", "share one type"),
    ),
    Bad(
        "rnn_int_weights",
        lambda: U_RNN(X, R.replace(input_weights=np.ones((4, 3), np.int32))),
        TypeError,
        ("input_weights", "int32", "float"),
    ),
    Bad("rnn_int_input", lambda: U_RNN(X.astype(np.int32), R), TypeError, ("input", "int32", "float")),
    # -- sizes and missing tensors
    Bad(
        "lstm_n_cell_0", lambda: U_LSTM(X, _lstm_weights(n_cell=0)), ValueError, ("input_to_output_weights", "n_cell=0")
    ),
    Bad("rnn_n_units_0", lambda: U_RNN(X, _rnn_weights(units=0)), ValueError, ("input_weights", "n_units=0")),
    Bad(
        "lstm_missing_required_weights",
        lambda: U_LSTM(X, W.replace(input_to_forget_weights=None, cell_gate_bias=None)),
        ValueError,
        ("input_to_forget_weights", "cell_gate_bias", "None"),
    ),
    Bad(
        "lstm_half_cifg",
        lambda: U_LSTM(X, W.replace(recurrent_to_input_weights=None)),
        ValueError,
        ("input_to_input_weights", "recurrent_to_input_weights", "both"),
    ),
    Bad(
        "lstm_input_bias_under_cifg",
        lambda: U_LSTM(X, W.replace(input_to_input_weights=None, recurrent_to_input_weights=None)),
        ValueError,
        ("input_gate_bias", "CIFG"),
    ),
    Bad(
        "lstm_partial_peephole",
        lambda: U_LSTM(X, W.replace(cell_to_forget_weights=np.ones(4, f32))),
        ValueError,
        ("peephole", "every gate"),
    ),
    Bad(
        "lstm_projection_bias_alone",
        lambda: U_LSTM(X, W.replace(projection_bias=np.ones(4, f32))),
        ValueError,
        ("projection_bias", "without projection_weights"),
    ),
    Bad(
        "lstm_partial_layer_norm",
        lambda: U_LSTM(X, W.replace(forget_layer_norm_coefficients=np.ones(4, f32))),
        ValueError,
        ("layer norm", "layer_norm_coefficients"),
    ),
    Bad(
        "lstm_aux_weights_in_unidirectional",
        lambda: U_LSTM(
            X,
            W.replace(
                **{f"aux_input_to_{g}_weights": np.ones((4, 3), f32) for g in ("input", "forget", "cell", "output")}
            ),
        ),
        ValueError,
        ("aux_input_to_*_weights", "bidirectional"),
    ),
    # -- bidirectional: fw/bw consistency
    Bad(
        "bidi_lstm_fw_bw_sizes",
        lambda: bidirectional_sequence_lstm(X, W, _lstm_weights(n_cell=5)),
        ValueError,
        ("bw_weights", "(5, 5)", "forward sizes (4, 4)"),
    ),
    Bad(
        "bidi_lstm_layer_norm",
        lambda: bidirectional_sequence_lstm(
            X,
            W,
            W.replace(
                **{f"{g}_layer_norm_coefficients": np.ones(4, f32) for g in ("input", "forget", "cell", "output")}
            ),
        ),
        ValueError,
        ("bw_weights", "no layer norm"),
    ),
    Bad(
        "bidi_lstm_aux_weights_without_aux_input",
        lambda: bidirectional_sequence_lstm(
            X,
            *[
                W.replace(
                    **{f"aux_input_to_{g}_weights": np.ones((4, 3), f32) for g in ("input", "forget", "cell", "output")}
                )
            ]
            * 2,
        ),
        ValueError,
        ("aux_input_to_*_weights", "aux_input is None"),
    ),
    Bad(
        "bidi_rnn_bw_n_input",
        lambda: bidirectional_sequence_rnn(X, R, _rnn_weights(n_input=2)),
        ValueError,
        ("bw_input_weights", "n_input=3"),
    ),
    # -- options
    Bad(
        "lstm_negative_cell_clip",
        lambda: U_LSTM(X, W, options=LSTMOptions(cell_clip=-1.0)),
        ValueError,
        ("cell_clip=-1.0", ">= 0"),
    ),
    Bad(
        "lstm_nan_proj_clip",
        lambda: U_LSTM(X, W, options=LSTMOptions(proj_clip=float("nan"))),
        ValueError,
        ("proj_clip=nan", ">= 0"),
    ),
    Bad(
        "lstm_activation_none",
        lambda: U_LSTM(X, W, options=LSTMOptions(fused_activation_function="NONE")),
        ValueError,
        ("fused_activation_function='NONE'", "TANH"),
    ),
    Bad(
        "rnn_unknown_activation",
        lambda: U_RNN(X, R, options=RNNOptions(fused_activation_function="SOFTMAX")),
        ValueError,
        ("fused_activation_function='SOFTMAX'", "TANH"),
    ),
]


@pytest.mark.parametrize("bad", CATALOGUE, ids=str)
def test_bad_input_is_named(bad):
    with pytest.raises(bad.error) as info:
        bad.call()
    message = str(info.value)
    missing = [w for w in bad.words if w not in message]
    assert not missing, f"{missing} not in: {message}"


# ----------------------------------------------------------------------------- files and models


def _lstm_model(weights: LSTMWeights, options: LSTMOptions = LSTMOptions()):
    b = ModelBuilder()
    y = b.add_lstm(b.add_input("input", (-1, -1, N_INPUT)), weights, options)
    return b.build([y], ["output"])


def _without_input(position: int):
    def edit(model):
        op = model.subgraphs[0].operators[0]
        op.inputs = [NO_TENSOR if p == position else i for p, i in enumerate(op.inputs)]

    return edit


@pytest.mark.parametrize(
    ("position", "name"),
    [(2, "input_to_forget_weights"), (13, "forget_gate_bias"), (18, "output_state")],
    ids=lambda v: str(v),
)
def test_file_missing_required_tensor(position, name):
    # streaming: operator 0 is the LSTM (a predict file zeroes its state with FILLs first)
    data = edit_flatbuffer(export_tflite(_lstm_model(W), stateful=True), _without_input(position))
    with pytest.raises(ValueError, match=f"missing required input {name} \\(position {position}\\)"):
        load_tflite(data)


def test_model_input_of_the_wrong_width_is_an_input_error():
    """The model's input tensor fixes the features: the input is named, not the weights."""
    model = _lstm_model(W)
    with pytest.raises(ValueError, match=r"input 'input' has shape \[-1, -1, 3\] .*: 7 features, expected 3"):
        model(np.ones((1, 2, 7), f32))


# ----------------------------------------------------------------------------- documented results


def _litert(model, x: np.ndarray) -> np.ndarray:
    (outputs,) = run_litert(export_tflite(model), [x], state_batch=x.shape[0], xnnpack=False)
    return outputs[0]


def _rnn_model(weights: RNNWeights):
    b = ModelBuilder()
    y = b.add_rnn(b.add_input("input", (-1, -1, N_INPUT)), weights, RNNOptions())
    return b.build([y], ["output"])


def test_empty_sequence_gives_empty_output_and_keeps_the_state():
    """T = 0 is valid: LiteRT returns [B, 0, n_output]; the state stays the initial one."""
    x = np.ones((2, 0, N_INPUT), f32)
    lstm_state = LSTMState(np.full((2, 4), 0.5, f32), np.full((2, 4), -0.5, f32))
    y, final = U_LSTM(x, W, lstm_state)
    assert y.shape == (2, 0, 4)
    np.testing.assert_array_equal(final.output_state, lstm_state.output_state)
    np.testing.assert_array_equal(final.cell_state, lstm_state.cell_state)
    y, h = U_RNN(x, R, lstm_state.output_state)
    assert y.shape == (2, 0, 4)
    np.testing.assert_array_equal(h, lstm_state.output_state)
    for model in (_lstm_model(W), _rnn_model(R)):
        assert _litert(model, x).shape == (2, 0, 4)


@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
def test_non_finite_weight_propagates_like_litert(value):
    """NaN/Inf weights are not rejected (TFLite does not check values either): they reach
    exactly the outputs they reach in LiteRT, and the finite ones agree."""
    w = W.replace(input_to_forget_weights=W.input_to_forget_weights.copy())
    w.input_to_forget_weights[1, 2] = value
    x = np.random.default_rng(1).normal(size=(1, 4, N_INPUT)).astype(f32)
    model = _lstm_model(w)
    ours, lite = np.asarray(model(x)[0]), _litert(model, x)
    assert np.isnan(lite).any() == np.isnan(value)  # a NaN weight reaches the output; an Inf one saturates a gate
    np.testing.assert_allclose(ours, lite, atol=ATOL, equal_nan=True)  # NaN in the same places


def test_proj_clip_without_projection_is_ignored_like_litert():
    """TFLite applies proj_clip only to a projection; without one the option has no effect."""
    x = np.random.default_rng(2).normal(size=(2, 4, N_INPUT)).astype(f32) * 3
    model = _lstm_model(W, LSTMOptions(proj_clip=0.01))
    np.testing.assert_allclose(np.asarray(model(x)[0]), _litert(model, x), atol=ATOL)


def test_bidirectional_rnn_directions_may_differ_in_size_like_litert():
    """Unlike the LSTM, TFLite's BIDIRECTIONAL_SEQUENCE_RNN sizes each direction on its own."""
    b = ModelBuilder()
    ys = b.add_bidirectional_rnn(b.add_input("input", (2, 4, N_INPUT)), R, _rnn_weights(units=2, seed=1), RNNOptions())
    model = b.build(list(ys), ["output"])
    x = np.random.default_rng(3).normal(size=(2, 4, N_INPUT)).astype(f32)
    (ours,) = model(x)
    assert ours.shape == (2, 4, 6)
    np.testing.assert_allclose(np.asarray(ours), _litert(model, x), atol=ATOL)
