"""Keras 3 models -> fused ops: outputs match Keras' own forward pass (JAX backend), in JAX
and in the LiteRT interpreter after export; unsupported features raise NotImplementedError."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from jaxlstm.convert import from_keras

from ._helpers import (
    FUSED_AND_GLUE,
    assert_converted_matches,
    assert_outputs_close,
    run_exported,
    tflite_opcodes,
)

keras = pytest.importorskip("keras")
L = keras.layers

BATCH, TIME, N_INPUT = 2, 5, 3


def lstm(units: int, **kwargs):
    """L.LSTM with unroll=True: the same math as Keras' default scan, and ~50x faster for
    an eager Keras forward on the JAX backend (the tests' cost)."""
    return L.LSTM(units, unroll=True, **kwargs)


def simple_rnn(units: int, **kwargs):
    return L.SimpleRNN(units, unroll=True, **kwargs)


def _inputs() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(BATCH, TIME, N_INPUT)).astype(np.float32)


def _sequential(*layers) -> keras.Model:
    """A Sequential on [BATCH?, TIME, N_INPUT] with seeded random weights (biases included)."""
    model = keras.Sequential([keras.Input((TIME, N_INPUT)), *layers])
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _keras_outputs(model, x) -> list[np.ndarray]:
    y = model(x)
    return [np.asarray(v) for v in (y if isinstance(y, (list, tuple)) else [y])]


def _bidirectional_cases():
    # At BATCH=2, bidi_lstm_concat_seq guards against LiteRT's merged batch-major kernel bug
    # (rows after the first were wrong by up to 0.87 before the converter avoided it).
    for merge in ("concat", "sum", "mul", "ave", None):
        for return_sequences in (True, False):
            suffix = "seq" if return_sequences else "last"
            yield pytest.param(
                lambda m=merge, r=return_sequences: [L.Bidirectional(lstm(4, return_sequences=r), merge_mode=m)],
                id=f"bidi_lstm_{merge}_{suffix}",
            )


CASES = [
    pytest.param(lambda: [lstm(4, return_sequences=True)], id="lstm_seq"),
    pytest.param(lambda: [lstm(4)], id="lstm_last"),
    pytest.param(lambda: [lstm(4, return_sequences=True, go_backwards=True)], id="lstm_go_backwards_seq"),
    pytest.param(lambda: [lstm(4, go_backwards=True)], id="lstm_go_backwards_last"),
    pytest.param(lambda: [lstm(4, activation="relu", use_bias=False, return_sequences=True)], id="lstm_relu_no_bias"),
    pytest.param(lambda: [lstm(4, activation="relu6", return_sequences=True)], id="lstm_relu6"),
    pytest.param(lambda: [simple_rnn(4, return_sequences=True)], id="rnn_tanh_seq"),
    pytest.param(lambda: [simple_rnn(4, activation="relu")], id="rnn_relu_last"),
    pytest.param(
        lambda: [simple_rnn(4, activation="linear", go_backwards=True, return_sequences=True)],
        id="rnn_linear_go_backwards",
    ),
    *_bidirectional_cases(),
    # Directions of different sizes: LiteRT's bidirectional LSTM rejects them, so two unidirectional ops.
    pytest.param(
        lambda: [
            L.Bidirectional(
                lstm(4, return_sequences=True), backward_layer=lstm(3, return_sequences=True, go_backwards=True)
            )
        ],
        id="bidi_lstm_different_sizes",
    ),
    pytest.param(lambda: [L.Bidirectional(simple_rnn(3, return_sequences=True))], id="bidi_rnn_concat_seq"),
    pytest.param(lambda: [L.Bidirectional(simple_rnn(3, activation="relu"), merge_mode="sum")], id="bidi_rnn_sum_last"),
    pytest.param(
        lambda: [
            lstm(4, return_sequences=True),
            L.Dropout(0.5),
            L.Dense(3, activation="relu6"),
            simple_rnn(3),
            L.Dense(3, activation="tanh"),
            L.Dense(3, activation="relu"),
            L.Dense(2, activation="sigmoid"),
        ],
        id="stacked_with_dense_activations",
    ),
]


@pytest.mark.parametrize("layers", CASES)
def test_keras3_model_matches_keras(layers):
    model = _sequential(*layers())
    x = _inputs()
    assert_converted_matches(from_keras(model, batch_size=BATCH), [x], _keras_outputs(model, x))


def _headline_model():
    return _sequential(L.LSTM(4, return_sequences=True), L.Bidirectional(L.LSTM(3)), L.Dense(2, activation="softmax"))


