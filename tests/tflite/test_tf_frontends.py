"""Acceptance: convolutional and normalization front ends before an LSTM, as tf.lite.TFLiteConverter
writes them for tf_keras models (float and dynamic-range), load and match LiteRT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from jaxlstm.ops import QuantizedTensor
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite

pytestmark = pytest.mark.slow  # TensorFlow import and four conversions: ~20 s

ATOL = 1e-5  # float32 sums in another order; hybrid products are exact integers (test_frontend_ops.py)
OPCODES = {
    "image": {"PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D", "UNIDIRECTIONAL_SEQUENCE_LSTM"},
    "sequence": {"MEAN", "SQUARED_DIFFERENCE", "RSQRT", "PAD", "CONV_2D", "LEAKY_RELU", "MAX_POOL_2D"},
}


def _image_model(keras):
    """ZeroPadding2D, Conv2D + ReLU6, DepthwiseConv2D, max and average pooling, LSTM, softmax.
    The filters have 1024+ elements, so dynamic-range quantization makes both convolutions hybrid."""
    layers = keras.layers
    x = inp = keras.Input((8, 6, 8), batch_size=2)
    x = layers.ZeroPadding2D(((1, 0), (0, 1)))(x)
    x = layers.Conv2D(32, 3, activation="relu6")(x)
    x = layers.DepthwiseConv2D(3, depth_multiplier=4, padding="same")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.AveragePooling2D((2, 1), strides=1)(x)
    x = layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)
    x = layers.LSTM(16)(x)
    return keras.Model(inp, layers.Dense(3, activation="softmax")(x))


def _sequence_model(keras):
    """LayerNormalization (MEAN, SQUARED_DIFFERENCE, RSQRT), causal dilated Conv1D (PAD,
    CONV_2D), LeakyReLU, MaxPooling1D, LSTM, GlobalAveragePooling1D (MEAN), Dense."""
    layers = keras.layers
    x = inp = keras.Input((10, 16), batch_size=2)
    x = layers.LayerNormalization()(x)
    x = layers.Conv1D(64, 3, dilation_rate=2, padding="causal")(x)
    x = layers.LeakyReLU(0.1)(x)
    x = layers.MaxPooling1D(2)(x)
    x = layers.LSTM(16, return_sequences=True)(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inp, layers.Dense(3)(x))


@pytest.fixture(scope="module")
def converted():
    """{(model, float|dynamic_range): .tflite bytes} and the tf_keras models."""
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("tf_keras")
    keras.utils.set_random_seed(0)
    models = {"image": _image_model(keras), "sequence": _sequence_model(keras)}
    files = {}
    for name, model in models.items():
        for kind, optimizations in (("float", []), ("dynamic_range", [tf.lite.Optimize.DEFAULT])):
            converter = tf.lite.TFLiteConverter.from_keras_model(model)
            converter.optimizations = optimizations
            files[name, kind] = converter.convert()
    return files, models


CASES = [(name, kind) for name in OPCODES for kind in ("float", "dynamic_range")]


def _input(models, name, seed):
    return np.random.default_rng(seed).normal(size=models[name].input_shape).astype(np.float32)


@pytest.mark.parametrize("key", CASES, ids="-".join)
def test_converted_front_end_matches_litert(converted, key):
    files, models = converted
    m = load_tflite(files[key])
    assert OPCODES[key[0]] <= set(m.opcodes)
    hybrid = {m.tensors[op.inputs[1]].dtype for op in m.operators if op.opcode.endswith("CONV_2D")}
    assert hybrid == ({"int8"} if key[1] == "dynamic_range" else {"float32"})
    x = _input(models, key[0], 1)
    for xnnpack in (False, True):  # per-channel hybrid convolutions: XNNPACK agrees with the builtin kernels
        state = m.init_state()
        for run in run_litert(files[key], [x], invocations=2, reset=False, xnnpack=xnnpack):
            outputs, state = m.apply(m.params, state, x)
            np.testing.assert_allclose(outputs[0], run[0], atol=ATOL, rtol=0, err_msg=f"xnnpack={xnnpack}")


@pytest.mark.parametrize("name", list(OPCODES))
def test_float_front_end_matches_keras(converted, name):
    """An independent check of the whole chain: the tf_keras model itself."""
    files, models = converted
    x = _input(models, name, 2)
    np.testing.assert_allclose(load_tflite(files[name, "float"])(x)[0], models[name](x).numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", list(OPCODES))
def test_float_front_end_is_differentiable(converted, name):
    """jax.grad reaches every weight through the convolutions, pools and normalization."""
    files, models = converted
    m = load_tflite(files[name, "float"])
    x = _input(models, name, 4)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, m.init_state(), x)[0][0] ** 2)))(m.params)
    for weight, g in grads.items():
        assert np.all(np.isfinite(g)) and np.any(g != 0), weight


def _versions(data: bytes) -> dict[int, int]:
    """{builtin code: highest version} of a .tflite file's operator codes."""
    versions = {}
    for code in schema.ModelT.InitFromPackedBuf(data, 0).operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        versions[builtin] = max(versions.get(builtin, 0), code.version)
    return versions


@pytest.mark.parametrize("key", CASES, ids="-".join)
def test_round_trip_runs_identically_in_litert(converted, key):
    files, models = converted
    again = export_tflite(load_tflite(files[key]))
    assert any(isinstance(v, QuantizedTensor) for v in load_tflite(again).params.values()) == (key[1] != "float")
    assert _versions(again) == _versions(files[key])  # the writer versions ops as the converter does
    x = _input(models, key[0], 3)
    original = run_litert(files[key], [x], invocations=2, reset=False, xnnpack=False)
    for a, b in zip(original, run_litert(again, [x], invocations=2, reset=False, xnnpack=False)):
        np.testing.assert_array_equal(a[0], b[0])


def test_flex_operator_is_named():
    """A model converted with TensorFlow select ops (here tf.math.cumprod) keeps a clear error."""
    tf = pytest.importorskip("tensorflow")
    fn = tf.function(lambda x: tf.math.cumprod(x, axis=1), input_signature=[tf.TensorSpec((2, 3), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    with pytest.raises(NotImplementedError, match="custom operator 'FlexCumprod'"):
        load_tflite(converter.convert())
