"""`jaxlstm.ops.gru` against each framework's own GRU: Keras 3, tf_keras, PyTorch, flax linen and nnx."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.convert import gru_weights_from_flax, gru_weights_from_keras, gru_weights_from_torch
from jaxlstm.ops import GRUOptions, GRUWeights, gru, gru_cell
from jaxlstm.reference import np_gru
from tests.cases import GRUCase

# float32 through ~10 steps of matmuls and tanh/sigmoid computed in a different order by
# each framework: observed differences are ~1e-7, so 1e-5 leaves two decades of margin.
TOL = 1e-5
B, T, I, H = 2, 7, 3, 4


def _random(rng, *shape, scale=0.6):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _keras3():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return pytest.importorskip("keras")


# ----------------------------------------------------------------------------- Keras


SIZES = GRUCase(batch=B, time=T, n_input=I, n_units=H)
KERAS_CASES = [
    SIZES,
    SIZES.replace(reset_after=False, recurrent_bias=False),
    SIZES.replace(reverse=True),
    SIZES.replace(reset_after=False, recurrent_bias=False, reverse=True, initial_state=True),
    SIZES.replace(bias=False),
    SIZES.replace(activation="RELU", initial_state=True),
]
KERAS_ACTIVATIONS = {"TANH": "tanh", "RELU": "relu"}  # TFLite name -> Keras name


def _randomize_keras(layer, rng):
    layer.set_weights([_random(rng, *w.shape) for w in layer.get_weights()])
    weights = layer.get_weights()
    return weights if len(weights) == 3 else weights + [None]


def _check_against_keras_layer(layer, case, x, h0, rng, as_tensor=np.asarray):
    kernel, recurrent_kernel, bias = _randomize_keras(layer, rng)
    keras_x = np.swapaxes(x, 0, 1) if case.time_major else x
    outputs = layer(as_tensor(keras_x), initial_state=None if h0 is None else [as_tensor(h0)])
    expected_y, expected_h = (np.asarray(o) for o in outputs)
    weights = gru_weights_from_keras(kernel, recurrent_kernel, bias, case.reset_after)
    y, h = gru(keras_x, weights, h0, options=case.options, reverse=case.reverse)
    np.testing.assert_allclose(y, expected_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, expected_h, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", KERAS_CASES, ids=str)
def test_matches_keras3(case, rng):
    keras = _keras3()
    layer = keras.layers.GRU(
        H,
        reset_after=case.reset_after,
        go_backwards=case.reverse,
        use_bias=case.bias,
        activation=KERAS_ACTIVATIONS[case.activation],
        return_sequences=True,
        return_state=True,
    )
    x = _random(rng, B, T, I, scale=1.0)
    layer.build(x.shape)
    h0 = _random(rng, B, H) if case.initial_state else None
    _check_against_keras_layer(layer, case, x, h0, rng)


@pytest.mark.parametrize(
    "case", [c.replace(time_major=tm) for tm in (False, True) for c in (KERAS_CASES[0], KERAS_CASES[3])], ids=str
)
def test_matches_tf_keras(case, rng):
    tf_keras = pytest.importorskip("tf_keras")
    layer = tf_keras.layers.GRU(
        H,
        reset_after=case.reset_after,
        go_backwards=case.reverse,
        time_major=case.time_major,
        return_sequences=True,
        return_state=True,
    )
    x = _random(rng, B, T, I, scale=1.0)
    layer.build(case.input_shape)
    h0 = _random(rng, B, H) if case.initial_state else None
    _check_against_keras_layer(layer, case, x, h0, rng, tf_keras.backend.constant)


def test_from_keras_rejects_bias_of_the_other_layout():
    kernel, recurrent = np.zeros((I, 3 * H), np.float32), np.zeros((H, 3 * H), np.float32)
    with pytest.raises(ValueError, match=r"bias has shape \(12,\).*reset_after=True"):
        gru_weights_from_keras(kernel, recurrent, np.zeros(3 * H, np.float32), reset_after=True)


# ----------------------------------------------------------------------------- PyTorch


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_matches_torch_stacked_bidirectional(batch_first, rng):
    """A 2-layer bidirectional nn.GRU = per layer gru(fw) ‖ gru(bw, reverse, keep_order)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    layers = 2
    net = torch.nn.GRU(I, H, num_layers=layers, bidirectional=True, batch_first=batch_first)
    x = _random(rng, B, T, I, scale=1.0)
    h0 = _random(rng, 2 * layers, B, H)
    source_x = x if batch_first else np.swapaxes(x, 0, 1)
    with torch.no_grad():
        expected_y, expected_h = (t.numpy() for t in net(torch.from_numpy(source_x), torch.from_numpy(h0)))
    params = {k: v.detach().numpy() for k, v in net.named_parameters()}
    options = GRUOptions(time_major=not batch_first)
    y, finals = jnp.asarray(source_x), []
    for k in range(layers):
        outs = []
        for d, suffix in enumerate(("", "_reverse")):
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            weights = gru_weights_from_torch(*(params[f"{n}_l{k}{suffix}"] for n in names))
            out, h = gru(y, weights, h0[2 * k + d], options=options, reverse=d == 1, keep_order=True)
            outs.append(out)
            finals.append(h)
        y = jnp.concatenate(outs, axis=-1)
    np.testing.assert_allclose(y, expected_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(np.stack(finals), expected_h, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- Flax


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse_keep_order"])
def test_matches_flax_linen(reverse, rng):
    nn = pytest.importorskip("flax.linen")
    rnn = nn.RNN(nn.GRUCell(features=H), reverse=reverse, keep_order=True, return_carry=True)
    x = _random(rng, B, T, I, scale=1.0)
    params = rnn.init(jax.random.key(0), x)
    params = jax.tree.map(lambda p: _random(rng, *p.shape), params)  # non-zero biases too
    expected_h, expected_y = rnn.apply(params, x)
    weights, options = gru_weights_from_flax(rnn.cell, params["params"]["cell"])
    y, h = gru(x, weights, options=options, reverse=reverse, keep_order=True)
    np.testing.assert_allclose(y, expected_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, expected_h, atol=TOL, rtol=0)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
def test_matches_flax_nnx(time_major, rng):
    """nnx.GRUCell has no hidden bias inside the reset product (unlike linen)."""
    nnx = pytest.importorskip("flax.nnx")
    cell = nnx.GRUCell(I, H, rngs=nnx.Rngs(0))
    cell.dense_i.bias[...] = _random(rng, 3 * H)
    rnn = nnx.RNN(cell, time_major=time_major, return_carry=True)
    x = _random(rng, T, B, I, scale=1.0) if time_major else _random(rng, B, T, I, scale=1.0)
    expected_h, expected_y = rnn(x)
    weights, options = gru_weights_from_flax(cell)
    assert weights.recurrent_candidate_gate_bias is None
    y, h = gru(x, weights, options=options.replace(time_major=time_major))
    np.testing.assert_allclose(y, expected_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, expected_h, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- NumPy reference

# float32 op vs the float64 reference loop over <= 7 steps: a few float32 ulps of O(1) values.
REFERENCE_TOL = 1e-5


REFERENCE = SIZES.replace(initial_state=True)
REFERENCE_CASES = [
    REFERENCE,  # Keras reset_after=True, PyTorch, flax linen
    REFERENCE.replace(reset_after=False, recurrent_bias=False),  # Keras reset_after=False
    REFERENCE.replace(reset_after=False, time_major=True),  # a recurrent bias with reset_after=False
    REFERENCE.replace(recurrent_bias=False, reverse=True, initial_state=False),  # flax nnx: no recurrent bias
    REFERENCE.replace(reverse=True, keep_order=True, time_major=True),  # PyTorch / Flax bidirectional
    REFERENCE.replace(activation="RELU", recurrent_activation="RELU_N1_TO_1"),
]


def _packed_weights(rng, case: GRUCase) -> GRUWeights:
    recurrent_bias = _random(rng, 3 * H) if case.recurrent_bias else None
    return gru_weights_from_torch(_random(rng, 3 * H, I), _random(rng, 3 * H, H), _random(rng, 3 * H), recurrent_bias)


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=str)
def test_gru_matches_the_numpy_reference(case: GRUCase, rng):
    weights = _packed_weights(rng, case)
    x = _random(rng, *((T, B, I) if case.time_major else (B, T, I)))
    h0 = _random(rng, B, H) if case.initial_state else None
    y, h = gru(x, weights, h0, options=case.options, reverse=case.reverse, keep_order=case.keep_order)
    flags = dict(time_major=case.time_major, reverse=case.reverse, keep_order=case.keep_order)
    y_ref, h_ref = np_gru.gru(x, weights, h0, **flags, **case.reference_options)
    np.testing.assert_allclose(y, y_ref, atol=REFERENCE_TOL, rtol=0)
    np.testing.assert_allclose(h, h_ref, atol=REFERENCE_TOL, rtol=0)


@pytest.mark.parametrize("case", REFERENCE_CASES[:3], ids=str)
def test_gru_cell_matches_the_reference_step_and_scans_to_gru(case: GRUCase, rng):
    """`gru_cell` is one `np_gru.gru_step` per batch row, and `lax.scan` of it is `gru`."""
    weights, options = _packed_weights(rng, case), case.options.replace(time_major=True)
    x, h0 = _random(rng, T, B, I), _random(rng, B, H)
    h1, y1 = gru_cell(h0, x[0], weights, options=options)
    expected = [np_gru.gru_step(x[0, b], h0[b], weights, **case.reference_options) for b in range(B)]
    np.testing.assert_allclose(h1, np.stack(expected), atol=REFERENCE_TOL, rtol=0)
    np.testing.assert_array_equal(y1, h1)
    h, y = jax.lax.scan(functools.partial(gru_cell, weights=weights, options=options), h0, x)
    y_op, h_op = gru(x, weights, h0, options=options)
    np.testing.assert_allclose(y, y_op, atol=1e-6, rtol=0)  # the same math, matmuls in another shape
    np.testing.assert_allclose(h, h_op, atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- the op itself


def _weights(rng, reset_after=True, n_input=I, units=H):
    bias = _random(rng, 2, 3 * units) if reset_after else _random(rng, 3 * units)
    return gru_weights_from_keras(_random(rng, n_input, 3 * units), _random(rng, units, 3 * units), bias, reset_after)


@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_jit_equals_eager_and_time_major_equals_batch_major(reset_after, rng):
    w, x, h0 = _weights(rng, reset_after), _random(rng, B, T, I), _random(rng, B, H)
    options = GRUOptions(reset_after=reset_after)
    y, h = gru(x, w, h0, options=options)
    with jax.disable_jit():
        y_eager, _ = gru(x, w, h0, options=options)
    y_tm, h_tm = gru(np.swapaxes(x, 0, 1), w, h0, options=options.replace(time_major=True))
    np.testing.assert_allclose(y_eager, y, atol=1e-6, rtol=0)  # same math, XLA may fuse differently
    np.testing.assert_allclose(np.swapaxes(y_tm, 0, 1), y, atol=1e-6, rtol=0)
    np.testing.assert_allclose(h_tm, h, atol=1e-6, rtol=0)


def test_reverse_order_conventions(rng):
    """keep_order puts each output at its input's index; without it, processing order."""
    w, x = _weights(rng), _random(rng, B, T, I)
    processing, h1 = gru(x, w, reverse=True)
    kept, _ = gru(x, w, reverse=True, keep_order=True)
    flipped, h3 = gru(x[:, ::-1], w)
    np.testing.assert_allclose(processing, flipped, atol=1e-6, rtol=0)
    np.testing.assert_allclose(kept, flipped[:, ::-1], atol=1e-6, rtol=0)
    np.testing.assert_allclose(h1, h3, atol=1e-6, rtol=0)


def test_gradients_are_finite_and_nonzero(rng):
    w, x = _weights(rng), _random(rng, B, T, I)
    grads = jax.grad(lambda w, x: jnp.sum(gru(x, w)[0] ** 2), argnums=(0, 1))(w, x)
    for leaf in jax.tree.leaves(grads):
        assert np.all(np.isfinite(leaf)) and np.any(leaf != 0)


def test_errors_name_the_tensor_and_shapes(rng):
    w = _weights(rng)
    expected = (
        r"gru: input has n_input=5 features \(shape \(2, 7, 5\)\) but input_to_update_weights is \(4, 3\): "
        r"the weights expect n_input=3"
    )
    with pytest.raises(ValueError, match=expected):
        gru(_random(rng, B, T, 5), w)
    expected = r"input_to_reset_weights has shape \(5, 3\), expected \(n_units=4, n_input=3\)"
    with pytest.raises(ValueError, match=expected):
        gru(_random(rng, B, T, I), w.replace(input_to_reset_weights=np.zeros((5, I), np.float32)))
    with pytest.raises(ValueError, match=r"gru: state has shape \(3, 4\), expected \(n_batch=2, n_units=4\)"):
        gru(_random(rng, B, T, I), w, _random(rng, 3, H))
    with pytest.raises(ValueError, match=r"gru_cell: state has shape \(3, 4\), expected \(n_batch=2, n_units=4\)"):
        gru_cell(_random(rng, 3, H), _random(rng, B, I), w)
    with pytest.raises(ValueError, match=r"recurrent_reset_gate_bias has shape \(5,\)"):
        gru(_random(rng, B, T, I), w.replace(recurrent_reset_gate_bias=np.zeros(5, np.float32)))
    with pytest.raises(ValueError, match="recurrent_activation='HARD_SIGMOID' is not supported"):
        gru(_random(rng, B, T, I), w, options=GRUOptions(recurrent_activation="HARD_SIGMOID"))
    with pytest.raises(TypeError, match="input has dtype int32"):
        gru(np.ones((B, T, I), np.int32), w)
