"""The fixed-point arithmetic of TFLite's fully integer kernels, bit for bit.

One function per upstream primitive, named after it. Integer arithmetic wraps (two's
complement) wherever the C++ overflows in practice, saturates where it saturates, and
divides as C does (truncating toward zero). The 64-bit products and sums run under a
local ``jax.enable_x64``: callers need not enable x64.

* Host side (Prepare): `quantize_multiplier`, `checked_log2` in Python/NumPy floats with
  the precision of the C++ (float32 where it computes in float, float64 where in double).
* Device side: jnp functions on integer arrays, usable under `jax.jit`.

References: gemmlowp fixedpoint/fixedpoint.h; tflite/kernels/internal/common.h and
common.cc (MultiplyByQuantizedMultiplier, GetInvSqrtQuantizedMultiplierExp),
quantization_util.cc (QuantizeMultiplier, CheckedLog2), reference/portable_tensor_utils.cc
(the Portable* LSTM primitives); tflite-micro tensorflow/lite/kernels/internal/reference/
integer_ops/logistic.h, tanh.h, fully_connected.h, mul.h.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INT8 = (-128, 127)
INT16 = (-32768, 32767)
INT32 = (-(2**31), 2**31 - 1)

# ----------------------------------------------------------------------------- Prepare (host)


class Multiplier(NamedTuple):
    """A real scale as the kernels apply it: ``x * multiplier * 2^(shift - 31)``
    (positive shift = left shift). Static, hashable."""

    multiplier: int
    shift: int


def round_half_away(x: float) -> float:
    """`std::round` / `TfLiteRound` on a Python float: ties away from zero."""
    return math.copysign(math.floor(abs(x) + 0.5), x)


def quantize_multiplier(real: float) -> Multiplier:
    """QuantizeMultiplier (quantization_util.cc, double-rounding build): `real` as a Q0.31
    significand in [2^30, 2^31) and a power-of-two exponent.

    The argument is a double (float32 effective scales are widened exactly). Multipliers
    below about 2^-31 flush to (0, 0), as upstream.
    """
    if real == 0:
        return Multiplier(0, 0)
    if not math.isfinite(real):
        raise ValueError(f"a scale ratio of {real} has no quantized multiplier (the scales overflow)")
    q, shift = math.frexp(real)
    m = int(round_half_away(q * 2**31))  # exact: a double times a power of two
    if m == 2**31:
        m, shift = m // 2, shift + 1
    if shift < -31:
        return Multiplier(0, 0)
    return Multiplier(m, shift)


def checked_log2(scale: float) -> tuple[int, bool]:
    """CheckedLog2 (quantization_util.cc) in float32: (round(log2(scale)), whether `scale`
    is within 1e-3 (in log2) of that power of two). 2/65535 counts as 2^-15."""
    x = np.float32(scale)
    x_log2 = np.float32(np.log(x)) * (np.float32(1) / np.float32(np.log(np.float32(2))))
    rounded = np.float32(round_half_away(float(x_log2)))
    return int(rounded), bool(abs(x_log2 - rounded) < np.float32(1e-3))


def calculate_input_radius(input_integer_bits: int, input_left_shift: int, total_signed_bits: int = 31) -> int:
    """CalculateInputRadius (quantization_util.cc): the largest input magnitude whose rescaled
    value stays inside Q(input_integer_bits), floored."""
    max_input_rescaled = (
        1.0
        * ((1 << input_integer_bits) - 1)
        * (1 << (total_signed_bits - input_integer_bits))
        / (1 << input_left_shift)
    )
    return math.floor(max_input_rescaled)


# ----------------------------------------------------------------------------- lookup tables (host)
#
# The kernels' Prepare fills tables with the C library's float functions (expf, tanhf), which
# are not correctly rounded: the tables call the same functions through ctypes.


@functools.cache
def libm_float32(name: str) -> Callable[[float], np.float32]:
    """The C math library's float function `name` ("expf", "tanhf"), as the kernels call it."""
    fn = getattr(ctypes.CDLL(ctypes.util.find_library("m")), name)
    fn.restype, fn.argtypes = ctypes.c_float, [ctypes.c_float]
    return lambda x: np.float32(fn(float(x)))


def _round_half_away_np(x: np.ndarray) -> np.ndarray:
    """std::round on a NumPy float array or scalar, in its own precision."""
    whole = np.trunc(x)
    return np.where(np.abs(x - whole) >= 0.5, whole + np.sign(x), whole).astype(np.asarray(x).dtype)


