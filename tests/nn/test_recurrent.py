"""`jaxlstm.nn` recurrent layers: outputs (NumPy reference, PyTorch), init, options, seq_lengths, remat, gradients."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxlstm import export_tflite
from jaxlstm.convert import lstm_weights_from_torch
from jaxlstm.nn import LSTM, BidirectionalLSTM, SimpleRNN
from jaxlstm.reference import np_lstm

from ._layers import (
    BIDIRECTIONAL_CASES,
    LSTM_BASE,
    LSTM_CASES,
    RNN_BASE,
    RNN_CASES,
    SAME_MATH_TOL,
    TOL,
    B,
    I,
    T,
    inputs,
    make,
    reference,
)

# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("case", LSTM_CASES, ids=str)
def test_lstm_matches_reference(case):
    layer = make("lstm", case)
    x = inputs(case.time_major)
    y, (h, c) = layer(x, return_state=True)
    expected_y, (expected_h, expected_c) = reference("lstm", layer, x, case.time_major, **case.reference_options)
    np.testing.assert_allclose(y, expected_y, atol=TOL, rtol=0)
    np.testing.assert_allclose(h, expected_h, atol=TOL, rtol=0)
    np.testing.assert_allclose(c, expected_c, atol=TOL, rtol=0)


@pytest.mark.parametrize("case", BIDIRECTIONAL_CASES, ids=str)
def test_bidirectional_lstm_matches_reference(case):
    layer = make("bidirectional_lstm", case)
    x = inputs(case.time_major)
    expected, _ = reference("bidirectional_lstm", layer, x, case.time_major, **case.reference_options)
    np.testing.assert_allclose(layer(x), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["simple_rnn", "bidirectional_rnn"])
@pytest.mark.parametrize("case", RNN_CASES, ids=str)
def test_rnn_matches_reference(kind, case):
    layer = make(kind, case)
    x = inputs(case.time_major)
    expected, _ = reference(kind, layer, x, case.time_major)
    np.testing.assert_allclose(layer(x), expected, atol=TOL, rtol=0)


def test_initial_state_is_used():
    layer = make("lstm", LSTM_BASE.replace(projection=True, n_output=3))
    x = inputs()
    rng = np.random.default_rng(2)
    h0, c0 = rng.standard_normal((B, 3)).astype(np.float32), rng.standard_normal((B, 5)).astype(np.float32)
    expected, _, _ = np_lstm.unidirectional_sequence_lstm(x, layer.weights(), h0, c0)
    np.testing.assert_allclose(layer(x, (jnp.asarray(h0), jnp.asarray(c0))), expected, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- PyTorch


def _torch_module(name, **kwargs):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, name)(I, 5, batch_first=True, **kwargs)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    return torch, module


def _torch_lstm_weights(module, suffix=""):
    """PyTorch's packed (i, f, g, o) [4H, k] weights and two biases -> `LSTMWeights`."""
    p = dict(module.named_parameters())
    tensors = (p[f"{name}_l0{suffix}"] for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    return lstm_weights_from_torch(*tensors, weight_hr=p.get(f"weight_hr_l0{suffix}"))


def _load(layer, weights):
    """Writes op weights into a layer's like-named parameters."""
    for field in dataclasses.fields(weights):
        value = getattr(weights, field.name)
        if value is not None:
            getattr(layer, field.name)[...] = jnp.asarray(value)


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("proj_size", [0, 3], ids=["plain", "projection"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["unidirectional", "bidirectional"])
def test_lstm_matches_torch(bidirectional, proj_size):
    torch, module = _torch_module("LSTM", bidirectional=bidirectional, proj_size=proj_size)
    x = inputs()
    expected = module(torch.from_numpy(x))[0].detach().numpy()
    projection = proj_size or None
    rngs = nnx.Rngs(0)
    if bidirectional:
        layer = BidirectionalLSTM(I, 5, projection_size=projection, rngs=rngs)
        _load(layer.fw, _torch_lstm_weights(module))
        _load(layer.bw, _torch_lstm_weights(module, "_reverse"))
    else:
        layer = LSTM(I, 5, projection_size=projection, rngs=rngs)
        _load(layer, _torch_lstm_weights(module))
    np.testing.assert_allclose(layer(x), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_simple_rnn_matches_torch(nonlinearity):
    torch, module = _torch_module("RNN", nonlinearity=nonlinearity)
    x = inputs()
    expected = module(torch.from_numpy(x))[0].detach().numpy()
    layer = SimpleRNN(I, 5, activation=nonlinearity.upper(), rngs=nnx.Rngs(0))
    p = {n: v.detach().numpy() for n, v in module.named_parameters()}
    layer.input_weights[...] = p["weight_ih_l0"]
    layer.recurrent_weights[...] = p["weight_hh_l0"]
    layer.bias[...] = p["bias_ih_l0"] + p["bias_hh_l0"]
    np.testing.assert_allclose(layer(x), expected, atol=TOL, rtol=0)


# ----------------------------------------------------------------------------- parameters and init


@pytest.mark.parametrize("case", LSTM_CASES, ids=str)
def test_params_are_the_op_tensors(case):
    layer = LSTM(case.n_input, case.n_cell, **case.layer_kwargs, rngs=nnx.Rngs(0))
    params = {str(path[0]): v.shape for path, v in nnx.to_flat_state(nnx.state(layer, nnx.Param))}
    weights = layer.weights()
    present = {
        f.name: getattr(weights, f.name).shape
        for f in dataclasses.fields(weights)
        if getattr(weights, f.name) is not None
    }
    assert params == present
    assert weights.use_cifg == case.cifg
    assert weights.use_peephole == case.peephole
    assert weights.use_projection == case.projection
    assert weights.use_layer_norm == case.layer_norm


def test_init_is_keras_like():
    n_input, n_cell = 7, 16
    layer = LSTM(n_input, n_cell, rngs=nnx.Rngs(0))
    w = layer.weights()
    kernel = np.concatenate([getattr(w, f"input_to_{g}_weights") for g in ("input", "forget", "cell", "output")])
    recurrent = np.concatenate([getattr(w, f"recurrent_to_{g}_weights") for g in ("input", "forget", "cell", "output")])
    limit = np.sqrt(6 / (n_input + 4 * n_cell))  # glorot-uniform over the packed [n_input, 4 n_cell]
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    # Orthogonal packed recurrent kernel [n_output, 4 n_cell]: orthonormal rows.
    np.testing.assert_allclose(recurrent.T @ recurrent, np.eye(n_cell), atol=1e-5)
    np.testing.assert_array_equal(w.forget_gate_bias, np.ones(n_cell))
    for bias in (w.input_gate_bias, w.cell_gate_bias, w.output_gate_bias):
        np.testing.assert_array_equal(bias, np.zeros(n_cell))
    no_forget_bias = LSTM(n_input, n_cell, unit_forget_bias=False, rngs=nnx.Rngs(0)).weights()
    np.testing.assert_array_equal(no_forget_bias.forget_gate_bias, np.zeros(n_cell))
    again = LSTM(n_input, n_cell, rngs=nnx.Rngs(0)).weights()
    np.testing.assert_array_equal(again.input_to_cell_weights, w.input_to_cell_weights)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(proj_clip=1.0), ValueError, "proj_clip=1.0 needs projection_size"),
        (dict(use_projection_bias=True), ValueError, "needs projection_size"),
        (dict(cell_clip=-1.0), ValueError, "cell_clip=-1.0 must be >= 0"),
        (dict(activation="NONE"), ValueError, "activation='NONE'"),
        (dict(projection_size=0), ValueError, "projection_size=0"),
        (dict(remat_chunk_size=0), ValueError, "remat_chunk_size=0"),
    ],
    ids=[
        "proj_clip_without_projection",
        "projection_bias_without_projection",
        "negative_clip",
        "activation_none",
        "zero_projection",
        "zero_chunk",
    ],
)
def test_bad_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        LSTM(I, 5, **kwargs, rngs=nnx.Rngs(0))


