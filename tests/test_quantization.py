"""`quantize_lstm`: the converter's conventions (checked against the converter itself in
tests/tflite/test_integer_lstm.py) and its refusals."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm.ops import quantize_symmetric
from jaxlstm.quantization import LSTMRanges, quantize_lstm
from tests.tflite.integer_models import Config, calibration_ranges, float_weights


@pytest.mark.parametrize(
    "extent,scale",
    [(0.5, 2.0**-15), (1.0, 2.0**-15), (1.5, 2.0**-14), (20.0, 2.0**-10), (64.0, 2.0**-9), (500.0, 2.0**-9)],
)
def test_cell_scale_is_the_smallest_power_of_two_covering_the_range(extent, scale):
    """2^k / 32768 for the smallest 2^k >= max|c|; above 64 LiteRT's limit 2^-9 applies."""
    w = float_weights(np.random.default_rng(0), Config())
    _, q = quantize_lstm(w, LSTMRanges(input=(-1, 1), output=(-1, 1), cell_state=(-extent / 2, extent)))
    assert q.cell_state == scale


def test_biases_and_intermediates_by_configuration():
    rng = np.random.default_rng(0)
    ranges = calibration_ranges(rng)
    plain = float_weights(rng, Config())
    weights, q = quantize_lstm(plain, ranges)
    bias = weights.forget_gate_bias  # int32 at s_x * s_w
    assert bias.values.dtype == np.int32
    assert bias.scale == np.float32(q.input.scale) * np.float32(weights.input_to_forget_weights.scale)
    np.testing.assert_array_equal(
        weights.input_to_forget_weights.values, quantize_symmetric(plain.input_to_forget_weights).values
    )
    assert q.intermediates == (None, None, None, None, q.output_state)  # no projection: h's quantization

    layer_norm = float_weights(rng, Config(cifg=True, layer_norm=True, projection=True))
    weights, q = quantize_lstm(layer_norm, ranges)
    assert weights.forget_gate_bias.scale == np.float32(weights.forget_layer_norm_coefficients.scale) * np.float32(
        2.0**-10
    )
    assert weights.forget_layer_norm_coefficients.values.dtype == np.int16
    assert all(p is not None and p.zero_point == 0 for p in q.intermediates[:4])  # CIFG's input gate: a placeholder
    assert q.intermediates[4] != q.output_state  # the projection's input has its own range

    int16_weights, q16 = quantize_lstm(plain, ranges, activations="int16")
    assert int16_weights.forget_gate_bias.values.dtype == np.int64
    assert q16.input.zero_point == 0 and q16.intermediates == ()


def test_refusals():
    rng = np.random.default_rng(0)
    ranges = LSTMRanges(input=(-1, 1), output=(-1, 1), cell_state=(-1, 1))
    with pytest.raises(NotImplementedError, match=r"supports none of \['peephole'\]"):
        quantize_lstm(float_weights(rng, Config(peephole=True)), ranges, activations="int16")
    with pytest.raises(ValueError, match=r"needs ranges\.hidden"):
        quantize_lstm(float_weights(rng, Config(projection=True)), ranges)
    with pytest.raises(ValueError, match=r"needs ranges\.gates"):
        quantize_lstm(float_weights(rng, Config(layer_norm=True)), ranges)
    with pytest.raises(ValueError, match="activations must be one of"):
        quantize_lstm(float_weights(rng, Config()), ranges, activations="int4")