def lut_int8(
    transform: Callable[[np.float32], np.float32],
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    dtype,
) -> np.ndarray:
    """LUTPopulate<int8_t / uint8_t> (common.h): `transform` of every input value in float32,
    quantized to `dtype`; [256], indexed by ``value - min(dtype)``."""
    low, high = _limits(dtype)
    values = np.arange(low, high + 1)
    dequantized = np.float32(input_scale) * (values - input_zero_point).astype(np.float32)
    transformed = np.array([transform(v) for v in dequantized], np.float32)
    rescaled = _round_half_away_np(transformed * (np.float32(1) / np.float32(output_scale)))
    quantized = (rescaled + np.float32(output_zero_point)).astype(np.int64)  # a truncating cast
    table = np.clip(quantized, low, high).astype(dtype)
    table.setflags(write=False)
    return table


def lut_int16(
    transform: Callable[[float], float],
    input_min: float,
    input_max: float,
    output_min: float,
    output_max: float,
    float_type: type = np.float64,
) -> np.ndarray:
    """LUTPopulateInt16 / gen_lut (common.h): int16 [513], 512 samples of `transform` over
    [input_min, input_max] plus the end point, each biased by half the midpoint error of the
    linear interpolation, as `lut_lookup16` reads them. Computed in `float_type` (the C++
    FloatT: double for LiteRT's softmax, float for TFLite Micro's)."""
    f = float_type
    steps = 512
    input_min, input_max, step = f(input_min), f(input_max), (f(input_max) - f(input_min)) / f(steps)
    half_step = step / f(2)
    scaling_inv = f(65536) / (f(output_max) - f(output_min))

    def sample(v) -> f:
        return f(transform(f(v)))

    def rounded(v):
        return f(_round_half_away_np(f(v)))

    table = np.empty(steps + 1, np.int16)
    for i in range(steps):
        val = sample(input_min + f(i) * step)
        midpoint = sample(input_min + f(i) * step + half_step)
        following = sample(input_min + f(i + 1) * step)
        sample_val = rounded(val * scaling_inv)
        interpolated = rounded((following * scaling_inv + rounded(val * scaling_inv)) / f(2))
        bias = rounded((interpolated - rounded(midpoint * scaling_inv)) / f(2))
        table[i] = np.clip(sample_val - bias, INT16[0], INT16[1])
    table[steps] = np.clip(rounded(sample(input_max) * scaling_inv), INT16[0], INT16[1])
    table.setflags(write=False)
    return table


# ----------------------------------------------------------------------------- gemmlowp scalar primitives


def _bits(x: jax.Array) -> int:
    return jnp.dtype(x.dtype).itemsize * 8


def _limits(dtype) -> tuple[int, int]:
    info = jnp.iinfo(dtype)
    return int(info.min), int(info.max)


def saturate(x: jax.Array, dtype) -> jax.Array:
    """Clamps an integer array to `dtype`'s range and casts (the kernels' clamp-then-store)."""
    low, high = _limits(dtype)
    return jnp.clip(x, low, high).astype(dtype)


def saturating_rounding_doubling_high_mul(a: jax.Array, b: jax.Array) -> jax.Array:
    """gemmlowp SaturatingRoundingDoublingHighMul for int16 or int32 `a` (`b` takes its type):
    ``round(a * b / 2^(bits - 1))``, ties away from zero, and MIN * MIN saturates to MAX
    (VQRDMULH). The product is formed in the double-width type."""
    a = jnp.asarray(a)
    dtype = a.dtype
    b = jnp.asarray(b, dtype)
    bits = _bits(a)
    low, high = _limits(dtype)
    with jax.enable_x64(True):
        wide = jnp.int32 if bits == 16 else jnp.int64
        ab = a.astype(wide) * b.astype(wide)
        half = 1 << (bits - 2)
        nudge = jnp.where(ab >= 0, jnp.asarray(half, wide), jnp.asarray(1 - half, wide))
        # C division truncates toward zero; lax.div does too (jnp's // would floor).
        high_part = lax.div(ab + nudge, jnp.asarray(1 << (bits - 1), wide)).astype(dtype)
    return jnp.where((a == low) & (b == low), jnp.asarray(high, dtype), high_part)


def rounding_divide_by_pot(x: jax.Array, exponent) -> jax.Array:
    """gemmlowp RoundingDivideByPOT: ``x / 2^exponent`` rounded to nearest, ties away from
    zero, in `x`'s type. `exponent` (0 to bits - 1) may be an array that broadcasts."""
    x = jnp.asarray(x)
    dtype = x.dtype
    e = jnp.asarray(exponent).astype(dtype)
    # (1 << e) - 1 in x's type: wraps to MAX for e = bits - 1, as Dup<T>((1ll << e) - 1).
    mask = lax.shift_left(jnp.ones_like(e), e) - jnp.ones_like(e)
    remainder = x & mask
    threshold = lax.shift_right_arithmetic(mask, jnp.ones_like(mask)) + (x < 0).astype(dtype)
    return lax.shift_right_arithmetic(x, jnp.broadcast_to(e, x.shape)) + (remainder > threshold).astype(dtype)


