"""Acceptance: files made by tf.lite.TFLiteConverter from tf_keras LSTM models load and match LiteRT."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm.ops import QuantizedTensor
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite

pytestmark = pytest.mark.slow  # TensorFlow import and two conversions: ~30-40 s

BATCH, TIME, FEATURES, UNITS = 2, 6, 32, 32  # 32x32 weights reach the 1024-element quantization threshold
FLOAT_ATOL = 1e-5  # LiteRT's float GEMMs sum in another order (its kernel tests use 1e-5)
HYBRID_ATOL = 1e-5  # int8 products are exact; float scaling and activations differ by ulps


@pytest.fixture(scope="module")
def converted():
    """A tf_keras Bidirectional(LSTM) -> LSTM -> Dense model and its float and
    dynamic-range .tflite files (the converter writes REVERSE_V2, UNIDIRECTIONAL_SEQUENCE_LSTM,
    CONCATENATION, STRIDED_SLICE, FULLY_CONNECTED and SOFTMAX; hybrid LSTMs and a per-channel
    hybrid FULLY_CONNECTED, both with asymmetric inputs)."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("tf_keras")
    layers = keras.layers
    keras.utils.set_random_seed(0)
    x = inp = keras.Input((TIME, FEATURES), batch_size=BATCH)
    x = layers.Bidirectional(layers.LSTM(UNITS, return_sequences=True))(x)
    x = layers.LSTM(UNITS)(x)
    model = keras.Model(inp, layers.Dense(40, activation="softmax")(x))
    files = {}
    for name, optimizations in (("float", []), ("dynamic_range", [tf.lite.Optimize.DEFAULT])):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = optimizations
        files[name] = converter.convert()
    return files, model


CASES = ["float", "dynamic_range"]


def _input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("name", CASES)
def test_converted_file_matches_litert_across_invokes(converted, name):
    files, _ = converted
    m = load_tflite(files[name])
    assert m.opcodes.count("UNIDIRECTIONAL_SEQUENCE_LSTM") == 3 and "REVERSE_V2" in m.opcodes
    hybrid = name == "dynamic_range"
    assert any(isinstance(v, QuantizedTensor) for v in m.params.values()) == hybrid
    x = _input(1)
    lite = run_litert(files[name], [x], invocations=2, reset=False)  # state carries over
    state = m.init_state()
    for run in lite:
        outputs, state = m.apply(m.params, state, x)
        np.testing.assert_allclose(outputs[0], run[0], atol=HYBRID_ATOL if hybrid else FLOAT_ATOL, rtol=0)


def test_float_file_matches_keras(converted):
    """An independent check of the whole chain: Keras itself (|c| stays below the clip of 10)."""
    files, model = converted
    x = _input(2)
    np.testing.assert_allclose(load_tflite(files["float"])(x)[0], model(x).numpy(), atol=FLOAT_ATOL, rtol=0)


@pytest.mark.parametrize("name", CASES)
def test_round_trip_runs_identically_in_litert(converted, name):
    files, _ = converted
    again = export_tflite(load_tflite(files[name]))
    x = _input(3)
    original = run_litert(files[name], [x], invocations=2, reset=False)
    for a, b in zip(original, run_litert(again, [x], invocations=2, reset=False)):
        np.testing.assert_array_equal(a[0], b[0])
