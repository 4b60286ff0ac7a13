"""Every sequence op runs inside `jax.shard_map` with the batch sharded (data parallelism).

Under shard_map JAX types each value as varying or invariant over the mesh axes, and a
`lax.scan` carry must keep its type from one step to the next. An initial state the op
makes itself (zeros) is invariant, while the step's output depends on the sharded input
and so varies: the ops must give their carries the inputs' type. A one-device mesh types
values exactly as a larger one does, so these tests need no extra devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxlstm.convert import gru_weights_from_torch
from jaxlstm.ops import (
    GRUWeights,
    LSTMOptions,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    gru,
    lstm,
    rnn,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from tests.cases import LSTMCase

from .cases import lstm_state, lstm_weights, normal, quantize_weights, rnn_weights

B, T, I, N = 8, 5, 3, 4  # batch 8: the float LSTM's batch-minor loop too
MESH = Mesh(np.array(jax.devices()[:1]), ("data",))


def _gru_weights(rng) -> GRUWeights:
    return gru_weights_from_torch(normal(rng, 3 * N, I), normal(rng, 3 * N, N), normal(rng, 3 * N))


def _ops(rng) -> dict:
    """name -> (fn(x [B, T, I], state or None) -> outputs, state or None (batch-first pytree))."""
    lstm_w = lstm_weights(LSTMCase(n_input=I, n_cell=N, n_output=N, peephole=True), rng)
    lstm_s = lstm_state(LSTMCase(batch=B, n_cell=N, n_output=N), rng)
    hybrid_w = quantize_weights(lstm_w)
    rnn_w = rnn_weights(I, N, rng)
    gru_w = _gru_weights(rng)
    h = normal(rng, B, N)
    return {
        "unidirectional_sequence_lstm": (lambda x, s: unidirectional_sequence_lstm(x, lstm_w, s), lstm_s),
        "unidirectional_sequence_lstm_hybrid": (lambda x, s: unidirectional_sequence_lstm(x, hybrid_w, s), lstm_s),
        "unidirectional_sequence_lstm_bf16": (
            lambda x, s: unidirectional_sequence_lstm(x, lstm_w, s, matmul_dtype=jnp.bfloat16),
            lstm_s,
        ),
        "bidirectional_sequence_lstm": (
            lambda x, s: bidirectional_sequence_lstm(
                x, lstm_w, lstm_w, *(s or (None, None)), options=LSTMOptions(time_major=False)
            ),
            (lstm_s, lstm_s),
        ),
        "lstm": (lambda x, s: lstm(x[:, 0], lstm_w, s), lstm_s),
        "unidirectional_sequence_rnn": (lambda x, s: unidirectional_sequence_rnn(x, rnn_w, s), h),
        "bidirectional_sequence_rnn": (
            lambda x, s: bidirectional_sequence_rnn(x, rnn_w, rnn_w, *(s or (None, None))),
            (h, h),
        ),
        "rnn": (lambda x, s: rnn(x[:, 0], rnn_w, s), h),
        "gru": (lambda x, s: gru(x, gru_w, s), h),
    }


OPS = list(_ops(np.random.default_rng(0)))


@pytest.mark.parametrize("with_state", [False, True], ids=["zero_state", "given_state"])
@pytest.mark.parametrize("name", OPS)
def test_op_under_shard_map_matches_plain_call(name: str, with_state: bool):
    rng = np.random.default_rng(0)
    fn, state = _ops(rng)[name]
    state = state if with_state else None
    x = normal(rng, B, T, I)

    def loss(x, state):
        return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(fn(x, state)))

    sharded = jax.shard_map(
        lambda x, state: (fn(x, state), jax.lax.psum(jax.grad(loss)(x, state), "data")),
        mesh=MESH,
        in_specs=(P("data"), P("data")),
        out_specs=(P("data"), P()),
    )
    outputs, grad = jax.jit(sharded)(x, state)
    # Same computation on the same device: only XLA's fusion choices may differ (float32 ulps).
    for got, want in zip(jax.tree.leaves(outputs), jax.tree.leaves(fn(x, state)), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(grad, jax.grad(loss)(x, state), atol=1e-6)


def test_lstm_weight_gradient_under_shard_map_at_batch_64():
    """At batch 64 the custom JVP computes its weight terms inside the tangent loop; their
    gradient (replicated weights, sharded batch) is psummed as outside shard_map."""
    rng = np.random.default_rng(0)
    case = LSTMCase(batch=64, n_input=I, n_cell=N, n_output=N, peephole=True)
    weights, x = lstm_weights(case, rng), normal(rng, 64, T, I)

    def loss(weights, x):
        outputs = unidirectional_sequence_lstm(x, weights)
        return sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(outputs))

    sharded = jax.shard_map(
        lambda w, x: jax.lax.psum(jax.grad(loss)(w, x), "data"),
        mesh=MESH,
        in_specs=(P(), P("data")),
        out_specs=P(),
    )
    got, want = jax.jit(sharded)(weights, x), jax.grad(loss)(weights, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