def saturating_rounding_multiply_by_pot(x: jax.Array, exponent: int) -> jax.Array:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent>: a saturating left shift for
    exponent > 0, a rounding right shift (`rounding_divide_by_pot`) for exponent < 0."""
    x = jnp.asarray(x)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    low, high = _limits(x.dtype)
    threshold = (1 << (_bits(x) - 1 - exponent)) - 1
    shifted = lax.shift_left(x, jnp.full_like(x, exponent))
    return jnp.where(x > threshold, high, jnp.where(x < -threshold, low, shifted)).astype(x.dtype)


def rounding_half_sum(a: jax.Array, b: jax.Array) -> jax.Array:
    """gemmlowp RoundingHalfSum (int16 or int32): ``(a + b + sign) / 2`` in the double-width
    type, C division."""
    a = jnp.asarray(a)
    with jax.enable_x64(True):
        wide = jnp.int32 if a.dtype == jnp.int16 else jnp.int64
        s = a.astype(wide) + jnp.asarray(b).astype(wide)
        sign = jnp.where(s >= 0, 1, -1).astype(wide)
        return lax.div(s + sign, jnp.asarray(2, wide)).astype(a.dtype)


def saturating_add(a: jax.Array, b: jax.Array) -> jax.Array:
    """gemmlowp SaturatingAdd (int16); also PortableCwiseAdd and TFLite Micro's
    AddElementWise: ``clamp16(a + b)``."""
    return saturate(jnp.asarray(a).astype(jnp.int32) + jnp.asarray(b).astype(jnp.int32), jnp.int16)


# ----------------------------------------------------------------------------- common.h


def multiply_by_quantized_multiplier(x: jax.Array, multiplier, shift) -> jax.Array:
    """MultiplyByQuantizedMultiplier(int32 x) (common.cc, double rounding):
    ``RDBPOT(SRDHM(x * 2^max(shift, 0), multiplier), max(-shift, 0))``.

    The left shift wraps in int32, as the C++ does. `multiplier` and `shift` are ints or
    int32 arrays that broadcast against `x` (layer norm's per-row inverse deviation).
    """
    x = jnp.asarray(x, jnp.int32)
    shift = jnp.asarray(shift, jnp.int32)
    left = lax.shift_left(jnp.ones_like(shift), jnp.maximum(shift, 0))
    product = saturating_rounding_doubling_high_mul(x * left, jnp.asarray(multiplier, jnp.int32))
    return rounding_divide_by_pot(product, jnp.maximum(-shift, 0))


def multiply_by_quantized_multiplier_ties_up(x: jax.Array, multiplier, shift) -> jax.Array:
    """The fixed-point multiplier of LiteRT's x86 matrix kernels (cpu_backend_gemm, ruy's
    kernels): as `multiply_by_quantized_multiplier`, but the final right shift rounds ties
    toward +infinity (``(v + 2^(n-1)) >> n``, an ARM rounding shift) where gemmlowp's
    RoundingDivideByPOT rounds them away from zero."""
    x = jnp.asarray(x, jnp.int32)
    shift = jnp.asarray(shift, jnp.int32)
    left = lax.shift_left(jnp.ones_like(shift), jnp.maximum(shift, 0))
    product = saturating_rounding_doubling_high_mul(x * left, jnp.asarray(multiplier, jnp.int32))
    right = jnp.broadcast_to(jnp.maximum(-shift, 0), product.shape)
    rounding = jnp.where(right > 0, lax.shift_left(jnp.ones_like(right), jnp.maximum(right - 1, 0)), 0)
    with jax.enable_x64(True):  # product + rounding may pass INT32_MAX
        total = product.astype(jnp.int64) + rounding.astype(jnp.int64)
        return lax.shift_right_arithmetic(total, right.astype(jnp.int64)).astype(jnp.int32)


def multiply_by_quantized_multiplier_int64(x: jax.Array, multiplier, shift) -> jax.Array:
    """MultiplyByQuantizedMultiplier(int64 x) (common.cc), int32 result.

    It keeps only 16 bits of the multiplier, rounded: ``(x * m16 + 2^(n-1)) >> n`` with
    ``m16 = (multiplier + 2^15) >> 16`` (0x7FFF from 0x7FFF0000 up) and ``n = 15 - shift``;
    the result is truncated to int32. `multiplier` and `shift` may be arrays.
    """
    with jax.enable_x64(True):
        x = jnp.asarray(x).astype(jnp.int64)
        m = jnp.asarray(multiplier, jnp.int64)
        reduced = jnp.where(m < 0x7FFF0000, (m + (1 << 15)) >> 16, 0x7FFF)
        total = 15 - jnp.asarray(shift, jnp.int64)
        rounding = lax.shift_left(jnp.ones_like(total), total - 1)
        return lax.shift_right_arithmetic(x * reduced + rounding, jnp.broadcast_to(total, x.shape)).astype(jnp.int32)


def inv_sqrt_quantized_multiplier_exp(x: jax.Array, reverse_shift: int = -1) -> tuple[jax.Array, jax.Array]:
    """GetInvSqrtQuantizedMultiplierExp (common.h): 1/sqrt(x) of int32 `x` as
    (multiplier, shift), elementwise, by five Newton-Raphson steps in gemmlowp's Q3.28.

    x <= 1 gives (INT32_MAX, 0). The shift is returned times `reverse_shift` (the layer
    norm passes -1, making it a MultiplyByQuantizedMultiplier shift).
    """
    x = jnp.asarray(x, jnp.int32)
    small = x <= 1
    x = jnp.maximum(x, 2)  # the x <= 1 lanes are replaced at the end
    big = x >= (1 << 29)  # at most once: x < 2^31
    shift = 11 + big.astype(jnp.int32)
    x = jnp.where(big, x // 4, x)
    pairs = (lax.clz(x) - 1) // 2 - 1  # max_left_shift_bit_pairs - 1
    shift = shift - pairs
    x = lax.shift_left(x, 2 * pairs)
    srdhm = saturating_rounding_doubling_high_mul
    half_input = rounding_divide_by_pot(lax.shift_right_arithmetic(x, jnp.ones_like(x)), 1)  # F3
    half_three = jnp.int32((1 << 28) + (1 << 27))  # 1.5 in F3
    y = jnp.full_like(x, 1 << 28)  # F3 one
    for _ in range(5):
        y3 = saturating_rounding_multiply_by_pot(srdhm(srdhm(y, y), y), 6)  # F9 -> F3
        y = saturating_rounding_multiply_by_pot(srdhm(half_three, y) - srdhm(half_input, y3), 3)  # F6 -> F3
    y = srdhm(y, jnp.int32(1518500250))  # sqrt(2) / 2 in F0
    y = jnp.where(shift < 0, lax.shift_left(y, jnp.maximum(-shift, 0)), y)
    shift = jnp.maximum(shift, 0)
    return jnp.where(small, jnp.int32(INT32[1]), y), jnp.where(small, 0, shift * reverse_shift).astype(jnp.int32)


# ----------------------------------------------------------------------------- gemmlowp tanh / logistic / exp
#
# Raw int16 or int32 values as FixedPoint<raw, integer_bits>; results are Q0.15 or Q0.31.
# Raw Add/Sub/Neg wrap, as gemmlowp's raw operators do. Constants are given as int32 raw
# values; int16 code rounds them to 16 bits (RescaleConstantInitializer).


def _constant(raw32: int, dtype) -> jax.Array:
    """A gemmlowp constant given as an int32 raw value, in `dtype` (int16: ``RDBPOT(raw32, 16)``)."""
    if jnp.dtype(dtype) == jnp.int32:
        return jnp.int32(raw32)
    return rounding_divide_by_pot(jnp.int32(raw32), 16).astype(dtype)


def _pot(exponent: int, integer_bits: int, dtype) -> jax.Array:
    """FixedPoint<raw, integer_bits>::ConstantPOT<exponent>: the raw value of 2^exponent."""
    return jnp.asarray(1 << (jnp.iinfo(dtype).bits - 1 - integer_bits + exponent), dtype)


def _exp_on_interval_between_negative_one_quarter_and_0_excl(a: jax.Array) -> jax.Array:
    """exp(a) for a in [-1/4, 0), Q0: a Taylor expansion around -1/8."""
    srdhm = saturating_rounding_doubling_high_mul
    constant_term = _constant(1895147668, a.dtype)  # exp(-1/8)
    one_third = _constant(715827883, a.dtype)
    x = a + _pot(-3, 0, a.dtype)  # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = rounding_divide_by_pot(srdhm(x4_over_4 + x3, one_third) + x2, 1)
    product = srdhm(constant_term, x + poly)
    # AddSaturatingIf16Bit
    return saturating_add(constant_term, product) if a.dtype == jnp.int16 else constant_term + product


# (k, exp(-2^k) as an int32 Q0.31 raw value) for the barrel shifter of exp_on_negative_values.
_EXP_OF_MINUS_POWERS_OF_TWO = (
    (-2, 1672461947),
    (-1, 1302514674),
    (0, 790015084),
    (1, 290630308),
    (2, 39332535),
    (3, 720401),
    (4, 242),
)


def exp_on_negative_values(a: jax.Array, integer_bits: int) -> jax.Array:
    """gemmlowp exp_on_negative_values: exp(a) for a <= 0 in Q(integer_bits) (int16 or
    int32 raw), Q0 result of the same raw type."""
    a = jnp.asarray(a)
    dtype = a.dtype
    fractional_bits = jnp.iinfo(dtype).bits - 1 - integer_bits
    one_quarter = _pot(-2, integer_bits, dtype)
    a_mod_quarter_minus_one_quarter = (a & (one_quarter - jnp.asarray(1, dtype))) - one_quarter
    result = _exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits)
    )
    remainder = a_mod_quarter_minus_one_quarter - a
    # Multiply by exp(-2^k) for each bit k of the remainder (the barrel shifter).
    for exponent, raw32 in _EXP_OF_MINUS_POWERS_OF_TWO:
        if integer_bits > exponent:
            bit = jnp.asarray(1 << (fractional_bits + exponent), dtype)
            scaled = saturating_rounding_doubling_high_mul(result, _constant(raw32, dtype))
            result = jnp.where((remainder & bit) != 0, scaled, result)
    if integer_bits > 5:  # below -32, exp is 0
        clamp = _constant(-(1 << (36 - integer_bits)), dtype)
        result = jnp.where(a < clamp, jnp.asarray(0, dtype), result)
    return jnp.where(a == 0, jnp.asarray(jnp.iinfo(dtype).max, dtype), result)


def _newton_reciprocal(half_denominator: jax.Array) -> jax.Array:
    """1 / (2 * half_denominator) in Q2 by three Newton-Raphson steps (48/17 - 32/17 d)."""
    srdhm = saturating_rounding_doubling_high_mul
    dtype = half_denominator.dtype
    one = _pot(0, 2, dtype)  # 1.0 in Q2
    x = _constant(1515870810, dtype) + srdhm(half_denominator, _constant(-1010580540, dtype))
    for _ in range(3):
        x = x + saturating_rounding_multiply_by_pot(srdhm(x, one - srdhm(half_denominator, x)), 2)
    return x


def _one_minus_x_over_one_plus_x_for_x_in_0_1(a: jax.Array) -> jax.Array:
    """(1 - a) / (1 + a), Q0."""
    x = _newton_reciprocal(rounding_half_sum(a, jnp.asarray(jnp.iinfo(a.dtype).max, a.dtype)))
    return saturating_rounding_multiply_by_pot(x - _pot(0, 2, a.dtype), 2)


def one_over_one_plus_x_for_x_in_0_1(a: jax.Array) -> jax.Array:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: 1 / (1 + a) for Q0 `a` in [0, 1), Q0."""
    x = _newton_reciprocal(rounding_half_sum(a, jnp.asarray(jnp.iinfo(a.dtype).max, a.dtype)))
    return saturating_rounding_multiply_by_pot(x, 1)


