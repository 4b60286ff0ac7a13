"""`jaxlstm.nn.GRU` / `BidirectionalGRU`: given the same weights, the layers match PyTorch's
``nn.GRU`` and Keras' ``GRU``, and their exported (unrolled) models match in JAX and in the
LiteRT interpreter."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlstm.nn import GRU, BidirectionalGRU, Sequential
from jaxlstm.ops import GRU_GATES
from jaxlstm.tflite import export_tflite

from ._layers import SAME_MATH_TOL, TOL, B, I, T

torch = pytest.importorskip("torch")

H = 5
LAYOUTS = pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])


def _x(time_major: bool = False, n_input: int = I) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(B, T, n_input)).astype(np.float32)
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)) if time_major else x


def _randomized(layer, seed: int = 1):
    """`layer` with seeded normal(0, 0.5) parameters (zero-initialized biases exercised too)."""
    state = nnx.state(layer, nnx.Param)
    leaves, tree = jax.tree_util.tree_flatten(state)
    rng = np.random.default_rng(seed)
    nnx.update(
        layer,
        jax.tree_util.tree_unflatten(
            tree, [jnp.asarray(rng.normal(scale=0.5, size=v.shape), jnp.float32) for v in leaves]
        ),
    )
    return layer


def _packed(weights, template: str, order: str = "rzn") -> np.ndarray:
    """A framework's packed tensor: the per-gate fields named by `template` stacked in `order`."""
    gate = dict(zip("zrn", GRU_GATES))
    return np.concatenate([np.asarray(getattr(weights, template.format(gate[letter]))) for letter in order])


def _torch_gru(directions: list, *, bidirectional: bool, time_major: bool = False):
    """An nn.GRU holding `directions` (one `GRUWeights` per layer and direction, in torch's order)."""
    n_layers = len(directions) // (2 if bidirectional else 1)
    module = torch.nn.GRU(
        directions[0].n_input, H, num_layers=n_layers, bidirectional=bidirectional, batch_first=not time_major
    )
    suffixes = [f"_l{k}{s}" for k in range(n_layers) for s in (("", "_reverse") if bidirectional else ("",))]
    with torch.no_grad():
        for w, suffix in zip(directions, suffixes):
            for name, template in (
                ("weight_ih", "input_to_{}_weights"),
                ("weight_hh", "recurrent_to_{}_weights"),
                ("bias_ih", "{}_gate_bias"),
                ("bias_hh", "recurrent_{}_gate_bias"),
            ):
                getattr(module, name + suffix).copy_(torch.from_numpy(_packed(w, template)))
    return module


def _torch_output(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


def _directions(layer) -> list:
    return list(layer.weights()) if isinstance(layer, BidirectionalGRU) else [layer.weights()]


def _assert_close(actual, expected, atol=TOL):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=0)


def _assert_exported_matches(layer_or_stack, x, expected, time_major):
    """`to_model` in JAX and its .tflite in LiteRT both give `expected`."""
    from jaxlstm.parity.litert import run_litert

    model = layer_or_stack.to_model(batch_size=B, time_steps=T)
    assert model.tensors[model.inputs[0]].shape == ((T, B, I) if time_major else (B, T, I))
    (y,) = model(x)
    _assert_close(y, expected)
    ((y_litert,),) = run_litert(export_tflite(model), [x])
    _assert_close(y_litert, expected)


@LAYOUTS
@pytest.mark.parametrize("cls", [GRU, BidirectionalGRU], ids=["gru", "bidirectional_gru"])
def test_layer_and_export_match_torch(cls, time_major):
    layer = _randomized(cls(I, H, time_major=time_major, rngs=nnx.Rngs(0)))
    x = _x(time_major)
    expected = _torch_output(
        _torch_gru(_directions(layer), bidirectional=cls is BidirectionalGRU, time_major=time_major), x
    )
    _assert_close(layer(x), expected)
    _assert_exported_matches(layer, x, expected, time_major)


