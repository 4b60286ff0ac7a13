"""The one gate splitter behind every converter and `jaxlstm.nn`'s init: orders, layouts, array types."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.convert import gru_weights_from_fused, lstm_weights_from_fused
from jaxlstm.convert._gates import split_gates
from jaxlstm.ops import GATES, GRU_GATES

N_INPUT, N = 3, 2


def _packed(n_gates: int, rows: int = N_INPUT) -> np.ndarray:
    """[rows, n_gates * N] with distinct entries: block k holds 100 k + its position."""
    return np.concatenate([100 * k + np.arange(rows * N).reshape(rows, N) for k in range(n_gates)], axis=1)


def test_blocks_follow_the_order_letters_along_rows_or_columns():
    columns = _packed(4)
    blocks = split_gates(columns, "icfo", axis=-1)  # TF1 LSTMCell: i, j (cell), f, o
    assert list(blocks) == ["input", "cell", "forget", "output"]
    np.testing.assert_array_equal(blocks["forget"], columns[:, 2 * N : 3 * N])
    rows = _packed(3).T  # PyTorch's GRU layout: r, z, n blocks of rows, [3 * n, k]
    blocks = split_gates(rows, "rzn")
    assert list(blocks) == ["reset", "update", "candidate"]
    np.testing.assert_array_equal(blocks["update"], rows[N : 2 * N])


def test_numpy_stays_numpy_without_copies_and_jax_stays_jax_under_jit():
    packed = _packed(4)
    for block in split_gates(packed, "ifco", axis=1).values():
        assert isinstance(block, np.ndarray) and np.shares_memory(block, packed)
    traced = jax.jit(lambda p: split_gates(p, "ifco", axis=1)["cell"])(jnp.asarray(packed))
    assert isinstance(traced, jax.Array)
    np.testing.assert_array_equal(traced, packed[:, 2 * N : 3 * N])


def test_lstm_weights_from_fused_reads_any_order_and_cifg():
    kernel, recurrent, bias = _packed(4), _packed(4, rows=N), np.arange(4 * N, dtype=np.float32)
    keras = lstm_weights_from_fused(kernel, recurrent, bias)  # i, f, c, o
    order = [0, 2, 1, 3]  # the same blocks packed as i, c, f, o
    permuted = [np.concatenate([np.split(a, 4, axis=-1)[k] for k in order], axis=-1) for a in (kernel, recurrent, bias)]
    tf1 = lstm_weights_from_fused(*permuted, gate_order="icfo")
    for gate in GATES:
        for name in (f"input_to_{gate}_weights", f"recurrent_to_{gate}_weights", f"{gate}_gate_bias"):
            np.testing.assert_array_equal(getattr(tf1, name), getattr(keras, name))
    np.testing.assert_array_equal(keras.input_to_forget_weights, kernel[:, N : 2 * N].T)  # TFLite's [n_cell, n_input]
    cifg = lstm_weights_from_fused(kernel[:, N:], recurrent[:, N:], bias[N:], gate_order="fco")
    assert cifg.use_cifg and cifg.n_cell == N


def test_gru_weights_from_fused_zero_bias_and_absent_recurrent_bias():
    weights = gru_weights_from_fused(_packed(3), _packed(3, rows=N), gate_order="rzn")
    np.testing.assert_array_equal(weights.input_to_reset_weights, _packed(3)[:, :N].T)
    for gate in GRU_GATES:
        np.testing.assert_array_equal(getattr(weights, f"{gate}_gate_bias"), np.zeros(N))
        assert getattr(weights, f"recurrent_{gate}_gate_bias") is None


@pytest.mark.parametrize(
    "order, shape, match",
    [
        pytest.param("ifc", (3, 6), "must name f, c, o", id="lstm_without_output_gate"),
        pytest.param("iffo", (3, 8), "once each", id="repeated_letter"),
        pytest.param("zrnz", (3, 8), "once each", id="repeated_gru_letter"),
        pytest.param("ifzo", (3, 8), "for an LSTM, or z, r, n", id="mixed_families"),
        pytest.param("ifco", (3, 10), r"not divisible into 4 gates", id="not_divisible"),
    ],
)
def test_bad_orders_and_shapes_raise_value_error(order, shape, match):
    with pytest.raises(ValueError, match=match):
        split_gates(np.zeros(shape), order, axis=-1)
