"""Full-integer quantization of one LSTM from calibrated ranges, as TFLite's converter does it.

The conventions of tensorflow/lite/tools/optimize (operator_property.cc for LSTM and
UNIDIRECTIONAL_SEQUENCE_LSTM, quantization_utils.cc):

==============================  ===========================  ================================
tensor                          ``activations="int8"``       ``"int16"`` (TFLite Micro 16x8)
==============================  ===========================  ================================
input, output state, output     int8 asymmetric (range)      int16 symmetric (range)
weight matrices                 int8 symmetric, per tensor   int8 symmetric, per tensor
peephole, layer-norm coeffs     int16 symmetric              (unsupported by the kernel)
gate biases                     int32 at s_x * s_w, or at    int64 at s_x * s_w
                                s_LN * 2^-10 with layer norm
projection bias                 int32 at s_proj * s_hidden   (unsupported)
cell state                      int16, scale 2^k / 32768,    same
                                the smallest k covering the
                                range (at most 6 here)
intermediates 0-3 (gates)       int16 symmetric (the gates'  none
                                ranges) with layer norm, else
                                unquantized placeholders
intermediate 4 (hidden)         int8 asymmetric (range); the none
                                output state's without
                                projection
==============================  ===========================  ================================
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlstm.ops._fixed_point import round_half_away
from jaxlstm.ops._quant import QuantizedTensor, quantize_symmetric
from jaxlstm.ops.lstm import GATES, LSTMWeights
from jaxlstm.ops.lstm_integer import LITERT_CELL_SCALES, LSTMQuantization, QuantParams

Range = tuple[float, float]
ACTIVATIONS = ("int8", "int16")


@dataclasses.dataclass(frozen=True)
class LSTMRanges:
    """Calibrated float ranges (min, max) of the tensors an integer LSTM quantizes.

    Attributes:
      input: the input x.
      output: h, the output (the output state shares its quantization).
      cell_state: c.
      hidden: o * tanh(c), the projection's input; needed with projection.
      gates: the pre-activations of the gates (`GATES` order, None for CIFG's input gate)
        before layer norm; needed with layer norm.
    """

    input: Range
    output: Range
    cell_state: Range
    hidden: Range | None = None
    gates: tuple[Range | None, ...] | None = None


def quantize_lstm(
    weights: LSTMWeights, ranges: LSTMRanges, *, activations: str = "int8"
) -> tuple[LSTMWeights, LSTMQuantization]:
    """Quantizes float `weights` for the integer LSTM kernels (see the module docstring).

    Args:
      weights: float `LSTMWeights` (numpy or jax arrays).
      ranges: the calibrated ranges of the activations.
      activations: ``"int8"`` (LiteRT's 8x8_16, also run by TFLite Micro) or ``"int16"``
        (TFLite Micro's 16x8: no CIFG, peephole, projection or layer norm).

    Returns:
      (integer `LSTMWeights`, `LSTMQuantization`) for `jaxlstm.ops.lstm_integer` and
      `ModelBuilder.add_lstm(..., quantization=...)`.

    Raises:
      ValueError: a range the configuration needs is missing, or invalid arguments.
      NotImplementedError: int16 activations with features TFLite Micro's kernel lacks.
    """
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {ACTIVATIONS}, got {activations!r}")
    if weights.is_hybrid:
        raise ValueError("quantize_lstm takes float weights; these are already int8")
    if activations == "int16":
        features = {
            "CIFG": weights.use_cifg,
            "peephole": weights.use_peephole,
            "projection": weights.use_projection,
            "layer norm": weights.use_layer_norm,
        }
        used = [name for name, on in features.items() if on]
        if used:
            raise NotImplementedError(
                f"int16 activations run only in TFLite Micro, whose kernel supports none of {used}"
            )
    if weights.use_projection and ranges.hidden is None:
        raise ValueError("an LSTM with projection needs ranges.hidden (o * tanh(c), the projection's input)")
    if weights.use_layer_norm and ranges.gates is None:
        raise ValueError("an LSTM with layer norm needs ranges.gates (the gates' pre-activations)")

    x, h = activation_quantization(ranges.input, activations), activation_quantization(ranges.output, activations)
    bias_type = np.int64 if activations == "int16" else np.int32
    layer_norm = weights.use_layer_norm
    fields = {}
    for g in weights.gates:
        w_x = quantize_symmetric(np.asarray(getattr(weights, f"input_to_{g}_weights")))
        w_h = quantize_symmetric(np.asarray(getattr(weights, f"recurrent_to_{g}_weights")))
        fields[f"input_to_{g}_weights"], fields[f"recurrent_to_{g}_weights"] = w_x, w_h
        if weights.use_peephole and g != "cell" and getattr(weights, f"cell_to_{g}_weights") is not None:
            fields[f"cell_to_{g}_weights"] = quantize_constant(getattr(weights, f"cell_to_{g}_weights"), 16)
        if layer_norm:
            ln = quantize_constant(getattr(weights, f"{g}_layer_norm_coefficients"), 16)
            fields[f"{g}_layer_norm_coefficients"] = ln
            bias_scale = np.float32(ln.scale) * np.float32(2.0**-10)  # the layer norm adds it in Q.10
        else:
            bias_scale = np.float32(x.scale) * np.float32(w_x.scale)
        fields[f"{g}_gate_bias"] = quantize_bias(getattr(weights, f"{g}_gate_bias"), bias_scale, bias_type)

    hidden = h
    if weights.use_projection:
        hidden = _asymmetric_int8(*ranges.hidden)
        w_proj = quantize_symmetric(np.asarray(weights.projection_weights))
        fields["projection_weights"] = w_proj
        if weights.projection_bias is not None:
            scale = np.float32(w_proj.scale) * np.float32(hidden.scale)
            fields["projection_bias"] = quantize_bias(weights.projection_bias, scale, np.int32)

    intermediates = ()
    if activations == "int8" and layer_norm:
        # LiteRT reads all four gates' scales with layer norm; CIFG's absent input gate gets a
        # placeholder (its scale is never used).
        gates = [(-1.0, 1.0) if g not in weights.gates or r is None else r for g, r in zip(GATES, ranges.gates)]
        intermediates = (*(_symmetric(*r, bits=16) for r in gates), hidden)
    elif activations == "int8":
        intermediates = (None, None, None, None, hidden)
    quantization = LSTMQuantization(
        input=x,
        output_state=h,
        cell_state=_power_of_two_cell_scale(*ranges.cell_state),
        output=h,
        intermediates=intermediates,
    )
    return LSTMWeights(**fields), quantization


def activation_quantization(value_range: Range, activations: str) -> QuantParams:
    """How the converter quantizes an activation tensor with calibrated `value_range`:
    int8 asymmetric, or int16 symmetric (16x8)."""
    if activations == "int8":
        return _asymmetric_int8(*value_range)
    return _symmetric(*value_range, bits=16)


def _asymmetric_int8(low: float, high: float) -> QuantParams:
    """GetAsymmetricQuantizationParams (quantization_utils.cc) for int8, in float32: the
    range widened to include 0, scale = width / 255, the zero point rounded and clamped."""
    f32 = np.float32
    low, high = min(f32(low), f32(0)), max(f32(high), f32(0))
    scale = (high - low) / f32(255)
    if scale == 0:
        return QuantParams(1.0, 0)
    zero_point = f32(-128) - low / scale
    return QuantParams(float(scale), int(np.clip(round_half_away(float(zero_point)), -128, 127)))


def _symmetric(low: float, high: float, bits: int) -> QuantParams:
    """Symmetric quantization: scale = max|range| / (2^(bits-1) - 1), zero point 0."""
    extent = max(abs(np.float32(low)), abs(np.float32(high)))
    return QuantParams(float(extent / np.float32(2 ** (bits - 1) - 1)) if extent > 0 else 1.0, 0)


def quantize_constant(values, bits: int) -> QuantizedTensor:
    """A symmetric int8 / int16 constant with one scale (peephole and layer-norm coefficients
    in int16, constant operands of ADD and MUL): scale = max|v| / (2^(bits-1) - 1), 1 for
    an all-zero tensor, and q = round(v * (1 / scale))."""
    v = np.asarray(values, np.float32)
    extent = np.max(np.abs(v)) if v.size else 0.0
    scale = np.float32(_symmetric(-extent, extent, bits).scale)
    limit = 2 ** (bits - 1) - 1
    q = np.vectorize(round_half_away)(v * (np.float32(1) / scale)) if v.size else v
    return QuantizedTensor(np.clip(q, -limit, limit).astype(np.int8 if bits == 8 else np.int16), scale)


def quantize_bias(values, scale, dtype) -> QuantizedTensor:
    """SymmetricPerLayerBiasQuantize (per channel: SymmetricPerChannelBiasQuantize):
    round(b * (1 / scale)) in float32, clamped; `scale` a float32 scalar or one per element."""
    v = np.asarray(values, np.float32)
    scale = np.asarray(scale, np.float32)
    inverse = (1.0 / scale.astype(np.float64)).astype(np.float32)
    q = np.vectorize(round_half_away)(v * inverse) if v.size else v
    limit = np.iinfo(dtype).max
    return QuantizedTensor(np.clip(q, -limit, limit).astype(dtype), scale if scale.ndim else np.float32(scale))


def _power_of_two_cell_scale(low: float, high: float) -> float:
    """GetPowerOfTwoScale (quantization_utils.cc): the smallest 2^k >= max|range|, k in
    [0, 10], as a Q(k) int16 scale 2^k / 32768. k stops at 6 here: LiteRT's kernel needs a
    cell scale of at most 2^-9 (cells beyond +-64 saturate)."""
    extent = max(abs(low), abs(high))
    power = 0
    while power < 10 and 2.0**power < extent:
        power += 1
    return 2.0 ** min(power - 15, LITERT_CELL_SCALES[1])
