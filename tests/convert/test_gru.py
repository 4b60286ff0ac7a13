"""GRU layers -> the model's GRU operator (`ModelBuilder.add_gru`), unrolled into builtin
operators on export: Keras 3, tf_keras, PyTorch and flax GRUs match their framework's own
forward pass in JAX and, after export, in the LiteRT interpreter; the .tflite holds only
builtin operators (no WHILE, no custom ops)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import numpy as np
import pytest

from jaxlstm import export_tflite
from jaxlstm.convert import from_flax, from_keras, from_torch
from jaxlstm.parity.litert import run_litert

from ._helpers import assert_outputs_close, tflite_opcodes

BATCH, TIME, N_INPUT, HIDDEN = 2, 5, 3, 4
# An unrolled GRU and the converters' glue (merges, Dense, softmax): builtin operators only.
GRU_GRAPH_OPS = {
    "FULLY_CONNECTED",
    "ADD",
    "MUL",
    "SUB",
    "LOGISTIC",
    "TANH",
    "SPLIT",
    "UNPACK",
    "PACK",
    "CONCATENATION",
    "SOFTMAX",
    # the predict export's state reset: FILL, its dims from SHAPE -> STRIDED_SLICE of the input
    "FILL",
    "SHAPE",
    "STRIDED_SLICE",
}


def _x(time_major: bool = False) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, N_INPUT)).astype(np.float32)
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)) if time_major else x


def _random_weights(shapes, seed: int = 1) -> list[np.ndarray]:
    """Seeded normal(0, 0.5) values, so zero-initialized biases are exercised too."""
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=0.5, size=s).astype(np.float32) for s in shapes]


def assert_gru_converted_matches(model, x: np.ndarray, expected: list) -> None:
    """`model` matches the source in JAX and in LiteRT, and exports to builtin operators only."""
    assert_outputs_close(model(x), expected)
    data = export_tflite(model)
    assert set(tflite_opcodes(data)) <= GRU_GRAPH_OPS, tflite_opcodes(data)
    (outputs,) = run_litert(data, [x])
    assert_outputs_close(outputs, expected)


# ----------------------------------------------------------------------------- Keras 3


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def _gru(keras, units: int, **kwargs):
    """L.GRU with unroll=True: the same math as Keras' scan, much faster eagerly."""
    return keras.layers.GRU(units, unroll=True, **kwargs)


def _keras_sequential(keras, *layers):
    model = keras.Sequential([keras.Input((TIME, N_INPUT)), *layers])
    model.set_weights(_random_weights([w.shape for w in model.get_weights()]))
    return model


def _keras_outputs(model, x) -> list[np.ndarray]:
    y = model(x)
    return [np.asarray(v) for v in (y if isinstance(y, (list, tuple)) else [y])]


KERAS_CASES = [
    pytest.param(lambda k: [_gru(k, 4, return_sequences=True)], id="gru_seq"),
    pytest.param(
        lambda k: [_gru(k, 4, go_backwards=True, return_sequences=True, activation="relu")],
        id="gru_go_backwards_seq_relu",
    ),
    pytest.param(
        lambda k: [_gru(k, 4, go_backwards=True, use_bias=False, reset_after=False)],
        id="gru_reset_before_go_backwards_no_bias_last",
    ),
    pytest.param(lambda k: [k.layers.Bidirectional(_gru(k, 3), merge_mode="sum")], id="bidi_sum_last"),
    pytest.param(
        lambda k: [k.layers.Bidirectional(_gru(k, 3, reset_after=False, return_sequences=True), merge_mode=None)],
        id="bidi_reset_before_two_outputs",
    ),
    pytest.param(
        lambda k: [
            k.layers.Bidirectional(
                _gru(k, 4, return_sequences=True),
                merge_mode="ave",
                backward_layer=_gru(k, 4, go_backwards=True, return_sequences=True),
            )
        ],
        id="bidi_ave_backward_layer",
    ),
    pytest.param(
        lambda k: [
            k.layers.Bidirectional(_gru(k, 3, return_sequences=True)),
            _gru(k, 4),
            k.layers.Dense(2, activation="softmax"),
        ],
        id="stacked_bidi_concat_gru_dense",
    ),
]


