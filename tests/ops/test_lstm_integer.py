"""The integer LSTM ops as functions: entry points, jit, and their validation.

Their numbers are checked against LiteRT and TFLite Micro in tests/tflite/test_integer_lstm.py.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.ops import LSTMOptions, LSTMQuantization, LSTMState, LSTMWeights, QuantizedTensor, QuantParams
from jaxlstm.ops._fixed_point import round_half_away
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


# ----------------------------------------------------------------------------- upstream goldens
#
# LiteRT tflite/kernels/lstm_test.cc, IntegerLstmOpTest.NoCifg_NoPeephole_Projection_LayerNorm
# and NoCifg_Peephole_Projection_LayerNorm: the LSTM op, batch 2, n_input 5, n_cell 4,
# n_output 3, three invokes. Its harness (test_util.h) quantizes each float tensor from a
# (min, max) range, in float32: QuantizationParams<T> then Quantize<T>. Weights get zero
# points (e.g. -1 for [-1, 1]) that the kernel ignores, biases huge ones; the output state
# is declared int16 (scale 2^-15) and the kernel reads its bytes as int8.

UPSTREAM_WEIGHTS = {
    "input_to_input_weights": [
        0.5, 0.6, 0.7, -0.8, -0.9, 0.1, 0.2, 0.3, -0.4, 0.5, -0.8, 0.7, -0.6, 0.5, -0.4, -0.5, -0.4, -0.3, -0.2,
        -0.1,
    ],
    "input_to_forget_weights": [
        -0.6, -0.1, 0.3, 0.2, 0.9, -0.5, -0.2, -0.4, 0.3, -0.8, -0.4, 0.3, -0.5, -0.4, -0.6, 0.3, -0.4, -0.6, -0.5,
        -0.5,
    ],
    "input_to_cell_weights": [
        -0.4, -0.3, -0.2, -0.1, -0.5, 0.5, -0.2, -0.3, -0.2, -0.6, 0.6, -0.1, -0.4, -0.3, -0.7, 0.7, -0.9, -0.5, 0.8,
        0.6,
    ],
    "input_to_output_weights": [
        -0.8, -0.4, -0.2, -0.9, -0.1, -0.7, 0.3, -0.3, -0.8, -0.2, 0.6, -0.2, 0.4, -0.7, -0.3, -0.5, 0.1, 0.5, -0.6,
        -0.4,
    ],
    "input_gate_bias": [0.03, 0.15, 0.22, 0.38],
    "forget_gate_bias": [0.1, -0.3, -0.2, 0.1],
    "cell_gate_bias": [-0.05, 0.72, 0.25, 0.08],
    "output_gate_bias": [0.05, -0.01, 0.2, 0.1],
    "recurrent_to_input_weights": [-0.2, -0.3, 0.4, 0.1, -0.5, 0.9, -0.2, -0.3, -0.7, 0.05, -0.2, -0.6],
    "recurrent_to_cell_weights": [-0.3, 0.2, 0.1, -0.3, 0.8, -0.08, -0.2, 0.3, 0.8, -0.6, -0.1, 0.2],
    "recurrent_to_forget_weights": [-0.5, -0.3, -0.5, -0.2, 0.6, 0.4, 0.9, 0.3, -0.1, 0.2, 0.5, 0.2],
    "recurrent_to_output_weights": [0.3, -0.1, 0.1, -0.2, -0.5, -0.7, -0.2, -0.6, -0.1, -0.4, -0.7, -0.2],
    "cell_to_input_weights": [0.3, -0.1, 0.1, -0.2],
    "cell_to_forget_weights": [0.2, -0.1, 0.1, -0.2],
    "cell_to_output_weights": [0.3, -0.1, 0.1, -0.3],
    "input_layer_norm_coefficients": [0.1, 0.2, 0.3, 0.5],
    "forget_layer_norm_coefficients": [0.2, 0.2, 0.4, 0.3],
    "cell_layer_norm_coefficients": [0.7, 0.2, 0.3, 0.8],
    "output_layer_norm_coefficients": [0.6, 0.2, 0.2, 0.5],
    "projection_weights": [-0.1, 0.2, 0.01, -0.2, 0.1, 0.5, 0.3, 0.08, 0.07, 0.2, -0.4, 0.2],
}  # fmt: skip
UPSTREAM_INPUTS = [
    [0.7, 0.8, 0.1, 0.2, 0.3, 0.8, 0.1, 0.2, 0.4, 0.5],
    [0.2, 0.7, 0.7, 0.1, 0.7, 0.3, 0.2, 0.9, 0.8, 0.1],
    [0.7, 0.8, 0.1, 0.2, 0.3, 0.3, 0.2, 0.9, 0.8, 0.1],
]
UPSTREAM_CASES = {
    "NoCifg_NoPeephole_Projection_LayerNorm": (
        {"layer_norm": (-1.00001, 1.0)},
        [[127, 127, -108, -67, 127, 127], [-128, 127, 127, -128, 127, 127], [127, 127, 127, -128, 127, 127]],
    ),
    "NoCifg_Peephole_Projection_LayerNorm": (
        {
            "recurrent_to_forget_weights": (-0.9, 0.9),
            "cell_to": (-0.3, 0.3),
            "forget_gate_bias": (-100, 80),
            "input_layer_norm_coefficients": (-0.5, 0.5),
            "forget_layer_norm_coefficients": (-0.5, 0.5),
            "layer_norm": (-1.0, 1.0),
        },
        [[127, 127, -16, -21, 127, 127], [23, 127, 127, -128, 127, 127], [127, 127, 127, -128, 127, 127]],
    ),
}


def _harness_params(dtype, low: float, high: float) -> QuantParams:
    """test_util.h QuantizationParams<T>: float32 arithmetic, the zero point from the end
    with the smaller rounding error, std::round."""
    f32 = np.float32
    info = np.iinfo(dtype)
    qmin, qmax, low, high = f32(info.min), f32(info.max), f32(low), f32(high)
    scale = (high - low) / (qmax - qmin)
    from_min, from_max = qmin - low / scale, qmax - high / scale
    zero_point = from_min if abs(qmin) + abs(low / scale) < abs(qmax) + abs(high / scale) else from_max
    zero_point = (
        info.min if zero_point < qmin else info.max if zero_point > qmax else round_half_away(float(zero_point))
    )
    return QuantParams(float(scale), int(zero_point))


def _harness_quantize(values, dtype, params: QuantParams) -> np.ndarray:
    """test_util.h Quantize<T>: round(zero_point + f / scale) in float32, clamped."""
    f32 = np.float32
    real = f32(np.asarray(values, np.float32) / f32(params.scale)) + f32(params.zero_point)
    info = np.iinfo(dtype)
    return np.asarray([np.clip(round_half_away(float(v)), info.min, info.max) for v in real]).astype(dtype)


def _range(name: str, overrides: dict) -> tuple[float, float]:
    for key, span in overrides.items():
        if key in name:
            return span
    if name.endswith("bias"):
        return (-100, 100)
    if name == "projection_weights":
        return (-0.5, 0.5)
    return (-1.0, 1.0)


@pytest.mark.parametrize("case", UPSTREAM_CASES, ids=str)
def test_upstream_goldens(case):
    overrides, expected = UPSTREAM_CASES[case]
    fields = {}
    for name, values in UPSTREAM_WEIGHTS.items():
        if name.startswith("cell_to") and "cell_to" not in overrides:
            continue  # the no-peephole case
        dtype = np.int32 if name.endswith("bias") else np.int16 if "cell_to" in name or "norm" in name else np.int8
        params = _harness_params(dtype, *_range(name, overrides))
        shape = (4, -1) if name.endswith("weights") and not name.startswith("cell_to") else (-1,)
        if name == "projection_weights":
            shape = (3, 4)
        q = _harness_quantize(values, dtype, params).reshape(shape)
        fields[name] = q if name.endswith("bias") else QuantizedTensor(q, np.float32(params.scale))
    weights = LSTMWeights(**fields)
    x_params = _harness_params(np.int8, -1.0, 127 / 128)
    h_params = _harness_params(np.int16, -1.0, 32767 / 32768)  # the int16-declared state
    quantization = LSTMQuantization(
        input=x_params,
        output_state=h_params,
        cell_state=_harness_params(np.int16, -1, 1).scale,  # 2 / 65535: CheckedLog2 accepts it as 2^-15
        output=_harness_params(np.int8, -1.0, 32767 / 32768),
        intermediates=tuple(QuantParams(s, 0) for s in (0.007059, 0.007812, 0.007059, 0.007812, 0.007)),
    )
    state = LSTMState(jnp.zeros((2, 3), jnp.int8), jnp.zeros((2, 4), jnp.int16))
    outputs = []
    for x in UPSTREAM_INPUTS:
        x = jnp.asarray(_harness_quantize(x, np.int8, x_params).reshape(2, 5))
        y, state = lstm_integer(x, weights, state, quantization, LSTMOptions())
        outputs.append(np.asarray(y).ravel().tolist())
    assert outputs == expected