def test_headline_keras3_model_exports_to_fused_builtin_ops():
    from jaxlstm import export_tflite

    model = _headline_model()
    x = _inputs()
    converted = from_keras(model, batch_size=BATCH)
    opcodes = tflite_opcodes(export_tflite(converted))
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in opcodes and "BIDIRECTIONAL_SEQUENCE_LSTM" in opcodes
    assert set(opcodes) <= FUSED_AND_GLUE, opcodes  # no WHILE, no custom ops
    assert_converted_matches(converted, [x], _keras_outputs(model, x))


def test_keras_file_matches_live_model(tmp_path):
    model = _headline_model()
    path = tmp_path / "headline.keras"
    model.save(path)
    x = _inputs()
    assert_outputs_close(from_keras(str(path), batch_size=BATCH)(x), _keras_outputs(model, x))


def test_keras_file_functional_chain_with_repeated_layer_types(tmp_path):
    inputs = keras.Input((TIME, N_INPUT))
    h = L.SimpleRNN(4, return_sequences=True)(inputs)
    h = L.Dropout(0.2)(h)
    h = L.LSTM(3, return_sequences=True, go_backwards=True)(h)
    h = L.LSTM(2, name="second_lstm")(h)  # h5 key "lstm_1": matched by config order, not by name
    model = keras.Model(inputs, L.Dense(2)(h))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / "functional.keras"
    model.save(path)
    x = _inputs()
    expected = _keras_outputs(model, x)
    assert_outputs_close(from_keras(path, batch_size=BATCH)(x), expected)
    assert_converted_matches(from_keras(model, batch_size=BATCH), [x], expected)


def test_bare_layer_has_dynamic_time():
    layer = L.Bidirectional(lstm(3, return_sequences=True), merge_mode="ave")
    x = _inputs()
    expected = np.asarray(layer(x))
    converted = from_keras(layer, batch_size=BATCH)
    assert converted.tensors[converted.inputs[0]].shape == (BATCH, -1, N_INPUT)
    assert_outputs_close(converted(x), [expected])
    shorter = [np.asarray(layer(x[:, :2]))]
    assert_outputs_close(converted(x[:, :2]), shorter)
    assert_outputs_close(run_exported(converted, [x[:, :2]]), shorter)


UNSUPPORTED = [
    pytest.param(lambda: [L.Masking(), L.LSTM(2)], "mask", id="masking_layer"),
    pytest.param(lambda: [L.LSTM(2, recurrent_activation="hard_sigmoid")], "recurrent_activation", id="hard_sigmoid"),
    pytest.param(lambda: [L.LSTM(2, activation="elu")], "'elu'", id="lstm_elu"),
    pytest.param(lambda: [L.LSTM(2, activation="linear")], "'linear'", id="lstm_linear"),
    pytest.param(lambda: [L.SimpleRNN(2, activation="sigmoid")], "'sigmoid'", id="rnn_sigmoid"),
    pytest.param(lambda: [L.LSTM(2, return_state=True)], "return_state", id="return_state"),
    pytest.param(lambda: [L.GRU(2, recurrent_activation="hard_sigmoid")], "'hard_sigmoid'", id="gru_hard_sigmoid"),
    pytest.param(lambda: [L.LSTM(2), L.Dense(2, activation="elu")], "'elu'", id="dense_elu"),
]


@pytest.mark.parametrize("layers,feature", UNSUPPORTED)
def test_unsupported_feature_raises_not_implemented(layers, feature):
    layer_list = layers()
    if any(isinstance(layer, L.LSTM) and layer.return_state for layer in layer_list):
        model = layer_list[0]  # a layer with several outputs cannot sit in a Sequential
        model.build((None, TIME, N_INPUT))
    else:
        model = _sequential(*layer_list)
    with pytest.raises(NotImplementedError, match="Workaround") as error:
        from_keras(model)
    assert feature in str(error.value)


def test_stateful_layer_raises_not_implemented():
    model = keras.Sequential([keras.Input((TIME, N_INPUT), batch_size=BATCH), L.LSTM(2, stateful=True)])
    with pytest.raises(NotImplementedError, match="stateful"):
        from_keras(model)


def test_branching_functional_model_raises_not_implemented():
    inputs = keras.Input((TIME, N_INPUT))
    a = L.LSTM(2, return_sequences=True)(inputs)
    model = keras.Model(inputs, L.Add()([a, L.LSTM(2, return_sequences=True)(inputs)]))
    with pytest.raises(NotImplementedError, match="single-chain"):
        from_keras(model)


def test_no_cell_clip_is_added():
    """TensorFlow's converter writes cell_clip=10; Keras never clips, so neither do we."""
    converted = from_keras(_sequential(L.LSTM(2)))
    (lstm_op,) = [op for op in converted.operators if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert lstm_op.option("cell_clip") == 0.0