def gemmlowp_tanh(a: jax.Array, integer_bits: int) -> jax.Array:
    """gemmlowp::tanh of int16 or int32 Q(integer_bits) raw values, Q0 (0 <= integer_bits <= 13
    for int16)."""
    a = jnp.asarray(a)
    negative = a < 0
    n = jnp.where(negative, a, -a)
    t = _one_minus_x_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(n, integer_bits + 1))  # exp(2n)
    return jnp.where(a == 0, jnp.asarray(0, a.dtype), jnp.where(negative, -t, t))


def gemmlowp_logistic(a: jax.Array, integer_bits: int) -> jax.Array:
    """gemmlowp::logistic of int16 or int32 Q(integer_bits) raw values, Q0."""
    a = jnp.asarray(a)
    positive = a > 0
    absolute = jnp.where(positive, a, -a)
    if_positive = one_over_one_plus_x_for_x_in_0_1(exp_on_negative_values(-absolute, integer_bits))
    if_negative = jnp.asarray(jnp.iinfo(a.dtype).max, a.dtype) - if_positive
    return jnp.where(a == 0, _pot(-1, 0, a.dtype), jnp.where(positive, if_positive, if_negative))


_INT16_INPUTS = np.arange(INT16[0], INT16[1] + 1)


@functools.cache
def logistic_table() -> np.ndarray:
    """int16 [65536]: `gemmlowp_logistic` of every Q3.12 input, indexed by ``x + 32768``."""
    return _table(gemmlowp_logistic, 3)


