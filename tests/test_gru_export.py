"""GRU export (`ModelBuilder.add_gru` -> `unroll_gru`): Keras vs the JAX model vs LiteRT on the unrolled graph.

The expected values come from Keras 3 (KERAS_BACKEND=jax) and tf_keras layers; the exported
`.tflite` runs in the LiteRT interpreter. The graph must hold only builtin operators that
every LiteRT build and TFLite Micro support: no WHILE, no Flex, no custom ops.
"""

import os

import numpy as np
import pytest

import jaxlstm
from jaxlstm.convert import gru_weights_from_keras, gru_weights_from_torch
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import GRUOptions, GRUWeights, gru
from jaxlstm.parity.litert import run_litert
from tests.cases import GRUCase

# float32 GRU steps whose matmuls and activations each framework orders differently: the
# observed differences are ~2e-7, so 1e-5 keeps a wide margin without hiding a wrong gate.
TOL = 1e-5
B, T, I, H = 3, 6, 4, 5
BUILTIN_GLUE = {"FULLY_CONNECTED", "ADD", "MUL", "SUB", "LOGISTIC", "TANH", "SPLIT", "UNPACK", "PACK", "CONCATENATION"}
# A predict export (the default) zeroes the state at each invoke with FILL, its batch read by
# SHAPE -> STRIDED_SLICE (-> CONCATENATION) from the input.
STATE_RESET = {"FILL", "SHAPE", "STRIDED_SLICE"}
ACTIVATIONS = {"tanh": "TANH", "sigmoid": "SIGMOID", "relu": "RELU", "linear": "NONE"}  # Keras -> TFLite
KERAS_ACTIVATIONS = {name: keras_name for keras_name, name in ACTIVATIONS.items()}


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