def test_bidirectional_layer_norm_is_unsupported():
    with pytest.raises(NotImplementedError, match="no layer-norm inputs"):
        BidirectionalLSTM(I, 5, use_layer_norm=True, rngs=nnx.Rngs(0))


def test_bad_input_and_lengths():
    layer = LSTM(I, 5, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"input has shape \(3, 6, 2\), expected \[B, T, in_features\] with in_features=4"
    ):
        layer(jnp.ones((3, 6, 2)))
    with pytest.raises(ValueError, match=r"seq_lengths has shape \(2,\).*expected integers of shape \(n_batch=3,\)"):
        layer(jnp.ones((3, 6, 4)), seq_lengths=jnp.array([1, 2]))


# ----------------------------------------------------------------------------- seq_lengths


LENGTHS = np.array([6, 2, 4])


@pytest.mark.parametrize(
    "kind, remat",
    [("lstm", False), ("lstm", True), ("bidirectional_lstm", False), ("simple_rnn", True), ("bidirectional_rnn", True)],
    ids=lambda v: {False: "scan", True: "remat"}.get(v, v),
)
def test_seq_lengths_row_equals_unpadded_run(kind, remat):
    """Row b of a padded batch = the layer on that row's first seq_lengths[b] steps alone."""
    case = LSTM_BASE.replace(peephole=True, projection=True, n_output=3) if kind == "lstm" else None
    layer = make(kind, case, remat=remat, remat_chunk_size=4 if remat else None)
    x = inputs()
    y, state = layer(x, seq_lengths=jnp.asarray(LENGTHS), return_state=True)
    for b, length in enumerate(LENGTHS):
        expected, expected_state = reference(kind, layer, x[b : b + 1, :length])
        np.testing.assert_allclose(y[b, :length], expected[0], atol=TOL, rtol=0)
        np.testing.assert_array_equal(y[b, length:], 0.0)  # padded steps output zeros
        for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected_state)):
            np.testing.assert_allclose(got[b], want[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("kind", ["lstm", "bidirectional_rnn"])
def test_full_seq_lengths_equal_no_lengths(kind):
    layer = make(kind, (LSTM_BASE if "lstm" in kind else RNN_BASE).replace(time_major=True))
    x = inputs(time_major=True)
    np.testing.assert_allclose(layer(x, seq_lengths=jnp.full((B,), T)), layer(x), atol=SAME_MATH_TOL, rtol=0)


def test_zero_length_keeps_initial_state():
    layer = make("lstm")
    h0, c0 = jnp.ones((B, 5)), -jnp.ones((B, 5))
    y, (h, c) = layer(inputs(), (h0, c0), seq_lengths=jnp.array([0, 3, 0]), return_state=True)
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_array_equal(h[0], h0[0])
    np.testing.assert_array_equal(c[2], c0[2])


# ----------------------------------------------------------------------------- remat


def _loss_and_grads(layer, x, **call):
    graphdef, params = nnx.split(layer)

    def loss(params):
        y = nnx.merge(graphdef, params)(x, **call)
        return jnp.sum(jnp.sin(jnp.arange(y.size).reshape(y.shape)) * y)

    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize(
    "kind, chunk",
    [("lstm", None), ("simple_rnn", 1)],
    ids=["lstm_sqrt_chunks", "simple_rnn_per_step"],
)
def test_remat_gives_same_outputs_and_gradients(kind, chunk):
    x = inputs(steps=10)
    case = LSTM_BASE.replace(peephole=True) if kind == "lstm" else None
    plain, rematted = make(kind, case), make(kind, case, remat=True, remat_chunk_size=chunk)
    np.testing.assert_allclose(rematted(x), plain(x), atol=SAME_MATH_TOL, rtol=0)
    (loss, grads), (loss_r, grads_r) = _loss_and_grads(plain, x), _loss_and_grads(rematted, x)
    np.testing.assert_allclose(loss_r, loss, atol=1e-5, rtol=0)  # a sum of 300 terms
    for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
        np.testing.assert_allclose(g_r, g, atol=1e-5, rtol=0)  # sums over steps: a few ulps of |g|


@pytest.mark.parametrize("kind", ["bidirectional_lstm", "bidirectional_rnn"])
def test_bidirectional_remat_outputs(kind):
    x = inputs(steps=10)
    np.testing.assert_allclose(make(kind, remat=True, remat_chunk_size=3)(x), make(kind)(x), atol=SAME_MATH_TOL, rtol=0)


def test_remat_uses_less_memory():
    """Compiled scratch memory of a gradient step over T=400 shrinks with remat."""
    x = jnp.zeros((2, 400, I))

    def scratch(remat):
        graphdef, params = nnx.split(LSTM(I, 8, remat=remat, rngs=nnx.Rngs(0)))
        step = jax.jit(jax.grad(lambda p: jnp.sum(nnx.merge(graphdef, p)(x))))
        return step.lower(params).compile().memory_analysis().temp_size_in_bytes

    assert scratch(True) < 0.5 * scratch(False)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ["lstm", "bidirectional_rnn"])
def test_every_parameter_gets_a_gradient(kind):
    case = (
        LSTM_BASE.replace(peephole=True, projection=True, n_output=3, projection_bias=True, layer_norm=True)
        if kind == "lstm"
        else None
    )
    layer = make(kind, case, seed=3)
    _, grads = _loss_and_grads(layer, inputs())
    for path, g in nnx.to_flat_state(grads):
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), path
        assert np.abs(g).max() > 1e-6, f"no gradient reaches {path}"