def test_reset_before_relu_matches_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    layer = _randomized(GRU(I, H, reset_after=False, activation="RELU", rngs=nnx.Rngs(0)))
    w = layer.weights()
    assert w.recurrent_update_gate_bias is None  # Keras reset_after=False has one bias
    reference = keras.layers.GRU(H, reset_after=False, activation="relu", return_sequences=True, unroll=True)
    reference.build((None, T, I))
    reference.set_weights(
        [
            _packed(w, "input_to_{}_weights", "zrn").T,
            _packed(w, "recurrent_to_{}_weights", "zrn").T,
            _packed(w, "{}_gate_bias", "zrn"),
        ]
    )
    x = _x()
    expected = np.asarray(reference(x))
    _assert_close(layer(x), expected)
    _assert_exported_matches(layer, x, expected, time_major=False)


def test_stacked_bidirectional_matches_two_layer_torch_gru():
    rngs = nnx.Rngs(0)
    stack = Sequential(BidirectionalGRU(I, H, rngs=rngs), BidirectionalGRU(2 * H, H, rngs=rngs))
    _randomized(stack)
    x = _x()
    directions = [w for layer in stack.layers for w in layer.weights()]
    expected = _torch_output(_torch_gru(directions, bidirectional=True), x)
    _assert_close(stack(x), expected)
    _assert_exported_matches(stack, x, expected, time_major=False)


@pytest.mark.parametrize("cls", [GRU, BidirectionalGRU], ids=["gru", "bidirectional_gru"])
def test_seq_lengths_match_torch_on_each_row_prefix(cls):
    """Row b runs its first seq_lengths[b] steps (outputs zero after them; the backward
    direction starts at the row's last valid step), as torch on the unpadded row."""
    layer = _randomized(cls(I, H, rngs=nnx.Rngs(0)))
    module = _torch_gru(_directions(layer), bidirectional=cls is BidirectionalGRU)
    x, lengths = _x(), np.array([T, 2, 4])
    y, _ = layer(x, seq_lengths=jnp.asarray(lengths), return_state=True)
    for b, n in enumerate(lengths):
        _assert_close(y[b, :n], _torch_output(module, x[b : b + 1, :n])[0])
        _assert_close(y[b, n:], 0.0)


def test_remat_gives_the_same_outputs_and_gradients():
    layer = _randomized(GRU(I, H, rngs=nnx.Rngs(0)))
    chunked = _randomized(GRU(I, H, remat=True, remat_chunk_size=4, rngs=nnx.Rngs(0)))
    x = jnp.asarray(_x())

    def loss(module):
        return jnp.sum(module(x) ** 2)

    _assert_close(chunked(x), layer(x), atol=SAME_MATH_TOL)
    grads, chunked_grads = (nnx.grad(loss)(m) for m in (layer, chunked))
    for g, g_chunked in zip(jax.tree.leaves(grads), jax.tree.leaves(chunked_grads)):
        assert np.all(np.isfinite(g))
        _assert_close(g_chunked, g, atol=SAME_MATH_TOL)


def test_any_length_in_jax_and_export_asks_for_time_steps():
    """to_model needs no length (the GRU operator runs at any length in JAX); the export
    unrolls it and asks for one; the file then runs at any batch after resizing the input."""
    from jaxlstm.parity.litert import run_litert

    layer = _randomized(GRU(I, H, rngs=nnx.Rngs(0)))
    model = layer.to_model()
    assert model.opcodes == ["GRU"]
    for time in (3, 11):
        x = np.random.default_rng(time).normal(size=(B, time, I)).astype(np.float32)
        _assert_close(model(x)[0], layer(x))
    with pytest.raises(ValueError, match=r"time_steps=T"):
        export_tflite(layer)
    x = np.concatenate([_x(), _x()[:1]])  # batch B + 1
    ((y,),) = run_litert(export_tflite(layer, time_steps=T), [x])
    _assert_close(y, layer(x))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        pytest.param(dict(activation="GELU"), "activation='GELU'", id="activation"),
        pytest.param(dict(recurrent_activation="HARD_SIGMOID"), "recurrent_activation", id="recurrent_activation"),
        pytest.param(dict(units=0), "units=0", id="units"),
    ],
)
def test_bad_options_raise_value_error(kwargs, message):
    kwargs = {"units": H, **kwargs}
    with pytest.raises(ValueError, match=message):
        GRU(I, rngs=nnx.Rngs(0), **kwargs)
