"""Every float matmul of the ops, forward and reverse mode, asks for float32 products.

JAX's default precision lets GPUs run float32 dots as TF32 and TPUs as one bfloat16 pass;
TFLite's float kernels multiply in float32 (`jaxlstm.ops._precision`). XLA:CPU computes in
float32 at any precision, so these tests read the requested precision off the jaxpr and the
lowered StableHLO rather than off the numbers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.convert import gru_weights_from_keras
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import (
    GRUOptions,
    basic_lstm_cell,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    gru,
    lstm,
    rnn,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from tests.cases import LSTMCase, RNNCase

from .cases import dot_generals, lstm_state, lstm_weights, normal, rnn_weights

FLOAT32 = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)

LSTM_CASES = [
    LSTMCase(batch=1),  # input terms hoisted out of the loop
    LSTMCase(batch=3, diagonal=True, peephole=True),  # batch-major loop
    LSTMCase(batch=8, peephole=True, projection=True, n_output=3, projection_bias=True),  # batch-minor
    LSTMCase(batch=64, cifg=True, layer_norm=True, projection=True, n_output=3),  # per-step weight terms
]


def _lstm(case: LSTMCase):
    rng = np.random.default_rng(0)
    args = (normal(rng, *case.input_shape), lstm_weights(case, rng), lstm_state(case, rng))
    return lambda x, w, s: unidirectional_sequence_lstm(x, w, s, options=case.options), args


def _bidirectional_lstm():
    case = LSTMCase(batch=8, time_major=True, aux="cross", projection=True, n_output=3)
    rng = np.random.default_rng(1)
    args = (
        normal(rng, *case.input_shape),
        normal(rng, case.time, case.batch, case.n_aux),
        lstm_weights(case, rng, n_aux=case.n_aux),
        lstm_weights(case, rng, n_aux=case.n_aux),
    )
    return lambda x, aux, fw, bw: bidirectional_sequence_lstm(x, fw, bw, aux_input=aux, options=case.options), args


def _lstm_step():
    case = LSTMCase(batch=4, peephole=True, projection=True, n_output=3)
    rng = np.random.default_rng(2)
    args = (normal(rng, case.batch, case.n_input), lstm_weights(case, rng), lstm_state(case, rng))
    return lambda x, w, s: lstm(x, w, s, options=case.options), args


def _basic_lstm_cell():
    rng = np.random.default_rng(3)
    B, I, D = 2, 3, 4
    args = (normal(rng, B, I), normal(rng, B, D), normal(rng, 4 * D, I + D), normal(rng, 4 * D), normal(rng, B, D))
    return basic_lstm_cell, args


def _rnn(kind: str):
    case = RNNCase(batch=4)
    rng = np.random.default_rng(4)
    weights = rnn_weights(case.n_input, case.n_units, rng)
    h = normal(rng, case.batch, case.n_units)
    if kind == "step":
        return lambda x, w, h: rnn(x, w, h, options=case.options), (normal(rng, case.batch, case.n_input), weights, h)
    x = normal(rng, *case.input_shape)
    if kind == "unidirectional":
        return lambda x, w, h: unidirectional_sequence_rnn(x, w, h, options=case.options), (x, weights, h)
    bw = rnn_weights(case.n_input, case.n_units, rng)
    return lambda x, fw, bw: bidirectional_sequence_rnn(x, fw, bw, options=case.options), (x, weights, bw)


def _gru(reset_after: bool):
    rng = np.random.default_rng(5)
    B, T, I, H = 3, 4, 2, 5
    bias = normal(rng, 2, 3 * H) if reset_after else normal(rng, 3 * H)
    weights = gru_weights_from_keras(normal(rng, I, 3 * H), normal(rng, H, 3 * H), bias, reset_after)
    options = GRUOptions(reset_after=reset_after)
    return lambda x, w, h: gru(x, w, h, options=options), (normal(rng, B, T, I), weights, normal(rng, B, H))


def _model():
    """A `Model` whose kernels do their own matmuls: FULLY_CONNECTED and the BASIC LSTM cell."""
    rng = np.random.default_rng(6)
    b = ModelBuilder()
    x = b.add_input("x", (2, 3))
    h = b.add_basic_lstm_cell(x, normal(rng, 16, 7), normal(rng, 16))
    y = b.add_intermediate("y", (2, 5))
    b.add_operator(
        "FULLY_CONNECTED", [h, b.add_constant("w", normal(rng, 5, 4)), b.add_constant("b", normal(rng, 5))], [y]
    )
    model = b.build([y])
    state = model.init_state()
    return lambda params, x: model.apply(params, state, x)[0], (model.params, normal(rng, 2, 3))


OPS = {
    **{f"unidirectional_sequence_lstm_{case}": lambda case=case: _lstm(case) for case in LSTM_CASES},
    "bidirectional_sequence_lstm_aux": _bidirectional_lstm,
    "lstm": _lstm_step,
    "basic_lstm_cell": _basic_lstm_cell,
    "rnn": lambda: _rnn("step"),
    "unidirectional_sequence_rnn": lambda: _rnn("unidirectional"),
    "bidirectional_sequence_rnn": lambda: _rnn("bidirectional"),
    "gru_reset_after": lambda: _gru(True),
    "gru_reset_before": lambda: _gru(False),
    "model_fully_connected_and_basic_lstm_cell": _model,
}


def _gradient(fn):
    """The gradient of a scalar of `fn`'s outputs w.r.t. every argument."""

    def loss(*args):
        return sum(jnp.sum(jnp.sin(y)) for y in jax.tree.leaves(fn(*args)))

    return lambda *args: jax.grad(loss, argnums=tuple(range(len(args))))(*args)


@pytest.mark.parametrize("op", OPS, ids=str)
@pytest.mark.parametrize("mode", ["forward", "gradient"])
def test_every_float_matmul_requests_float32_products(op, mode):
    fn, args = OPS[op]()
    f = fn if mode == "forward" else _gradient(fn)
    dots = dot_generals(jax.make_jaxpr(f)(*args).jaxpr)
    assert dots, "no matmul found: the test would pass vacuously"
    assert [eqn.params["precision"] for eqn in dots] == [FLOAT32] * len(dots)


def test_a_lower_default_precision_does_not_reach_the_lowered_matmuls():
    """With ``jax.default_matmul_precision("bfloat16")`` (what a TPU does by default), the
    training step's lowered dots still ask for HIGHEST, and no narrower dot algorithm."""
    fn, args = _lstm(LSTM_CASES[-1])
    with jax.default_matmul_precision("bfloat16"):
        text = jax.jit(_gradient(fn)).lower(*args).as_text()
    dots = [line for line in text.splitlines() if "stablehlo.dot_general" in line]
    assert dots
    for line in dots:
        assert "precision = [HIGHEST, HIGHEST]" in line and "algorithm" not in line, line