# ----------------------------------------------------------------------------- matmul_dtype

# bfloat16 operands (8 significant bits, 2^-9 relative rounding) over I + H <= 9 products and
# T = 6 steps of O(1) activations: as tests/ops/test_matmul_dtype.py, outputs within 3e-2 and
# gradients within 5e-2 of the largest entry.
BF16_ATOL, BF16_GRAD_RTOL = 3e-2, 5e-2


@pytest.mark.slow  # a bfloat16 and a float32 training step per case, compiled: ~60 s for the six
@pytest.mark.parametrize("kind", ["lstm", "bidirectional_lstm"])
@pytest.mark.parametrize("path", ["fused_op", "seq_lengths", "remat"])
def test_matmul_dtype_reaches_every_path(kind, path):
    """With matmul_dtype=bfloat16 the layer stays within bfloat16 rounding of the float32
    layer with the same parameters, outputs and gradients, and differs from it (the option
    took effect) on the fused op, the masked per-step scan and the checkpointed chunks."""
    case = LSTM_BASE.replace(peephole=True, projection=True, n_output=3)
    options = dict(remat=True, remat_chunk_size=4) if path == "remat" else {}
    call = dict(seq_lengths=jnp.asarray(LENGTHS)) if path == "seq_lengths" else {}
    exact, fast = make(kind, case, **options), make(kind, case, matmul_dtype=jnp.bfloat16, **options)
    x = inputs()
    y, y_fast = np.asarray(exact(x, **call)), np.asarray(fast(x, **call))
    np.testing.assert_allclose(y_fast, y, atol=BF16_ATOL, rtol=0)
    assert np.max(np.abs(y_fast - y)) > 1e-5
    (_, grads), (_, grads_fast) = _loss_and_grads(exact, x, **call), _loss_and_grads(fast, x, **call)
    for g, g_fast in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_fast)):
        np.testing.assert_allclose(g_fast, g, atol=BF16_GRAD_RTOL * np.max(np.abs(g)), rtol=0)


def test_matmul_dtype_does_not_change_the_export():
    exact, fast = make("lstm"), make("lstm", matmul_dtype=jnp.bfloat16)
    assert export_tflite(fast) == export_tflite(exact)


def test_matmul_dtype_must_be_a_float_dtype():
    with pytest.raises(ValueError, match=r"LSTM: matmul_dtype=.* is not a float dtype"):
        LSTM(I, 5, matmul_dtype=jnp.int8, rngs=nnx.Rngs(0))
