"""The fixed-point primitives of TFLite's integer kernels on plain Python integers.

A scalar restatement of the C++ semantics, independent of `jaxlstm.ops._fixed_point`:
every value is a Python int, `wrap` makes two's-complement overflow explicit, `c_div`
is C's truncating division. Slow; for testing.
"""

from __future__ import annotations


def wrap(v: int, bits: int) -> int:
    """v as a two's-complement integer of `bits` bits."""
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def clamp(v: int, bits: int) -> int:
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def c_div(a: int, b: int) -> int:
    """C integer division: truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def srdhm(a: int, b: int, bits: int = 32) -> int:
    """SaturatingRoundingDoublingHighMul."""
    low = -(1 << (bits - 1))
    if a == low and b == low:
        return (1 << (bits - 1)) - 1
    ab = a * b
    nudge = (1 << (bits - 2)) if ab >= 0 else 1 - (1 << (bits - 2))
    return wrap(c_div(ab + nudge, 1 << (bits - 1)), bits)


def rdbpot(x: int, exponent: int, bits: int = 32) -> int:
    """RoundingDivideByPOT: round(x / 2^exponent), ties away from zero."""
    mask = wrap((1 << exponent) - 1, bits)
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def saturating_mul_pot(x: int, exponent: int, bits: int = 32) -> int:
    """SaturatingRoundingMultiplyByPOT<exponent>."""
    if exponent <= 0:
        return rdbpot(x, -exponent, bits)
    threshold = (1 << (bits - 1 - exponent)) - 1
    if x > threshold:
        return (1 << (bits - 1)) - 1
    if x < -threshold:
        return -(1 << (bits - 1))
    return wrap(x << exponent, bits)


def mbqm(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier(int32), double rounding; the left shift wraps."""
    left, right = max(shift, 0), max(-shift, 0)
    return rdbpot(srdhm(wrap(x * wrap(1 << left, 32), 32), multiplier), right)


def mbqm64(x: int, multiplier: int, shift: int) -> int:
    """MultiplyByQuantizedMultiplier(int64): the 16-bit reduced multiplier."""
    reduced = (multiplier + (1 << 15)) >> 16 if multiplier < 0x7FFF0000 else 0x7FFF
    total = 15 - shift
    return wrap((x * reduced + (1 << (total - 1))) >> total, 32)


def inv_sqrt(x: int) -> tuple[int, int]:
    """GetInvSqrtQuantizedMultiplierExp with reverse_shift = -1."""
    if x <= 1:
        return (1 << 31) - 1, 0
    shift = 11
    while x >= 1 << 29:
        x //= 4
        shift += 1
    clz = 32 - x.bit_length()
    pairs = (clz - 1) // 2 - 1
    shift -= pairs
    x <<= 2 * pairs
    half_input = rdbpot(x >> 1, 1)
    half_three = (1 << 28) + (1 << 27)
    y = 1 << 28
    for _ in range(5):
        y3 = saturating_mul_pot(srdhm(srdhm(y, y), y), 6)
        y = saturating_mul_pot(wrap(srdhm(half_three, y) - srdhm(half_input, y3), 32), 3)
    y = srdhm(y, 1518500250)
    if shift < 0:
        y = wrap(y << -shift, 32)
        shift = 0
    return y, -shift


def layer_norm_row(row: list[int], weights: list[int], bias: list[int], multiplier: int, shift: int, limit: int):
    """PortableApplyLayerNorm on one row."""
    n = len(row)
    total = sum(row)
    total_sq = sum(v * v for v in row)
    mean = wrap(c_div(total * 1024, n), 32)
    variance = total_sq * ((1 << 20) // n) - mean * mean
    variance2 = wrap(c_div(variance, 1 << 20), 32)
    if variance2 < 1:
        variance2 = limit
    a, b = inv_sqrt(variance2)
    out = []
    for v, w, c in zip(row, weights, bias):
        rescaled = mbqm(wrap(1024 * v - mean, 32), a, b)
        val3 = wrap(rescaled * w + c, 32)
        val4 = wrap(c_div(val3 + 512 if val3 > 0 else val3 - 512, 1024), 32)
        out.append(clamp(mbqm(val4, multiplier, shift + 12), 16))
    return out


# ----------------------------------------------------------------------------- gemmlowp, int16 raw


def _c16(raw32: int) -> int:
    return wrap(rdbpot(raw32, 16), 16)


def _exp_interval(a: int) -> int:
    x = wrap(a + (1 << 12), 16)
    x2 = srdhm(x, x, 16)
    x3 = srdhm(x2, x, 16)
    x4 = srdhm(x2, x2, 16)
    x4_over_4 = rdbpot(x4, 2, 16)
    poly = rdbpot(wrap(srdhm(wrap(x4_over_4 + x3, 16), _c16(715827883), 16) + x2, 16), 1, 16)
    constant = _c16(1895147668)
    return clamp(constant + srdhm(constant, wrap(x + poly, 16), 16), 16)


_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535), (3, 720401), (4, 242))


