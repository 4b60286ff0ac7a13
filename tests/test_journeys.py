"""The everyday journeys of issue 18, done exactly as a user does them, with the defaults.

Each one runs the converted (or trained) model in JAX at a batch > 1 and, where the journey
goes on to LiteRT, its default export: only the *input* is resized (``resize_tensor_input`` +
``allocate_tensors``, or the signature runner), the file is invoked twice without a reset,
and both invokes must equal the source framework's own forward pass (torch, Keras 3,
tf_keras, flax nnx) to 1e-5: float32 frameworks sum the gate matmuls in different orders,
a few ulps of O(1) values per step.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from jaxlstm import export_tflite, load_tflite

ATOL = 1e-5


def _normal(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=ATOL, rtol=0)


def _litert_twice(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    """Resizes the input alone to x's shape, allocates, invokes twice; the first output of each."""
    interpreter = Interpreter(model_content=data)
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    outputs = []
    for _ in range(2):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy())
    return outputs


def _assert_litert_matches(data: bytes, x: np.ndarray, expected: np.ndarray) -> None:
    first, second = _litert_twice(data, x)
    _close(first, expected)
    _close(second, expected)  # predict: the second invoke does not see the first one's state


# ----------------------------------------------------------------------------- PyTorch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _torch_forward(torch, module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


def test_torch_two_layer_lstm_at_batch_16_in_jax_and_litert(torch):
    """Journey 1: from_torch(nn.LSTM(10, 20, num_layers=2, batch_first=True))(x), x of batch 16."""
    from jaxlstm.convert import from_torch

    torch.manual_seed(0)
    module = torch.nn.LSTM(10, 20, num_layers=2, batch_first=True)
    model = from_torch(module)
    x = _normal(1, 16, 7, 10)
    expected = _torch_forward(torch, module, x)
    _close(model(x)[0], expected)
    data = export_tflite(model)
    _assert_litert_matches(data, x, expected)
    x = _normal(2, 3, 11, 10)  # the signature runner, at another batch and length
    runner = Interpreter(model_content=data).get_signature_runner()
    _close(runner(input=x)["output"], _torch_forward(torch, module, x))


def test_torch_gru_in_jax_at_any_length_and_exported_with_time_steps(torch):
    """Journey 2: from_torch(nn.GRU(6, 9, batch_first=True)) runs in JAX with no time_steps."""
    from jaxlstm.convert import from_torch

    torch.manual_seed(1)
    module = torch.nn.GRU(6, 9, batch_first=True)
    model = from_torch(module)
    for batch, time in ((4, 3), (2, 12)):
        x = _normal(time, batch, time, 6)
        _close(model(x)[0], _torch_forward(torch, module, x))
    with pytest.raises(ValueError, match="time_steps"):
        export_tflite(model)
    x = _normal(3, 5, 12, 6)
    _assert_litert_matches(export_tflite(model, time_steps=12), x, _torch_forward(torch, module, x))


def test_loaded_model_apply_at_batch_32(torch):
    """Journey 7: m = load_tflite(...); m.apply(m.params, m.init_state(), x) at batch 32.

    A state for batch 1 is an error that says how to size it; `state=None` and
    ``init_state(batch_size=32)`` both run, as does a streaming file's carried state."""
    from jaxlstm.convert import from_torch

    torch.manual_seed(2)
    module = torch.nn.LSTM(4, 5, batch_first=True)
    x = _normal(4, 32, 6, 4)
    expected = _torch_forward(torch, module, x)
    for stateful in (False, True):
        m = load_tflite(export_tflite(from_torch(module), stateful=stateful))
        assert m.stateful is stateful
        with pytest.raises(ValueError, match=r"has batch 1 .* runs on batch 32 .*init_state\(batch_size=32\)") as e:
            m.apply(m.params, m.init_state(), x)
        assert "state=None" in str(e.value)
        for state in (None, m.init_state(batch_size=32)):
            (y,), new_state = m.apply(m.params, state, x)
            _close(y, expected)
        assert {np.shape(v) for v in new_state.values()} == {(32, 5)}


# ----------------------------------------------------------------------------- Keras 3


@pytest.fixture(scope="module")
def keras_model():
    """A Keras 3 model as users declare it: batch None, 20 steps of 8 features."""
    keras = pytest.importorskip("keras")
    model = keras.Sequential(
        [
            keras.Input((20, 8)),
            keras.layers.LSTM(16, return_sequences=True, unroll=True),
            keras.layers.LSTM(12, unroll=True),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_keras3_model_at_batch_5_in_jax_and_litert(keras_model):
    """Journeys 3 and 4: from_keras(m)(x) at batch 5; export_tflite(from_keras(m)), LiteRT
    resize_tensor_input on the input to batch 5."""
    from jaxlstm.convert import from_keras

    model = from_keras(keras_model)
    x = _normal(6, 5, 20, 8)
    expected = np.asarray(keras_model(x))
    _close(model(x)[0], expected)
    _assert_litert_matches(export_tflite(model), x, expected)


def test_jaxlstm_convert_keras_file_then_litert_at_batch_3(keras_model, tmp_path, capsys):
    """Journey 5: jaxlstm convert model.keras -o m.tflite, then LiteRT at batch 3; inspect
    shows the dynamic batch."""
    from jaxlstm.cli import main

    src, out = str(tmp_path / "model.keras"), str(tmp_path / "m.tflite")
    keras_model.save(src)
    assert main(["convert", src, "-o", out]) == 0
    assert main(["inspect", out]) == 0
    assert "signature 'serving_default': (input=t0 float32[-1,20,8])" in capsys.readouterr().out
    x = _normal(7, 3, 20, 8)
    with open(out, "rb") as f:
        _assert_litert_matches(f.read(), x, np.asarray(keras_model(x)))


# ----------------------------------------------------------------------------- tf_keras


def test_tf_keras_model_at_batch_4_in_jax_and_litert():
    """The journey with a tf_keras (Keras 2) model declared with batch None."""
    tf_keras = pytest.importorskip("tf_keras")
    from jaxlstm.convert import from_keras

    model = tf_keras.Sequential([tf_keras.Input((6, 3)), tf_keras.layers.GRU(5), tf_keras.layers.Dense(2)])
    rng = np.random.default_rng(8)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    converted = from_keras(model)
    x = _normal(9, 4, 6, 3)
    expected = model(x).numpy()
    _close(converted(x)[0], expected)
    _assert_litert_matches(export_tflite(converted), x, expected)


# ----------------------------------------------------------------------------- flax


def test_trained_nn_lstm_exported_runs_at_batch_7():
    """Journey 6: a trained jaxlstm.nn.LSTM -> export_tflite(module) -> LiteRT at batch 7."""
    import jax
    import optax
    from flax import nnx

    from jaxlstm.nn import LSTM

    layer = LSTM(3, 6, rngs=nnx.Rngs(0))
    x_train, y_train = _normal(10, 16, 5, 3), _normal(11, 16, 5, 6)
    graphdef, params = nnx.split(layer)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state):
        grads = jax.grad(lambda p: ((nnx.merge(graphdef, p)(x_train) - y_train) ** 2).mean())(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for _ in range(3):
        params, opt_state = step(params, opt_state)
    nnx.update(layer, params)
    x = _normal(12, 7, 9, 3)
    _assert_litert_matches(export_tflite(layer), x, np.asarray(layer(x)))