@pytest.mark.parametrize("layers", KERAS_CASES)
def test_keras3_gru_matches_keras(keras, layers):
    model = _keras_sequential(keras, *layers(keras))
    x = _x()
    assert_gru_converted_matches(from_keras(model, batch_size=BATCH), x, _keras_outputs(model, x))


def test_keras3_gru_file_matches_live_model(keras, tmp_path):
    """The .keras reader finds GRU weights under their h5 names (gru, gru_1, bidirectional)."""
    model = _keras_sequential(
        keras,
        _gru(keras, 4, return_sequences=True),
        _gru(keras, 3, return_sequences=True, reset_after=False),
        keras.layers.Bidirectional(_gru(keras, 2)),
    )
    path = tmp_path / "gru.keras"
    model.save(path)
    x = _x()
    assert_outputs_close(from_keras(path, batch_size=BATCH)(x), _keras_outputs(model, x))


def test_keras3_gru_with_dynamic_time_runs_in_jax_and_exports_with_time_steps(keras):
    layer = _gru(keras, 3, return_sequences=True)
    x = _x()
    expected = [np.asarray(layer(x))]
    model = from_keras(layer)
    assert_outputs_close(model(x), expected)
    assert_outputs_close(model(x[:, :2]), [np.asarray(layer(x[:, :2]))])
    with pytest.raises(ValueError, match=r"time_steps=T"):
        export_tflite(model)
    assert_gru_converted_matches(from_keras(layer, batch_size=BATCH, time_steps=TIME), x, expected)


def test_keras3_time_steps_contradicting_the_model_raise_value_error(keras):
    with pytest.raises(ValueError, match="time_steps=7"):
        from_keras(_keras_sequential(keras, _gru(keras, 2)), time_steps=7)


@pytest.mark.parametrize(
    "layer,feature",
    [
        pytest.param(lambda k: _gru(k, 2, recurrent_activation="hard_sigmoid"), "'hard_sigmoid'", id="hard_sigmoid"),
        pytest.param(lambda k: _gru(k, 2, activation="elu"), "'elu'", id="elu"),
    ],
)
def test_keras3_gru_unsupported_activation_raises(keras, layer, feature):
    with pytest.raises(NotImplementedError, match="Workaround") as error:
        from_keras(_keras_sequential(keras, layer(keras)))
    assert feature in str(error.value)


# ----------------------------------------------------------------------------- tf_keras


def _tf_keras_cases():
    yield pytest.param(
        lambda L: [
            L.GRU(4, time_major=True, return_sequences=True),
            L.GRU(3, time_major=True, go_backwards=True, reset_after=False),
        ],
        True,
        id="time_major_stack",
    )
    yield pytest.param(
        lambda L: [L.Bidirectional(L.GRU(3, time_major=True, return_sequences=True))], True, id="time_major_bidi_concat"
    )
    yield pytest.param(
        lambda L: [L.Bidirectional(L.GRU(3, reset_after=False), merge_mode="mul")],
        False,
        id="bidi_reset_before_mul_last",
    )


@pytest.mark.parametrize("layers,time_major", _tf_keras_cases())
def test_tf_keras_gru_matches_tf_keras(layers, time_major):
    tf_keras = pytest.importorskip("tf_keras")
    # time-major: Keras' "batch" axis is time, so the declared batch_input_shape is [T, B, D].
    shape = (TIME, BATCH, N_INPUT) if time_major else (BATCH, TIME, N_INPUT)
    model = tf_keras.Sequential([tf_keras.layers.InputLayer(batch_input_shape=shape), *layers(tf_keras.layers)])
    model.set_weights(_random_weights([w.shape for w in model.get_weights()], seed=3))
    x = _x(time_major)
    converted = from_keras(model, batch_size=BATCH)
    assert converted.tensors[converted.inputs[0]].shape == shape
    assert_gru_converted_matches(converted, x, [model(x).numpy()])


# ----------------------------------------------------------------------------- PyTorch


TORCH_CASES = [
    pytest.param(dict(), id="time_major"),
    pytest.param(dict(num_layers=2, batch_first=True), id="2layers_batch_first"),
    pytest.param(dict(num_layers=2, bidirectional=True), id="bidi_2layers_time_major"),
    pytest.param(dict(bidirectional=True, batch_first=True, bias=False), id="bidi_batch_first_no_bias"),
]