def _random(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _randomize(layer, rng):
    layer.set_weights([_random(rng, *w.shape) for w in layer.get_weights()])


def _gru_weights(layer) -> GRUWeights:
    kernel, recurrent_kernel, bias = layer.get_weights()
    return gru_weights_from_keras(kernel, recurrent_kernel, bias, layer.cell.reset_after)


def _gru_options(layer, time_major=False) -> GRUOptions:
    cell = layer.cell
    return GRUOptions(
        reset_after=cell.reset_after,
        activation=ACTIVATIONS[cell.activation.__name__],
        recurrent_activation=ACTIVATIONS[cell.recurrent_activation.__name__],
        time_major=time_major,
    )


def _opcodes(data: bytes) -> set[str]:
    """Operator names read straight from the flatbuffer with LiteRT's schema module."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    return {names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes}


def _assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=TOL, rtol=0)


def _check_jax_and_litert(model, x, expected):
    """The Model (JAX) and its exported .tflite (LiteRT) both match `expected`."""
    (y,) = model(x)
    _assert_close(y, expected)
    data = jaxlstm.export_tflite(model)
    assert _opcodes(data) <= BUILTIN_GLUE | STATE_RESET
    ((y_litert,),) = run_litert(data, [x])
    _assert_close(y_litert, expected)
    return data


# ----------------------------------------------------------------------------- one layer


SIZES = GRUCase(batch=B, time=T, n_input=I, n_units=H)
RESET_BEFORE = SIZES.replace(reset_after=False, recurrent_bias=False)  # Keras' reset_after=False: one bias
CASES = [
    SIZES,
    RESET_BEFORE,
    SIZES.replace(reverse=True, return_sequences=False),
    RESET_BEFORE.replace(reverse=True),
    SIZES.replace(activation="RELU", recurrent_activation="TANH"),
    RESET_BEFORE.replace(activation="NONE", return_sequences=False),
]
# add_gru(runtime_recurrent_weights=True) keeps the recurrent weights as runtime tensors.
RUNTIME_WEIGHTS = [pytest.param(case, False, id=str(case)) for case in CASES] + [
    pytest.param(RESET_BEFORE, True, id=f"{RESET_BEFORE}_runtime_weights")
]


@pytest.mark.parametrize("case, runtime_recurrent_weights", RUNTIME_WEIGHTS)
def test_keras3_gru_exports_to_builtin_ops(case, runtime_recurrent_weights, keras, rng):
    layer = keras.layers.GRU(
        H,
        reset_after=case.reset_after,
        go_backwards=case.reverse,
        return_sequences=case.return_sequences,
        activation=KERAS_ACTIVATIONS[case.activation],
        recurrent_activation=KERAS_ACTIVATIONS[case.recurrent_activation],
    )
    layer.build((None, T, I))
    _randomize(layer, rng)
    x = _random(rng, B, T, I, scale=1.0)
    builder = ModelBuilder()
    inp = builder.add_input("input", (-1, T, I))  # dynamic batch: LiteRT resizes to B
    out = builder.add_gru(
        inp,
        _gru_weights(layer),
        _gru_options(layer),
        reverse=case.reverse,
        return_sequences=case.return_sequences,
        runtime_recurrent_weights=runtime_recurrent_weights,
    )
    _check_jax_and_litert(builder.build([out]), x, np.asarray(layer(x)))


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_tf_keras_time_major_gru(reset_after, rng):
    tf_keras = pytest.importorskip("tf_keras")
    layer = tf_keras.layers.GRU(H, reset_after=reset_after, time_major=True, return_sequences=True)
    layer.build((T, B, I))
    _randomize(layer, rng)
    x = _random(rng, T, B, I, scale=1.0)
    builder = ModelBuilder()
    inp = builder.add_input("input", (T, B, I))
    out = builder.add_gru(inp, _gru_weights(layer), _gru_options(layer, time_major=True))
    _check_jax_and_litert(builder.build([out]), x, layer(tf_keras.backend.constant(x)).numpy())


# ----------------------------------------------------------------------------- stacks


def test_bidirectional_then_stacked_gru_and_dense(keras, rng):
    """Bidirectional(GRU) -> GRU -> Dense: bidirectional = two unrolled directions + CONCATENATION."""
    L = keras.layers
    net = keras.Sequential(
        [
            keras.Input((T, I)),
            L.Bidirectional(L.GRU(H, return_sequences=True)),
            L.GRU(H, reset_after=False),
            L.Dense(3),
        ]
    )
    for layer in net.layers:
        for sub in (layer.forward_layer, layer.backward_layer) if isinstance(layer, L.Bidirectional) else (layer,):
            _randomize(sub, rng)
    x = _random(rng, B, T, I, scale=1.0)
    bidirectional, gru, dense = net.layers
    builder = ModelBuilder()
    inp = builder.add_input("input", (-1, T, I))
    forward, backward = bidirectional.forward_layer, bidirectional.backward_layer
    fw = builder.add_gru(inp, _gru_weights(forward), _gru_options(forward), name="fw")
    bw = builder.add_gru(inp, _gru_weights(backward), _gru_options(backward), reverse=True, keep_order=True, name="bw")
    h = builder.add_concatenation([fw, bw], axis=-1)
    h = builder.add_gru(h, _gru_weights(gru), _gru_options(gru), return_sequences=False, name="gru")
    kernel, bias = dense.get_weights()
    y = builder.add_fully_connected(h, kernel.T, bias)
    _check_jax_and_litert(builder.build([y]), x, np.asarray(net(x)))


# ----------------------------------------------------------------------------- state


def _keras_gru(keras, rng, **kwargs):
    layer = keras.layers.GRU(H, return_sequences=True, **kwargs)
    layer.build((None, 2 * T, I))
    _randomize(layer, rng)
    return layer


def test_stateful_export_streams_chunks_like_one_long_sequence(keras, rng):
    """Two invokes on consecutive chunks = Keras on the whole sequence; reset restarts it."""
    from ai_edge_litert.interpreter import Interpreter

    layer = _keras_gru(keras, rng)
    x = _random(rng, B, 2 * T, I, scale=1.0)
    expected = np.asarray(layer(x))
    builder = ModelBuilder(batch_size=B)
    inp = builder.add_input("input", (B, T, I))
    model = builder.build([builder.add_gru(inp, _gru_weights(layer), _gru_options(layer))])

    state = model.init_state()
    for k in range(2):  # JAX: the state returned by apply carries over
        (y,), state = model.apply(model.params, state, x[:, k * T : (k + 1) * T])
        _assert_close(y, expected[:, k * T : (k + 1) * T])

    data = jaxlstm.export_tflite(model, stateful=True)
    assert _opcodes(data) <= BUILTIN_GLUE
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    (inp_detail,), (out_detail,) = interpreter.get_input_details(), interpreter.get_output_details()
    for k in (0, 1, "reset"):
        chunk = 0 if k == "reset" else k
        if k == "reset":
            interpreter.reset_all_variables()
        interpreter.set_tensor(inp_detail["index"], x[:, chunk * T : (chunk + 1) * T])
        interpreter.invoke()
        _assert_close(interpreter.get_tensor(out_detail["index"]), expected[:, chunk * T : (chunk + 1) * T])


def test_stateless_export_starts_every_invoke_from_zero(keras, rng):
    layer = _keras_gru(keras, rng)
    x = _random(rng, B, T, I, scale=1.0)
    builder = ModelBuilder()
    inp = builder.add_input("input", (-1, T, I))
    model = builder.build([builder.add_gru(inp, _gru_weights(layer), _gru_options(layer))])
    first, second = run_litert(jaxlstm.export_tflite(model), [x], invocations=2, reset=False)
    np.testing.assert_array_equal(second[0], first[0])
    _assert_close(first[0], np.asarray(layer(x)))


# ----------------------------------------------------------------------------- round trips


def test_imported_export_runs_the_same_graph_in_jax(rng):
    """load_tflite(export_tflite(m)) is the same Model: float and dynamic-range int8."""
    weights = gru_weights_from_torch(
        _random(rng, 3 * H, I), _random(rng, 3 * H, H), _random(rng, 3 * H), _random(rng, 3 * H)
    )
    builder = ModelBuilder(batch_size=B)
    inp = builder.add_input("input", (B, T, I))
    model = builder.build([builder.add_gru(inp, weights, GRUOptions())])
    x = _random(rng, B, T, I, scale=1.0)
    for quantize in (None, "dynamic"):
        for stateful in (False, True):
            data = jaxlstm.export_tflite(model, quantize=quantize, quantize_min_elements=0, stateful=stateful)
            imported = jaxlstm.load_tflite(data)
            assert imported.stateful is stateful
            # Builtin kernels: XNNPACK quantizes hybrid FULLY_CONNECTED inputs asymmetrically
            # whatever the op says (tests/tflite/test_litert.py).
            ((expected,),) = run_litert(data, [x], xnnpack=False)
            _assert_close(imported(x)[0], expected)
    _assert_close(model(x)[0], jaxlstm.load_tflite(jaxlstm.export_tflite(model))(x)[0])


# ----------------------------------------------------------------------------- errors


def test_add_gru_errors_name_the_problem(rng):
    weights = gru_weights_from_torch(_random(rng, 3 * H, I), _random(rng, 3 * H, H))
    builder = ModelBuilder()
    expected = r"input_to_update_weights has shape \(5, 4\), expected \(n_units=5, n_input=3\)"
    with pytest.raises(ValueError, match=expected):
        builder.add_gru(builder.add_input("b", (1, T, 3)), weights, GRUOptions())
    with pytest.raises(ValueError, match="activation='SOFTPLUS' is not supported"):
        builder.add_gru(builder.add_input("c", (1, T, I)), weights, GRUOptions(activation="SOFTPLUS"))


def test_dynamic_length_runs_in_jax_and_export_asks_for_time_steps(rng):
    """The GRU operator runs at any length; the export unrolls it over `time_steps`, and the
    unrolled file takes exactly that many steps (a clear ValueError otherwise)."""
    weights = gru_weights_from_torch(_random(rng, 3 * H, I), _random(rng, 3 * H, H))
    builder = ModelBuilder()
    model = builder.build([builder.add_gru(builder.add_input("input", (-1, -1, I)), weights, GRUOptions())])
    for time in (2, 9):
        x = _random(rng, B, time, I, scale=1.0)
        _assert_close(model(x)[0], gru(x, weights)[0])
    with pytest.raises(ValueError, match=r"dynamic time dimension .* export_tflite\(\.\.\., time_steps=T\)"):
        jaxlstm.export_tflite(model)
    unrolled = jaxlstm.load_tflite(jaxlstm.export_tflite(model, time_steps=T))
    assert "GRU" not in unrolled.opcodes and unrolled.tensors[unrolled.inputs[0]].shape == (-1, T, I)
    message = r"input 'input' has shape \[-1, 6, 4\] .* got an array of shape \(3, 5, 4\): 5 time steps, expected 6"
    with pytest.raises(ValueError, match=message):
        unrolled(_random(rng, B, T - 1, I))
