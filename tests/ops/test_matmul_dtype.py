"""The ``matmul_dtype`` option of the LSTM sequence ops (bfloat16 operands, float32 accumulation).

Golden values are the float32 NumPy reference loop. Tolerance: bfloat16 keeps 8 significant
bits (relative rounding 2^-9 = 2e-3 per operand); with O(1) weights and activations over
n_input + n_output <= 10 products and 5 steps of state feedback, the outputs (in [-1, 1])
stay within BF16_ATOL = 3e-2 of the float32 loop in every case below.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from jaxlstm.ops import bidirectional_sequence_lstm, lstm, unidirectional_sequence_lstm
from jaxlstm.reference import np_lstm
from tests.cases import LSTMCase

from .cases import dot_operand_dtypes, lstm_state, lstm_weights, normal, quantize_weights

BF16_ATOL = 3e-2
BF16_GRAD_RTOL = 5e-2  # gradients: the same rounding, relative to the largest gradient entry

CASES = [
    LSTMCase(),
    LSTMCase(batch=1),  # batch 1 keeps TFLite's weight layout
    LSTMCase(
        batch=3,
        cifg=True,
        peephole=True,
        projection=True,
        n_output=3,
        projection_bias=True,
        proj_clip=0.5,
        time_major=True,
    ),
    LSTMCase(layer_norm=True, cell_clip=0.3),
    LSTMCase(diagonal=True, peephole=True),
]


def _inputs(case: LSTMCase):
    rng = np.random.default_rng(3)
    return lstm_weights(case, rng), lstm_state(case, rng), normal(rng, *case.input_shape, scale=1.0)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bfloat16_matmuls_stay_close_to_float32_reference(case: LSTMCase):
    weights, state, x = _inputs(case)
    y, (h, c) = unidirectional_sequence_lstm(x, weights, state, options=case.options, matmul_dtype=jnp.bfloat16)
    y_ref, _, c_ref = np_lstm.unidirectional_sequence_lstm(
        x, weights, *state, time_major=case.time_major, **case.reference_options
    )
    assert y.dtype == h.dtype == c.dtype == jnp.float32  # state and outputs stay float32
    assert_allclose(y, y_ref, rtol=0, atol=BF16_ATOL)
    assert_allclose(c, c_ref, rtol=0, atol=BF16_ATOL)
    # The option takes effect: bfloat16 rounding is far above float32's 1e-7.
    assert np.max(np.abs(np.asarray(y) - y_ref)) > 1e-5


def test_bidirectional_bfloat16_matmuls_stay_close_to_float32():
    case = LSTMCase(time_major=True, aux="cross", n_aux=2, projection=True, n_output=3)
    rng = np.random.default_rng(4)
    fw, bw = lstm_weights(case, rng, n_aux=2), lstm_weights(case, rng, n_aux=2)
    x, aux = normal(rng, *case.input_shape, scale=1.0), normal(rng, case.time, case.batch, 2, scale=1.0)
    exact, _ = bidirectional_sequence_lstm(x, fw, bw, aux_input=aux, options=case.options)
    fast, _ = bidirectional_sequence_lstm(x, fw, bw, aux_input=aux, options=case.options, matmul_dtype=jnp.bfloat16)
    for e, f in zip(exact, fast):
        assert_allclose(f, e, rtol=0, atol=BF16_ATOL)


@pytest.mark.parametrize("case", CASES[:3], ids=str)
def test_bfloat16_matmul_gradients_stay_close_to_float32(case: LSTMCase):
    weights, state, x = _inputs(case)

    def grads(matmul_dtype):
        def loss(w, s, x_):
            y, (h, c) = unidirectional_sequence_lstm(x_, w, s, options=case.options, matmul_dtype=matmul_dtype)
            return jnp.sum(jnp.sin(y)) + jnp.sum(h) + jnp.sum(c * c)

        return jax.grad(loss, argnums=(0, 1, 2))(weights, state, x)

    for exact, fast in zip(jax.tree.leaves(grads(None)), jax.tree.leaves(grads(jnp.bfloat16))):
        scale = np.max(np.abs(exact))
        assert_allclose(fast, exact, rtol=0, atol=BF16_GRAD_RTOL * scale)


def test_step_op_takes_matmul_dtype_as_the_sequence_op():
    case = LSTMCase(time=1, peephole=True, projection=True, n_output=3)
    weights, state, x = _inputs(case)
    y, (h, c) = unidirectional_sequence_lstm(x, weights, state, options=case.options, matmul_dtype=jnp.bfloat16)
    y_step, (h_step, c_step) = lstm(x[:, 0], weights, state, options=case.options, matmul_dtype=jnp.bfloat16)
    for got, want in ((y_step, y[:, 0]), (h_step, h), (c_step, c)):
        assert_allclose(got, want, rtol=0, atol=1e-6)  # the same bfloat16 products


@pytest.mark.parametrize("case", CASES + [LSTMCase(batch=8, projection=True, n_output=3)], ids=str)
def test_bfloat16_training_step_multiplies_only_bfloat16(case: LSTMCase):
    """Forward and reverse mode: every matmul of the gradient has bfloat16 operands (the
    transposes of `lax.dot_general` would multiply float32 cotangents, experiments/README.md)."""
    weights, state, x = _inputs(case)

    def loss(w, s, x_):
        y, _ = unidirectional_sequence_lstm(x_, w, s, options=case.options, matmul_dtype=jnp.bfloat16)
        return jnp.sum(jnp.sin(y))

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(weights, state, x).jaxpr
    assert dot_operand_dtypes(jaxpr) == {("bfloat16", "bfloat16")}


@pytest.mark.parametrize(
    ("matmul_dtype", "hybrid", "message"),
    [(jnp.int8, False, "not a float dtype"), (jnp.bfloat16, True, "hybrid")],
    ids=["int8", "hybrid_weights"],
)
def test_matmul_dtype_rejects(matmul_dtype, hybrid, message):
    weights, state, x = _inputs(LSTMCase())
    if hybrid:
        weights = quantize_weights(weights)
    with pytest.raises(ValueError, match=message):
        unidirectional_sequence_lstm(x, weights, state, matmul_dtype=matmul_dtype)
