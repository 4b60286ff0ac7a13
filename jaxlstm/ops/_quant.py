"""Int8 weights and the hybrid (int8 weight, float activation) matmul of TFLite's kernels.

TFLite's hybrid path (`lstm_eval.cc` EvalHybrid, `kernel_utils.cc` RnnBatchStep) keeps
activations in float, re-quantizes every activation vector per batch row at every step,
multiplies with int8 weights in exact int32 arithmetic and scales back in float:
``acc += float(dot) * (row_scale * weight_scale)``. This module reproduces those steps.

References: tflite/kernels/internal/reference/portable_tensor_utils.cc
(PortableSymmetricQuantizeFloats, PortableAsymmetricQuantizeFloats,
PortableMatrixBatchVectorMultiplyAccumulate).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedTensor:
    """An integer tensor with its float scale (TFLite symmetric quantization): int8
    weights, and in fully integer models int16 weights and int32/int64 biases.

    Attributes:
      values: integer array (int8 for the hybrid path), any shape.
      scale: float32 scalar (or per-channel array broadcasting against `values`); the
        real value is ``values * scale``.
    """

    values: jax.Array
    scale: jax.Array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    @property
    def ndim(self) -> int:
        return len(self.values.shape)

    @property
    def dtype(self):
        return self.values.dtype

    def dequantize(self) -> jax.Array:
        """Float32 values, ``values * scale`` (TFLite `VectorScalarMultiply`)."""
        return self.values.astype(jnp.float32) * self.scale


def round_half_away(x: jax.Array) -> jax.Array:
    """`std::round` / `TfLiteRound`: ties go away from zero (unlike `jnp.round`)."""
    whole = jnp.trunc(x)
    return jnp.where(jnp.abs(x - whole) >= 0.5, whole + jnp.sign(x), whole)


def quantize_symmetric(weights: np.ndarray | jax.Array) -> QuantizedTensor:
    """Quantizes a float tensor the way TFLite's dynamic-range converter does.

    scale = max|w| / 127 and q = clamp(round(w * 127 / max|w|), -127, 127); an all-zero
    tensor gets scale 1.

    Args:
      weights: float array of any shape.

    Returns:
      A `QuantizedTensor` with int8 values of the same shape.
    """
    w = np.asarray(weights, dtype=np.float32)
    value_range = np.float32(np.max(np.abs(w))) if w.size else np.float32(0)
    if value_range == 0:
        return QuantizedTensor(np.zeros(w.shape, np.int8), np.float32(1.0))
    inv = np.float32(127) / value_range
    q = np.asarray(round_half_away(jnp.asarray(w * inv)))
    q = np.clip(q, -127, 127).astype(np.int8)
    return QuantizedTensor(q, np.float32(value_range / np.float32(127)))


def quantize_rows(x: jax.Array, asymmetric: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Quantizes each row of `x` to int8 (TFLite `BatchQuantizeFloats`).

    Args:
      x: float32 [B, n].
      asymmetric: asymmetric (zero point, range [-128, 127]) instead of symmetric ([-127, 127]).

    Returns:
      (q int8 [B, n], scaling_factor float32 [B], zero_point int32 [B]). An all-zero row
      gets q = 0, scaling factor 1 and zero point 0.
    """
    x = x.astype(jnp.float32)
    row_min = jnp.min(x, axis=-1)
    row_max = jnp.max(x, axis=-1)
    if not asymmetric:
        value_range = jnp.maximum(jnp.abs(row_min), jnp.abs(row_max))
        empty = value_range == 0
        safe_range = jnp.where(empty, jnp.float32(1), value_range)
        # An array divisor, not a constant: XLA rewrites division by a constant into an
        # inexact multiplication by its reciprocal.
        scaling_factor = safe_range / jnp.where(empty, jnp.float32(1), jnp.float32(127))
        inv = jnp.float32(127) / safe_range
        q = jnp.clip(round_half_away(x * inv[:, None]), -127, 127)
        q = jnp.where(empty[:, None], 0, q).astype(jnp.int8)
        return q, scaling_factor, jnp.zeros(x.shape[:-1], jnp.int32)

    # As NeonAsymmetricQuantizeFloats: the range width is a float32 difference; the scale and
    # zero point are computed in double. Ranges such as [-1, 1] put the zero point exactly on
    # a .5 tie that float32 would round the other way, so float64 even when x64 mode is off.
    rmin = jnp.minimum(0.0, row_min)
    rmax = jnp.maximum(0.0, row_max)
    width = rmax - rmin
    empty = width == 0
    with jax.enable_x64(True):
        rmin, rmax = rmin.astype(jnp.float64), rmax.astype(jnp.float64)
        levels = jnp.where(empty, 1.0, 255.0)  # an array divisor, as above
        scale = jnp.where(empty, 1.0, width.astype(jnp.float64) / levels)
        zero_point_from_min = -128.0 - rmin / scale
        zero_point_from_max = 127.0 - rmax / scale
        from_min_error = 128.0 + jnp.abs(rmin / scale)
        from_max_error = 127.0 + jnp.abs(rmax / scale)
        zero_point = jnp.where(from_min_error < from_max_error, zero_point_from_min, zero_point_from_max)
        zero_point = jnp.clip(round_half_away(zero_point), -128, 127)
        zero_point = jnp.where(empty, 0, zero_point).astype(jnp.int32)
        scaling_factor = jnp.where(empty, 1.0, scale).astype(jnp.float32)
    inv = jnp.float32(1) / scaling_factor
    # zero_point + round(x * inv), the zero point added after rounding: what LiteRT runs on
    # ARM and on x86 alike (NeonAsymmetricQuantizeFloats, via NEON_2_SSE on x86); the portable
    # kernel's round(zero_point + x * inv) differs on ties.
    q = zero_point[:, None] + round_half_away(x * inv[:, None]).astype(jnp.int32)
    q = jnp.where(empty[:, None], 0, jnp.clip(q, -128, 127)).astype(jnp.int8)
    return q, scaling_factor, zero_point


def hybrid_matmul(x: jax.Array, weights: jax.Array, row_scales: jax.Array, asymmetric: bool) -> jax.Array:
    """``x @ weights.T`` the hybrid way: per-row int8 inputs, int32 dots, float scaling.

    Args:
      x: float32 [B, n] activations.
      weights: int8 [m, n].
      row_scales: float32 [m], the weight scale of each output row.
      asymmetric: quantize `x` asymmetrically (`asymmetric_quantize_inputs`).

    Returns:
      float32 [B, m]: ``float(dot - row_sum * zero_point) * (scaling_factor * row_scale)``.
    """
    q, scaling_factor, zero_point = quantize_rows(x, asymmetric)
    dot = jax.lax.dot_general(q, weights, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    if asymmetric:
        row_sums = jnp.sum(weights.astype(jnp.int32), axis=1)
        dot = dot - zero_point[:, None] * row_sums[None, :]
    return dot.astype(jnp.float32) * (scaling_factor[:, None] * row_scales[None, :])