@functools.cache
def tanh_table(integer_bits: int) -> np.ndarray:
    """int16 [65536]: `gemmlowp_tanh` of every Q(integer_bits) input, indexed by ``x + 32768``."""
    return _table(gemmlowp_tanh, integer_bits)


def _table(function, integer_bits: int) -> np.ndarray:
    # Evaluated now (also when first needed inside a trace), compiled as one computation.
    with jax.ensure_compile_time_eval():
        table = np.asarray(jax.jit(function, static_argnums=1)(jnp.asarray(_INT16_INPUTS, jnp.int16), integer_bits))
    table.setflags(write=False)
    return table


def _lookup(table: np.ndarray, x: jax.Array) -> jax.Array:
    return jnp.asarray(table)[jnp.asarray(x).astype(jnp.int32) + 32768]


# ----------------------------------------------------------------------------- portable_tensor_utils (LiteRT)


def matrix_batch_vector_multiply_accumulate(
    x: jax.Array, weights: jax.Array, bias: jax.Array, scale: Multiplier, output_zp: int, output: jax.Array
) -> jax.Array:
    """PortableMatrixBatchVectorMultiplyAccumulate (int8 in, int16 or int8 out):
    ``clamp(MBQM(bias + x . W^T, scale) + output_zp + output)``.

    Args:
      x: int8 [B, K]. weights: int8 [R, K]. bias: int32 [R] (zero points folded in).
      scale: the output's multiplier. output: the [B, R] values accumulated into; its dtype
        (int16 or int8) is the result's, and the sum saturates to it.
    """
    dot = lax.dot_general(x, weights, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
    acc = multiply_by_quantized_multiplier(dot + bias, *scale) + output_zp
    return saturate(acc + output.astype(jnp.int32), output.dtype)


def vector_batch_vector_cwise_product_accumulate(
    vector: jax.Array, batch_vector: jax.Array, n_batch: int, scale: Multiplier, result: jax.Array
) -> jax.Array:
    """PortableVectorBatchVectorCwiseProductAccumulate (int16), on flat buffers:
    ``result[k] = clamp16(result[k] + MBQM(vector[k mod v] * batch_vector[k], scale))`` for
    k < n_batch * v, v = len(vector); later elements of `result` are left alone.

    Args:
      vector: int16 [v]. batch_vector: int16, flat, at least n_batch * v long.
      result: int16, flat, at least n_batch * v long.
    """
    k = n_batch * vector.shape[0]
    products = jnp.tile(vector.astype(jnp.int32), n_batch) * batch_vector[:k].astype(jnp.int32)
    head = saturate(result[:k].astype(jnp.int32) + multiply_by_quantized_multiplier(products, *scale), jnp.int16)
    return jnp.concatenate([head, result[k:]])


def apply_layer_norm(
    x: jax.Array, weights: jax.Array, bias: jax.Array, scale: Multiplier, variance_limit: int
) -> jax.Array:
    """PortableApplyLayerNorm: integer layer norm of each row of int16 `x` [B, n], Q3.12 out.

    mean and variance come from int64 sums at 2^10 resolution (``2^20 / n`` truncates for
    a non power-of-two n); a variance below 1 becomes `variance_limit`. Each value is
    rescaled by the inverse deviation (`inv_sqrt_quantized_multiplier_exp`), times the
    int16 weight plus the int32 bias in int32 (wraps), divided by 1024 rounding half away,
    then rescaled by `scale` (the weights' scale) to Q3.12 and saturated to int16.
    """
    n = x.shape[-1]
    v = x.astype(jnp.int32)
    with jax.enable_x64(True):
        total = jnp.sum(v.astype(jnp.int64), axis=-1)
        total_sq = jnp.sum((v * v).astype(jnp.int64), axis=-1)
        mean = lax.div(total * 1024, jnp.int64(n)).astype(jnp.int32)
        variance = total_sq * ((1 << 20) // n) - mean.astype(jnp.int64) ** 2
        variance = lax.div(variance, jnp.int64(1 << 20)).astype(jnp.int32)
    variance = jnp.where(variance < 1, variance_limit, variance)
    inv_multiplier, inv_shift = inv_sqrt_quantized_multiplier_exp(variance, reverse_shift=-1)
    shifted = 1024 * v - mean[..., None]
    rescaled = multiply_by_quantized_multiplier(shifted, inv_multiplier[..., None], inv_shift[..., None])
    weighted = rescaled * weights.astype(jnp.int32) + bias  # int32, wraps like the C++
    with jax.enable_x64(True):
        weighted = weighted.astype(jnp.int64)
        rounded = lax.div(jnp.where(weighted > 0, weighted + 512, weighted - 512), jnp.int64(1024)).astype(jnp.int32)
    return saturate(multiply_by_quantized_multiplier(rounded, scale.multiplier, scale.shift + 12), jnp.int16)


def apply_sigmoid(x: jax.Array) -> jax.Array:
    """PortableApplySigmoid: gemmlowp logistic of Q3.12 int16, Q0.15 (a table lookup)."""
    return _lookup(logistic_table(), x)


def apply_tanh(integer_bits: int, x: jax.Array) -> jax.Array:
    """PortableApplyTanh: gemmlowp tanh of Q(integer_bits) int16, Q0.15 (a table lookup).
    Upstream dispatches integer_bits 0 to 6 only."""
    if not 0 <= integer_bits <= 6:
        raise ValueError(f"ApplyTanh handles integer_bits 0 to 6, got {integer_bits}")
    return _lookup(tanh_table(integer_bits), x)


def cwise_mul(a: jax.Array, b: jax.Array, shift: int) -> jax.Array:
    """PortableCwiseMul(shift): ``(int16) RDBPOT(a * b, shift)``; the cast wraps, no saturation."""
    return rounding_divide_by_pot(a.astype(jnp.int32) * b.astype(jnp.int32), shift).astype(jnp.int16)


def cwise_mul_quantized(a: jax.Array, b: jax.Array, scale: Multiplier, output_zp: int) -> jax.Array:
    """PortableCwiseMul(multiplier, shift, zp): ``clamp8(MBQM(a * b, scale) + output_zp)``, int8."""
    product = multiply_by_quantized_multiplier(a.astype(jnp.int32) * b.astype(jnp.int32), *scale)
    return saturate(product + output_zp, jnp.int8)


def cwise_clipping(x: jax.Array, clip: int) -> jax.Array:
    """CwiseClipping: ``max(min(clip, x), -clip)``."""
    return jnp.maximum(jnp.minimum(x, clip), -clip).astype(x.dtype)


def sub1_vector(x: jax.Array) -> jax.Array:
    """PortableSub1Vector (int16): ``32767 - x``, 1 - x in Q0.15."""
    return (jnp.int32(INT16[1]) - x.astype(jnp.int32)).astype(jnp.int16)


# ----------------------------------------------------------------------------- TFLite Micro

# sigmoid(i / 24) in unsigned 0.16 fixed point, 256 entries; tanh reads it as
# tanh(x) = 2 sigmoid(2x) - 1 (sigmoid_table_uint16, tflite/kernels/internal/common.h).
SIGMOID_TABLE_UINT16 = np.array(
    [
        32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064, 42688,
        43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409,
        51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
        57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110,
        61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186,
        63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
        64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900,
        64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208,
        65221, 65234, 65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
        65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449,
        65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
        65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
        65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
        65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530,
        65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
        65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535,
    ],
    np.int32,
)  # fmt: skip


def _interpolate(magnitude: jax.Array, fraction_bits: int, saturated: int) -> jax.Array:
    """The table read at |v| / 2^fraction_bits with linear interpolation, in
    Q(16 + fraction_bits); `saturated` from index 255 up."""
    table = jnp.asarray(SIGMOID_TABLE_UINT16)
    index = magnitude >> fraction_bits
    low = table[jnp.minimum(index, 254)]
    high = table[jnp.minimum(index + 1, 255)]
    fraction = magnitude & ((1 << fraction_bits) - 1)
    return jnp.where(index >= 255, saturated, (low << fraction_bits) + fraction * (high - low))


def integer_logistic16(x: jax.Array, input_multiplier: int, input_left_shift: int) -> jax.Array:
    """reference_integer_ops::Logistic (int16): sigmoid from the 256-entry table with linear
    interpolation, Q0.15. The input is rescaled to the table's units of 1/24 in Q.9 by
    ``(x * input_multiplier + round) >> input_left_shift``; multiplier 0 is the power-of-two
    case, ``x * (3 << input_left_shift)``."""
    if input_multiplier == 0:
        input_multiplier, input_left_shift = 3 << input_left_shift, 0
    rounding = (1 << (input_left_shift - 1)) if input_left_shift > 0 else 0
    v = (jnp.asarray(x).astype(jnp.int32) * input_multiplier + rounding) >> input_left_shift
    r = _interpolate(jnp.abs(v), 9, 0x7FFF << 10)
    r = jnp.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1)
    return (r >> 10).astype(jnp.int16)


def integer_tanh16(x: jax.Array, input_multiplier: int, input_left_shift: int) -> jax.Array:
    """reference_integer_ops::Tanh (int16): tanh(x) = 2 sigmoid(2x) - 1 from the same table
    (units of 1/24 in Q.8), Q0.15; the input rescale is `integer_logistic16`'s."""
    if input_multiplier == 0:
        input_multiplier, input_left_shift = 3 << input_left_shift, 0
    rounding = (1 << (input_left_shift - 1)) if input_left_shift > 0 else 0
    v = (jnp.asarray(x).astype(jnp.int32) * input_multiplier + rounding) >> input_left_shift
    r = _interpolate(jnp.abs(v), 8, 0xFFFF << 8)
    r = jnp.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return (r >> 8).astype(jnp.int16)


def tflm_logistic(x: jax.Array) -> jax.Array:
    """TFLite Micro's LSTM gate sigmoid: `integer_logistic16` of Q3.12 `x` (the power-of-two
    case with shift 0: 3x / 2^9 is x / 4096 * 24 / 2), Q0.15."""
    return integer_logistic16(x, 0, 0)


def tflm_tanh(x: jax.Array, cell_state_scale_power: int) -> jax.Array:
    """TFLite Micro's LSTM Tanh(cell_state_scale_power) (lstm_eval.cc): `integer_tanh16` of
    x * 2^cell_state_scale_power, Q0.15. The input becomes ``x * 3 * 2^(12 + p)`` (table
    units of 1/24 in Q.8 after the 2x of tanh(x) = 2 sigmoid(2x) - 1), with a rounding right
    shift when 12 + p < 0.
    """
    left_shift = 15 + cell_state_scale_power - 3
    return integer_tanh16(x, *((3 << left_shift, 0) if left_shift >= 0 else (3, -left_shift)))


def lut_lookup16(x: jax.Array, table: np.ndarray) -> jax.Array:
    """LUTLookup (common.h, int16): `table` [513] read at the top 9 bits of `x`, linearly
    interpolated by the low 7 (rounded), int16."""
    v = jnp.asarray(x).astype(jnp.int32)
    table = jnp.asarray(table, jnp.int32)
    index = 256 + (v >> 7)
    base = table[index]
    slope = table[index + 1] - base
    return (base + ((slope * (v & 0x7F) + 64) >> 7)).astype(jnp.int16)


def get_reciprocal(x: jax.Array, x_integer_digits: int) -> tuple[jax.Array, jax.Array]:
    """GetReciprocal (common.h): 1 / x for positive int32 Q(x_integer_digits) `x`, as a Q0.31
    scale and the number of bits of x above 1.0: ``(1 / (x / 2^bits), bits)``."""
    x = jnp.asarray(x, jnp.int32)
    headroom_plus_one = lax.clz(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    with jax.enable_x64(True):  # (uint32 x << headroom) - 2^31, which wraps
        shifted = lax.shift_left(x.astype(jnp.int64), headroom_plus_one.astype(jnp.int64)) - (1 << 31)
        shifted_sum_minus_one = shifted.astype(jnp.int32)
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


def fully_connected(
    x: jax.Array, weights: jax.Array, bias: jax.Array | None, input_zp: int, scale: Multiplier
) -> jax.Array:
    """reference_integer_ops::FullyConnected with int16 output, as TFLite Micro's LSTM gates use it.

    int8 `x`: ``clamp16(MBQM(sum w * (x - input_zp) + bias, scale))``, int32 accumulator.
    int16 `x` (16x8): ``clamp16(MBQM64(sum w * x + bias, scale))``, int64 accumulator and
    int64 bias, the 16-bit-multiplier rescale (`multiply_by_quantized_multiplier_int64`);
    the input zero point is not read.

    Args:
      x: int8 or int16 [B, K]. weights: int8 [R, K]. bias: int32 / int64 [R] or None.
    """
    dims = (((1,), (1,)), ((), ()))
    if x.dtype == jnp.int8:
        acc = lax.dot_general(x.astype(jnp.int32) - input_zp, weights.astype(jnp.int32), dims)
        if bias is not None:
            acc = acc + bias
        return saturate(multiply_by_quantized_multiplier(acc, *scale), jnp.int16)
    with jax.enable_x64(True):
        acc = lax.dot_general(x.astype(jnp.int64), weights.astype(jnp.int64), dims)
        if bias is not None:
            acc = acc + jnp.asarray(bias).astype(jnp.int64)
        return saturate(multiply_by_quantized_multiplier_int64(acc, *scale), jnp.int16)


def mul_elementwise(a: jax.Array, b: jax.Array, scale: Multiplier, output_zp: int, dtype) -> jax.Array:
    """reference_integer_ops::MulElementwise (int16 inputs, zero offsets):
    ``clamp(output_zp + MBQM(a * b, scale))`` to `dtype` (int8 or int16)."""
    product = multiply_by_quantized_multiplier(a.astype(jnp.int32) * b.astype(jnp.int32), *scale)
    return saturate(product + output_zp, dtype)