def exp_on_negative_values(a: int, integer_bits: int) -> int:
    fractional = 15 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod = wrap((a & (quarter - 1)) - quarter, 16)
    result = _exp_interval(saturating_mul_pot(a_mod, integer_bits, 16))
    remainder = wrap(a_mod - a, 16)
    for exponent, raw32 in _BARREL:
        if integer_bits > exponent and remainder & (1 << (fractional + exponent)):
            result = srdhm(result, _c16(raw32), 16)
    if integer_bits > 5 and a < _c16(-(1 << (36 - integer_bits))):
        result = 0
    return 32767 if a == 0 else result


def _reciprocal(half_denominator: int) -> int:
    x = wrap(_c16(1515870810) + srdhm(half_denominator, _c16(-1010580540), 16), 16)
    for _ in range(3):
        t = wrap((1 << 13) - srdhm(half_denominator, x, 16), 16)
        x = wrap(x + saturating_mul_pot(srdhm(x, t, 16), 2, 16), 16)
    return x


def _half_sum(a: int, b: int) -> int:
    s = a + b
    return wrap(c_div(s + (1 if s >= 0 else -1), 2), 16)


def tanh16(a: int, integer_bits: int) -> int:
    """gemmlowp::tanh of an int16 Q(integer_bits) raw value, Q0.15."""
    n = a if a < 0 else wrap(-a, 16)
    e = exp_on_negative_values(n, integer_bits + 1)
    t = saturating_mul_pot(wrap(_reciprocal(_half_sum(e, 32767)) - (1 << 13), 16), 2, 16)
    if a == 0:
        return 0
    return wrap(-t, 16) if a < 0 else t


def logistic16(a: int, integer_bits: int) -> int:
    """gemmlowp::logistic of an int16 Q(integer_bits) raw value, Q0.15."""
    absolute = a if a > 0 else wrap(-a, 16)
    e = exp_on_negative_values(wrap(-absolute, 16), integer_bits)
    positive = saturating_mul_pot(_reciprocal(_half_sum(e, 32767)), 1, 16)
    if a == 0:
        return 16384
    return positive if a > 0 else wrap(32767 - positive, 16)


# ----------------------------------------------------------------------------- TFLite Micro


def tflm_logistic(x: int, table) -> int:
    v = x * 3
    a = abs(v)
    index = a >> 9
    if index >= 255:
        r = 0x7FFF << 10
    else:
        r = (int(table[index]) << 9) + (a & 0x1FF) * (int(table[index + 1]) - int(table[index]))
    r = r + (1 << 9) if v >= 0 else (1 << 25) - r + (1 << 9) - 1
    return r >> 10


def tflm_tanh(x: int, power: int, table) -> int:
    left = 15 + power - 3
    multiplier, right = (3 << left, 0) if left >= 0 else (3, -left)
    rounding = (1 << (right - 1)) if right > 0 else 0
    v = (x * multiplier + rounding) >> right
    a = abs(v)
    index = a >> 8
    if index >= 255:
        r = 0xFFFF << 8
    else:
        r = (int(table[index]) << 8) + (a & 0xFF) * (int(table[index + 1]) - int(table[index]))
    r = r - (1 << 23) + (1 << 7) if v >= 0 else -r + (1 << 23) + (1 << 7) - 1
    return r >> 8