def _torch_gru(**kwargs):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.GRU(N_INPUT, HIDDEN, **kwargs)
    with torch.no_grad():  # randomize the biases too (torch initializes them uniformly already)
        for p in module.parameters():
            p.mul_(2.0)
    return torch, module


def _torch_output(torch, module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


@pytest.mark.parametrize("kwargs", TORCH_CASES)
def test_torch_gru_matches_torch(kwargs):
    torch, module = _torch_gru(**kwargs)
    x = _x(time_major=not module.batch_first)
    converted = from_torch(module, batch_size=BATCH, time_steps=TIME)
    assert_gru_converted_matches(converted, x, [_torch_output(torch, module, x)])


def test_torch_gru_state_dict_matches_module():
    torch, module = _torch_gru(num_layers=2, bidirectional=True, batch_first=True)
    x = _x()
    converted = from_torch(module.state_dict(), batch_first=True, batch_size=BATCH, time_steps=TIME)
    assert_outputs_close(converted(x), [_torch_output(torch, module, x)])


def test_torch_gru_without_time_steps_runs_at_any_length():
    torch, module = _torch_gru(batch_first=True)
    model = from_torch(module)
    for batch, time in ((1, 2), (3, 9)):
        x = np.random.default_rng(time).normal(size=(batch, time, N_INPUT)).astype(np.float32)
        assert_outputs_close(model(x), [_torch_output(torch, module, x)])


# ----------------------------------------------------------------------------- flax


@pytest.fixture(scope="module")
def nn():
    return pytest.importorskip("flax.linen")


def _randomized(params):
    leaves, tree = jax.tree_util.tree_flatten(params)
    return jax.tree_util.tree_unflatten(tree, _random_weights([np.shape(v) for v in leaves], seed=4))


LINEN_CASES = [
    pytest.param(lambda nn: nn.RNN(nn.GRUCell(HIDDEN)), False, id="rnn"),
    pytest.param(
        lambda nn: nn.RNN(nn.GRUCell(HIDDEN, activation_fn=jax.nn.relu), reverse=True, keep_order=True),
        False,
        id="rnn_relu_reverse_keep_order",
    ),
    pytest.param(lambda nn: nn.RNN(nn.GRUCell(HIDDEN), time_major=True), True, id="rnn_time_major"),
    pytest.param(
        lambda nn: nn.Bidirectional(nn.RNN(nn.GRUCell(HIDDEN)), nn.RNN(nn.GRUCell(3))), False, id="bidirectional"
    ),
    pytest.param(lambda nn: nn.GRUCell(HIDDEN), False, id="bare_cell"),
]


@pytest.mark.parametrize("make,time_major", LINEN_CASES)
def test_linen_gru_matches_flax(nn, make, time_major):
    module = make(nn)
    x = _x(time_major)
    if isinstance(module, nn.RNNCellBase):  # a bare cell converts as nn.RNN(cell)
        wrapper = nn.RNN(module)
        variables = _randomized(wrapper.init(jax.random.key(0), x))
        expected = wrapper.apply(variables, x)
        variables = {"params": variables["params"]["cell"]}
    else:
        variables = _randomized(module.init(jax.random.key(0), x))
        expected = module.apply(variables, x)
    converted = from_flax(module, variables, batch_size=BATCH, time_steps=TIME)
    assert_gru_converted_matches(converted, x, [expected])


@pytest.mark.parametrize("bidirectional", [False, True], ids=["rnn", "bidirectional"])
def test_nnx_gru_matches_flax(bidirectional):
    from flax import nnx

    rngs = nnx.Rngs(0)
    module = nnx.RNN(nnx.GRUCell(N_INPUT, HIDDEN, rngs=rngs))
    if bidirectional:
        module = nnx.Bidirectional(module, nnx.RNN(nnx.GRUCell(N_INPUT, 3, rngs=rngs)), rngs=rngs)
    nnx.update(module, _randomized(nnx.state(module, nnx.Param)))
    x = _x()
    assert_gru_converted_matches(from_flax(module, batch_size=BATCH, time_steps=TIME), x, [module(x)])


def test_flax_gru_hard_sigmoid_gate_raises(nn):
    module = nn.RNN(nn.GRUCell(HIDDEN, gate_fn=jax.nn.hard_sigmoid))
    variables = module.init(jax.random.key(0), _x())
    with pytest.raises(NotImplementedError, match="gate_fn"):
        from_flax(module, variables, time_steps=TIME)
