"""The integer LSTM ops as functions: entry points, jit, and their validation.

Their numbers are checked against LiteRT and TFLite Micro in tests/tflite/test_integer_lstm.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.ops import LSTMOptions, LSTMState, QuantizedTensor
from jaxlstm.ops.lstm_integer import (
    lstm_integer,
    prepare,
    unidirectional_sequence_lstm_integer,
)
from jaxlstm.quantization import quantize_lstm
from tests.tflite.integer_models import Config, calibration_ranges, float_weights

CONFIG = Config(batch=2, time=3, peephole=True, projection=True)


@pytest.fixture(scope="module")
def lstm():
    rng = np.random.default_rng(0)
    weights, quantization = quantize_lstm(float_weights(rng, CONFIG), calibration_ranges(rng))
    x = jnp.asarray(rng.integers(-128, 128, size=(CONFIG.time, CONFIG.batch, CONFIG.n_input)), jnp.int8)
    h = jnp.full((CONFIG.batch, CONFIG.outputs), quantization.output_state.zero_point, jnp.int8)
    state = LSTMState(h, jnp.zeros((CONFIG.batch, CONFIG.n_cell), jnp.int16))
    return weights, quantization, x, state


def test_lstm_op_is_one_time_major_step(lstm):
    weights, quantization, x, state = lstm
    options = LSTMOptions(cell_clip=1.0, time_major=True)
    y, final = lstm_integer(x[0], weights, state, quantization, options)
    y_seq, final_seq = unidirectional_sequence_lstm_integer(x[:1], weights, state, quantization, options)
    np.testing.assert_array_equal(y, y_seq[0])
    np.testing.assert_array_equal(final.cell_state, final_seq.cell_state)
    assert y.dtype == jnp.int8 and final.cell_state.dtype == jnp.int16


def test_under_an_outer_jit(lstm):
    """Weights closed over (their scales static); x and the state traced, x64 off outside."""
    weights, quantization, x, state = lstm
    options = LSTMOptions(time_major=True)

    def run(x, state):
        return unidirectional_sequence_lstm_integer(x, weights, state, quantization, options)

    eager, jitted = run(x, state), jax.jit(run)(x, state)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_array_equal(a, b)


def test_traced_scales_are_refused(lstm):
    weights, quantization, x, state = lstm

    def run(weights):
        return unidirectional_sequence_lstm_integer(x, weights, state, quantization, LSTMOptions(time_major=True))

    with pytest.raises(TypeError, match=r"scale of .* is traced"):
        jax.jit(run)(weights)


def test_invalid_arguments(lstm):
    weights, quantization, x, state = lstm
    tm = LSTMOptions(time_major=True)
    op = unidirectional_sequence_lstm_integer
    with pytest.raises(TypeError, match="int8 or int16 inputs, got float32"):
        op(x.astype(jnp.float32), weights, state, quantization, tm)
    with pytest.raises(TypeError, match=r"expected \(int8, int16\)"):
        op(x, weights, LSTMState(state.output_state.astype(jnp.int16), state.cell_state), quantization, tm)
    with pytest.raises(ValueError, match="runtime must be one of"):
        op(x, weights, state, quantization, tm, runtime="tflm")
    with pytest.raises(ValueError, match="needs 5 intermediate tensors"):
        op(x, weights, state, dataclasses.replace(quantization, intermediates=()), tm)
    with pytest.raises(ValueError, match="zero point 300"):
        prepare(weights, dataclasses.replace(quantization, input=quantization.input._replace(zero_point=300)))
    cell = weights.input_to_cell_weights
    wrong = weights.replace(input_to_cell_weights=QuantizedTensor(cell.values.astype(np.int16), cell.scale))
    with pytest.raises(TypeError, match="input_to_cell_weights has dtype int16, expected int8"):
        prepare(wrong, quantization)
