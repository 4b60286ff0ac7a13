"""Whole integer models made by TensorFlow's converter, bit for bit in jaxlstm.

A tf_keras classifier (two stacked LSTMs, the last step, Dense with softmax) converted with
full-integer post-training quantization (a representative dataset), with three interfaces:
float input and output (QUANTIZE and DEQUANTIZE at the edges), int8, and uint8 (QUANTIZE
uint8 <-> int8 at the edges). `load_tflite` runs each exactly as LiteRT's
builtin kernels do, over two invokes that carry the state (the converter's files keep it),
and exactly as TFLite Micro does where it runs the file (not uint8).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from jaxlstm.tflite import load_tflite
from tests.tflite.integer_models import jaxlstm_invokes, litert_invokes, micro_invokes

SHAPE = (2, 6, 5)  # batch, time, features: the converter needs a static batch
EXPECTED_OPS = {
    "int8": [
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "STRIDED_SLICE",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ],
    "float32": [
        "QUANTIZE",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "STRIDED_SLICE",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "DEQUANTIZE",
    ],
    "uint8": [
        "QUANTIZE",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "STRIDED_SLICE",
        "FULLY_CONNECTED",
        "SOFTMAX",
        "QUANTIZE",
    ],
}


@pytest.fixture(scope="module")
def keras_model():
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential(
        [
            tf_keras.layers.InputLayer(input_shape=SHAPE[1:], batch_size=SHAPE[0]),
            tf_keras.layers.LSTM(8, return_sequences=True),
            tf_keras.layers.LSTM(6),
            tf_keras.layers.Dense(4, activation="softmax"),
        ]
    )


def _convert(keras_model, io: str) -> bytes:
    """TFLiteConverter's full-integer file with `io` input and output."""
    tf = pytest.importorskip("tensorflow")
    calibration = np.random.default_rng(0).normal(size=(16, *SHAPE)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c] for c in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io != "float32":
        converter.inference_input_type = converter.inference_output_type = getattr(tf, io)
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": integer IO
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


@pytest.fixture(scope="module")
def float_io(keras_model) -> bytes:
    return _convert(keras_model, "float32")


@pytest.fixture(scope="module", params=["int8", "float32", "uint8"])
def converted(request, keras_model, float_io) -> tuple[str, bytes]:
    """(io type, file). uint8 is the float-IO file with the interface the converter gives it
    for ``inference_input_type=tf.uint8`` (lite/python/util.py modify_model_io_type, which it
    runs after the conversion): one conversion less."""
    if request.param == "float32":
        return "float32", float_io
    if request.param == "int8":
        return "int8", _convert(keras_model, "int8")
    tf = pytest.importorskip("tensorflow")
    from tensorflow.lite.python.util import modify_model_io_type

    return "uint8", modify_model_io_type(float_io, tf.uint8, tf.uint8)


def _inputs(dtype: str) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(1)
    if dtype == "float32":
        return [[rng.normal(size=SHAPE).astype(np.float32)] for _ in range(2)]
    info = np.iinfo(dtype)
    return [[rng.integers(info.min, int(info.max) + 1, SHAPE).astype(dtype)] for _ in range(2)]


def test_the_converter_writes_the_integer_ops(converted):
    io, data = converted
    model = load_tflite(data)
    assert model.opcodes == EXPECTED_OPS[io]
    assert model.stateful  # the converter's files keep the state between invokes
    assert model.tensors[model.inputs[0]].dtype == io and model.tensors[model.outputs[0]].dtype == io


def test_litert_bit_exact(converted):
    io, data = converted
    xs = _inputs(io)
    ours, theirs = jaxlstm_invokes(load_tflite(data), xs), litert_invokes(data, xs)
    assert not np.array_equal(theirs[0][0], theirs[1][0])  # the second invoke carried the state
    for invoke, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"invoke {invoke}", strict=True)


def test_tflite_micro_bit_exact(converted):
    io, data = converted
    if io == "uint8":
        with pytest.raises(NotImplementedError, match="TFLite Micro's kernels take int8 and int16"):
            load_tflite(data, runtime="tflite-micro")
        return
    xs = _inputs(io)
    ours, theirs = jaxlstm_invokes(load_tflite(data, runtime="tflite-micro"), xs), micro_invokes(data, xs, 1)
    for invoke, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(a[0], b[0], err_msg=f"invoke {invoke}", strict=True)


def test_float_io_follows_keras(float_io, keras_model):
    """The float-IO file in jaxlstm against the Keras model: int8 quantization error only
    (the output LSB is 1/256)."""
    (x,) = _inputs("float32")[0]
    probabilities = np.asarray(load_tflite(float_io)(x)[0])
    np.testing.assert_allclose(probabilities, keras_model(x).numpy(), atol=4 / 256)
