"""`jaxlstm.quantize` end to end: its integer models run in LiteRT and TensorFlow Lite Micro
exactly as jaxlstm runs them, are as accurate as TensorFlow's converter makes them, and
`fake_quantized` fine-tunes them.

Models: tf_keras (Keras' initializers, a few biases drawn) converted by `from_keras` —
stacked LSTMs with a Dense softmax head, and a bidirectional LSTM with a Dense head over the
sequence — and the same Keras models through TensorFlow's full-integer converter.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import optax
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import jaxlstm
from jaxlstm.convert import from_keras
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import LSTMOptions, QuantParams
from jaxlstm.parity.litert import run_litert
from jaxlstm.quantization import calibrate, fake_quantized
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.integer_models import Config, float_weights

TIME, FEATURES = 8, 4
N_CALIBRATION, N_TEST = 256, 200


def _keras_models():
    """{name: tf_keras model}: 'stacked' LSTM(16) -> LSTM(16) -> Dense(10, softmax) and
    'bidirectional' Bidirectional(LSTM(8)) (sequences) -> Dense(3)."""
    tf_keras = pytest.importorskip("tf_keras")
    layers = tf_keras.layers
    rng = np.random.default_rng(0)
    tf_keras.utils.set_random_seed(0)
    stacked = tf_keras.Sequential(
        [
            layers.InputLayer(input_shape=(TIME, FEATURES)),
            layers.LSTM(16, return_sequences=True),
            layers.LSTM(16),
            layers.Dense(10, activation="softmax"),
        ]
    )
    kernel, bias = stacked.layers[-1].get_weights()
    stacked.layers[-1].set_weights([4 * kernel, rng.normal(size=bias.shape).astype(np.float32)])  # peaky softmax
    bidirectional = tf_keras.Sequential(
        [
            layers.InputLayer(input_shape=(TIME, FEATURES)),
            layers.Bidirectional(layers.LSTM(8, return_sequences=True)),
            layers.Dense(3),
        ]
    )
    wrapper = bidirectional.layers[0]
    for layer in (*stacked.layers[:2], wrapper.forward_layer, wrapper.backward_layer):
        kernel, recurrent, bias = layer.get_weights()
        layer.set_weights([kernel, recurrent, (0.5 * rng.normal(size=bias.shape)).astype(np.float32)])
    return {"stacked": stacked, "bidirectional": bidirectional}


def _tf_int8(tf_keras_model, calibration: np.ndarray) -> bytes:
    """TensorFlow's full-integer int8 conversion at batch 1 (it converts no dynamic batch)."""
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    fixed = tf_keras.Sequential([tf_keras.layers.InputLayer(input_shape=(TIME, FEATURES), batch_size=1)])
    for layer in tf_keras_model.layers:
        fixed.add(layer)
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def _litert_per_sequence(data: bytes, x: np.ndarray) -> np.ndarray:
    """One invoke per sequence (batch 1) after reset_all_variables: the converter's files keep
    the LSTM state in variable tensors that LiteRT never resets itself."""
    interpreter = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    (i,), (o,) = interpreter.get_input_details(), interpreter.get_output_details()
    outputs = []
    for row in x:
        interpreter.reset_all_variables()
        interpreter.set_tensor(i["index"], row[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(o["index"])[0].copy())
    return np.asarray(outputs)


def _tflite_micro(data: bytes, x: np.ndarray) -> np.ndarray:
    """One invoke per sequence (batch 1) in TensorFlow Lite Micro's interpreter."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    interpreter = runtime.Interpreter.from_bytes(data)
    outputs = []
    for row in x:
        interpreter.set_input(row[None], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0)[0].copy())
    return np.asarray(outputs)


@pytest.fixture(scope="module")
def models():
    """{name: (float Model, Keras outputs on the test inputs, calibration, test inputs, tf_keras model)}."""
    rng = np.random.default_rng(1)
    result = {}
    for name, keras_model in _keras_models().items():
        calibration = rng.uniform(0, 1, (N_CALIBRATION, TIME, FEATURES)).astype(np.float32)
        x = rng.uniform(0, 1, (N_TEST, TIME, FEATURES)).astype(np.float32)
        reference = keras_model.predict(x, verbose=0)
        result[name] = (from_keras(keras_model), reference, calibration, x, keras_model)
    return result


@pytest.fixture(scope="module")
def quantized(models):
    """{(name, activations, io): integer Model}, from one calibration per model."""
    result = {}
    for name, (model, _, calibration_data, _, _) in models.items():
        calibration = calibrate(model, calibration_data, progress=False)
        for activations, io in (("int8", "float"), ("int8", "integer"), ("int16", "float")):
            result[(name, activations, io)] = jaxlstm.quantize(model, calibration, activations=activations, io=io)
    return result


# ----------------------------------------------------------------------------- bit for bit


@pytest.mark.parametrize("io", ["float", "integer"])
@pytest.mark.parametrize("name", ["stacked", "bidirectional"])
def test_int8_runs_in_litert_as_in_jaxlstm(models, quantized, name, io):
    """The test set in one batch (the input resized), two invokes (a predict file: the
    second invoke equals the first); exact. The file reads back as the same model."""
    _, _, _, x, _ = models[name]
    integer = quantized[(name, "int8", io)]
    data = export_tflite(integer)
    if io == "integer":
        q = integer.tensors[integer.inputs[0]]
        x = np.clip(np.round(x / q.scale) + q.zero_point, -128, 127).astype(np.int8)
    ours = np.asarray(integer(x)[0])
    for run in run_litert(data, [x], invocations=2, reset=False, xnnpack=False):
        np.testing.assert_array_equal(run[0], ours)
    np.testing.assert_array_equal(load_tflite(data)(x)[0], ours)


@pytest.mark.parametrize("activations", ["int8", "int16"])
@pytest.mark.parametrize("name", ["stacked", "bidirectional"])
def test_runs_in_tflite_micro_as_in_jaxlstm(models, quantized, name, activations):
    """int8 (TFLite Micro's own int8 kernels) and int16 (16x8, the op version TFLite Micro
    registers), one sequence per invoke, against jaxlstm's jitted batch; exact."""
    _, _, _, x, _ = models[name]
    integer = quantized[(name, activations, "float")].replace(runtime="tflite-micro")
    params = integer.params  # closed over: int64 biases stay int64 without jax_enable_x64
    ours = jax.jit(lambda v: integer.apply(params, None, v)[0][0])(x)
    np.testing.assert_array_equal(_tflite_micro(export_tflite(integer, batch_size=1), x), ours)


def test_quantize_op_divides_exactly_under_jit():
    """QUANTIZE divides by the scale in float; under a caller's jit XLA would fold the division
    by a constant into a multiplication by its inexact reciprocal."""
    b = ModelBuilder()
    x = b.add_input("x", (-1,))
    y = b.add_intermediate("y", (-1,), "int16", QuantParams(0.0009123, 0))
    b.add_operator("QUANTIZE", [x], [y])
    model = b.build([y]).replace(runtime="tflite-micro")
    values = np.random.default_rng(0).uniform(-29, 29, 100000).astype(np.float32)  # up to 31,800 steps
    quotient = values / np.float32(0.0009123)  # float32 division, as the kernel
    expected = np.trunc(quotient + np.copysign(np.float32(0.5), quotient))  # no exact ties among these
    np.testing.assert_array_equal(jax.jit(lambda v: model.apply(model.params, None, v)[0][0])(values), expected)


def test_dequantize_op_rounds_twice_under_jit():
    """LiteRT's DEQUANTIZE vector loop computes scale * x - scale * zero_point in float32, two
    roundings; under a caller's jit XLA would fuse them into one multiply-add."""
    b = ModelBuilder()
    x = b.add_input("x", (-1, 16), "int8", QuantParams(0.0123456, -7))
    y = b.add_intermediate("y", (-1, 16))
    b.add_operator("DEQUANTIZE", [x], [y])
    model = b.build([y])
    values = np.random.default_rng(0).integers(-128, 128, (256, 16)).astype(np.int8)
    s = np.float32(0.0123456)
    expected = values.astype(np.float32) * s - s * np.float32(-7)  # numpy: each operation rounded
    np.testing.assert_array_equal(jax.jit(lambda v: model.apply(model.params, None, v)[0][0])(values), expected)


# ----------------------------------------------------------------------------- accuracy


@pytest.mark.slow  # TensorFlow import and two conversions: ~15 s
@pytest.mark.parametrize("name", ["stacked", "bidirectional"])
def test_as_accurate_as_tensorflows_converter(models, quantized, name):
    """Error against the float Keras model on held-out inputs: jaxlstm int8 no worse than
    TensorFlow's int8 conversion of the same weights on the same calibration data (the same
    conventions, but TF's calibrated ranges come out slightly wider: a margin of 10% on the
    mean and 25% on the max), and int16's mean error smaller: that of the int8 weights alone
    (within 10% of the float model with the int8 weights). The max errors of int8 and int16
    alike come from the few test inputs whose cell state passes the calibrated power-of-two
    range and saturates. The Dense weights are the converter's, integer for integer.

    TensorFlow's bidirectional file is worse by far: the backward LSTM's output state and
    hidden intermediate get different quantizations, and its REVERSE_V2 relabels a tensor of
    one quantization as another."""
    model, reference, calibration, x, keras_model = models[name]
    tf_data = _tf_int8(keras_model, calibration)
    tf_error = np.abs(_litert_per_sequence(tf_data, x) - reference)
    int8_error = np.abs(np.asarray(quantized[(name, "int8", "float")](x)[0]) - reference)
    int16_error = np.abs(np.asarray(quantized[(name, "int16", "float")](x)[0]) - reference)
    assert int8_error.mean() <= 1.1 * tf_error.mean()
    assert int8_error.max() <= 1.25 * tf_error.max()
    assert int16_error.mean() < int8_error.mean()

    integer = quantized[(name, "int8", "float")]
    params = {k: v for k, v in model.params.items()}
    for key, value in integer.params.items():
        if key in params and np.asarray(value.values).dtype == np.int8:
            params[key] = np.asarray(value.dequantize())
    weights_alone = np.abs(np.asarray(model.with_params(params)(x)[0]) - reference)
    assert int16_error.mean() <= 1.1 * weights_alone.mean()

    if name == "bidirectional":  # TF's REVERSE_V2 relabels its input's quantization: load_tflite refuses it
        return

    def dense_weights(m):
        return [m.constants[op.inputs[1]] for op in m.operators if op.opcode == "FULLY_CONNECTED"]

    for ours, theirs in zip(dense_weights(integer), dense_weights(load_tflite(tf_data)), strict=True):
        np.testing.assert_array_equal(ours.values, theirs.values)  # the converter's per-channel int8 weights
        np.testing.assert_array_equal(np.ravel(ours.scale), np.ravel(theirs.scale))


# ----------------------------------------------------------------------------- QAT


def _regression_model(rng: np.random.Generator):
    """LSTM(8) -> last step -> FULLY_CONNECTED(1) over [B, 6, 2] inputs."""
    b = ModelBuilder()
    x = b.add_input("input", (-1, 6, 2))
    h = b.add_last_time_step(b.add_lstm(x, float_weights(rng, Config(n_input=2, n_cell=8)), LSTMOptions()))
    y = b.add_fully_connected(h, rng.normal(size=(1, 8)).astype(np.float32), np.zeros(1, np.float32))
    return b.build([y])


def test_quantization_aware_training_recovers_accuracy():
    """A float regression LSTM trained in JAX and quantized to int8, then fine-tuned through the
    integer forward pass. The fake-quantized forward pass is the integer model's, bit for bit
    (at the calibrated weights, and under jit at the tuned ones, re-quantized at the fixed
    scales); the training loss of the integer model falls, its error on held-out data with it
    (below the float model's), and LiteRT runs the tuned file as jaxlstm does."""
    rng = np.random.default_rng(3)
    model = _regression_model(rng)
    x = rng.normal(size=(256, 6, 2)).astype(np.float32)
    y = x[:, -3:, :1].sum(axis=1)
    x_test = rng.normal(size=(256, 6, 2)).astype(np.float32)
    y_test = x_test[:, -3:, :1].sum(axis=1)

    def train(forward, params, steps: int, learning_rate: float):
        optimizer = optax.adam(learning_rate)
        state = optimizer.init(params)

        @jax.jit
        def step(params, state):
            loss, grads = jax.value_and_grad(lambda p: ((forward(p, x)[0] - y) ** 2).mean())(params)
            updates, state = optimizer.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        losses = []
        for _ in range(steps):
            params, state, loss = step(params, state)
            losses.append(float(loss))
        return params, losses

    float_params, _ = train(lambda p, v: model.apply(p, None, v)[0], model.params, 150, 2e-2)
    trained = model.with_params(float_params)
    integer = jaxlstm.quantize(trained, x, progress=False)
    qat = fake_quantized(integer)
    assert qat.integer_model(float_params).params.keys() == integer.params.keys()
    np.testing.assert_array_equal(qat.apply(float_params, x_test)[0], integer(x_test)[0])

    def test_error(m) -> float:
        return float(np.mean((np.asarray(m(x_test)[0]) - y_test) ** 2))

    tuned_params, losses = train(qat.apply, float_params, 40, 3e-3)
    tuned = qat.integer_model(tuned_params)
    np.testing.assert_array_equal(jax.jit(qat.apply)(tuned_params, x_test)[0], tuned(x_test)[0])
    assert np.mean(losses[-5:]) < 0.9 * losses[0]
    assert test_error(tuned) < 0.9 * min(test_error(integer), test_error(trained))
    np.testing.assert_array_equal(
        run_litert(export_tflite(tuned), [x_test[:4]], xnnpack=False)[0][0], tuned(x_test[:4])[0]
    )


def test_fake_quantized_int16_under_jit():
    """16x8: the int64 biases re-quantized inside a jitted function (no jax_enable_x64) stay
    int64, and the forward pass is the integer model's (TFLite Micro's arithmetic)."""
    rng = np.random.default_rng(4)
    model = _regression_model(rng)
    x = rng.normal(size=(32, 6, 2)).astype(np.float32)
    integer = jaxlstm.quantize(model, x, activations="int16", progress=False)
    assert integer.constant("lstm/forget_gate_bias").values.dtype == np.int64
    np.testing.assert_array_equal(jax.jit(fake_quantized(integer).apply)(model.params, x)[0], integer(x)[0])
