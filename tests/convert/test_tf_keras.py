"""tf_keras (Keras 2) models -> fused ops, including time_major layers: outputs match
tf_keras' own forward pass in JAX and in LiteRT after export."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm.convert import from_keras

from ._helpers import assert_converted_matches

tf_keras = pytest.importorskip("tf_keras")
L = tf_keras.layers

BATCH, TIME, N_INPUT = 2, 5, 3


def _with_random_weights(model):
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _x(time_major: bool = False) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, N_INPUT)).astype(np.float32)
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)) if time_major else x


def _sequential_cases():
    yield pytest.param(
        lambda: [L.LSTM(4, return_sequences=True), L.Bidirectional(L.LSTM(3)), L.Dense(2)], False, id="lstm_bidi_dense"
    )
    yield pytest.param(
        lambda: [
            L.SimpleRNN(4, go_backwards=True, return_sequences=True),
            L.Bidirectional(L.SimpleRNN(2, return_sequences=True), merge_mode="mul"),
        ],
        False,
        id="rnn_go_backwards_bidi_mul",
    )
    # time_major: the input is [T, B, D]; the last-step slice is on axis 0.
    yield pytest.param(
        lambda: [L.LSTM(4, time_major=True, return_sequences=True), L.LSTM(3, time_major=True, go_backwards=True)],
        True,
        id="time_major_stack",
    )
    yield pytest.param(
        lambda: [L.Bidirectional(L.LSTM(3, time_major=True, return_sequences=True))], True, id="time_major_bidi_concat"
    )


@pytest.mark.parametrize("layers,time_major", _sequential_cases())
def test_tf_keras_model_matches_tf_keras(layers, time_major):
    shape = (BATCH, N_INPUT) if time_major else (TIME, N_INPUT)  # Keras' "batch" axis is time
    model = _with_random_weights(tf_keras.Sequential([L.InputLayer(shape), *layers()]))
    x = _x(time_major)
    converted = from_keras(model, batch_size=BATCH)
    assert converted.tensors[converted.inputs[0]].shape[1 if time_major else 0] == BATCH
    assert_converted_matches(converted, [x], [model(x).numpy()])


def test_tf_keras_functional_chain_with_dropout():
    inputs = tf_keras.Input((TIME, N_INPUT))
    h = L.LSTM(4, return_sequences=True)(inputs)
    h = L.Dropout(0.3)(h)
    model = _with_random_weights(tf_keras.Model(inputs, L.Bidirectional(L.LSTM(2), merge_mode="ave")(h)))
    x = _x()
    assert_converted_matches(from_keras(model, batch_size=BATCH), [x], [model(x).numpy()])


def test_tf_keras_hard_sigmoid_raises_not_implemented():
    model = tf_keras.Sequential([L.InputLayer((TIME, N_INPUT)), L.LSTM(2, recurrent_activation="hard_sigmoid")])
    with pytest.raises(NotImplementedError, match="recurrent_activation 'hard_sigmoid'"):
        from_keras(model)
