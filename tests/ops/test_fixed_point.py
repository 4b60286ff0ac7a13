"""The fixed-point primitives of the integer kernels, each alone, bit for bit.

Golden values come from upstream's own tests (LiteRT tflite/kernels/internal/
tensor_utils_test.cc and quantization_util_test.cc, quoted below); everything else is
checked against `tests/ops/int_fixed_point.py`, a plain-Python-int restatement of the
C++ semantics, with hypothesis or exhaustively over int16.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlstm.ops import _fixed_point as fp
from tests.ops import int_fixed_point as ref

INT32 = st.integers(-(2**31), 2**31 - 1)
INT16 = st.integers(-(2**15), 2**15 - 1)
SETTINGS = settings(max_examples=60, deadline=None)
# Fixed-size batches and jitted primitives with array operands: one compilation per test.
N = 24
_srdhm = jax.jit(fp.saturating_rounding_doubling_high_mul)
_rdbpot = jax.jit(fp.rounding_divide_by_pot)
_mbqm = jax.jit(fp.multiply_by_quantized_multiplier)
_mbqm_ties_up = jax.jit(fp.multiply_by_quantized_multiplier_ties_up)
_mbqm64 = jax.jit(fp.multiply_by_quantized_multiplier_int64)
_inv_sqrt = jax.jit(fp.inv_sqrt_quantized_multiplier_exp)


@jax.jit
def _layer_norm(x, weights, bias, multiplier, shift, limit):
    return fp.apply_layer_norm(x, weights, bias, fp.Multiplier(multiplier, shift), limit)


def _i32(values) -> jax.Array:
    return jnp.asarray(np.asarray(values, np.int64).astype(np.int32))


def _i16(values) -> jax.Array:
    return jnp.asarray(np.asarray(values, np.int16))


# ----------------------------------------------------------------------------- upstream: quantization_util_test.cc


@pytest.mark.parametrize(
    "real,expected",
    [
        (-4, (-1073741824, 3)),
        (-0.125, (-1073741824, -2)),
        (0, (0, 0)),
        (0.125, (1073741824, -2)),
        (0.5, (1073741824, 0)),
        (1, (1073741824, 1)),
        (4, (1073741824, 3)),
        (0.50 - 5e-9, (2147483627, -1)),
        (0.50 - 1e-10, (1073741824, 0)),
        (1 - 1e-9, (2147483646, 0)),
        (1.25, (1342177280, 1)),
        (2 - 1e-9, (2147483647, 1)),
        (2 - 1e-11, (1073741824, 2)),
        (2.0**-31, (1073741824, -30)),  # QuantizeMultiplierUnderflow
        (2.0**-32, (1073741824, -31)),
        (float(np.ldexp(np.float32(0.99), -32)), (0, 0)),
        (2.0**-33, (0, 0)),
    ],
)
def test_quantize_multiplier_upstream(real, expected):
    assert tuple(fp.quantize_multiplier(real)) == expected


def test_inv_sqrt_quantized_multiplier_exp_upstream():
    cases = {
        0: (2**31 - 1, 0),
        1: (2**31 - 1, 0),
        2: (1518498372, 0),
        3: (1239850284, 0),
        4: (1073741828, 0),
        100: (214748363, 0),
        10000: (343597361, 4),
        1000000: (274877901, 7),
        100000000: (219902323, 10),
        1 << 30: (268435457, 12),
        2**31 - 1: (189812531, 12),
    }
    multiplier, shift = fp.inv_sqrt_quantized_multiplier_exp(_i32(list(cases)), reverse_shift=1)
    assert list(zip(multiplier.tolist(), shift.tolist())) == list(cases.values())


def _times(x: int, real: float, wide: bool = False) -> int:
    m = fp.quantize_multiplier(real)
    if wide:
        with jax.enable_x64(True):
            return int(fp.multiply_by_quantized_multiplier_int64(jnp.asarray(x, jnp.int64), *m))
    return int(fp.multiply_by_quantized_multiplier(_i32(x), *m))


def test_multiply_by_quantized_multiplier_upstream():
    cases = [(0, 0.1, 0), (1, 0, 0), (10000, 0.00097656, 10), (-10000, 0.00097656, -10)]
    cases += [(-(2**31), 0.00001, -21475), (2**31 - 1, 0.00001, 21475), (10000, -0.00097656, -10)]
    cases += [(-(2**31), -0.00001, 21475), (2**31 - 1, -0.00001, -21475)]
    assert [_times(x, real) for x, real, _ in cases] == [e for *_, e in cases]
    expected = round((2**31 - 1) * (2**31 - 1) / 2**34)
    assert int(fp.multiply_by_quantized_multiplier(_i32(2**31 - 1), 2**31 - 1, -3)) == expected
    assert int(fp.multiply_by_quantized_multiplier(_i32(-(2**31 - 1)), 2**31 - 1, -3)) == -expected


def test_multiply_by_quantized_multiplier_int64_upstream():
    cases = [(0, 0.1, 0), (1, 0, 0), (10000, 0.00097656, 10), (-10000, 0.00097656, -10)]
    cases += [(-(1 << 47), 0.00001, -1407385600), ((1 << 47) - 1, 0.00001, 1407385600)]
    assert [_times(x, real, wide=True) for x, real, _ in cases] == [e for *_, e in cases]
    with jax.enable_x64(True):
        x = jnp.asarray([(1 << 47) - 1, -((1 << 47) - 1)], jnp.int64)
        assert fp.multiply_by_quantized_multiplier_int64(x, 2**31 - 1, -31).tolist() == [65534, -65534]


# ----------------------------------------------------------------------------- upstream: tensor_utils_test.cc

TANH_INPUT = [
    -145, 899, -176, -35, 264, 289, 8, 27, -37, -1310, -120, 127, -16, 106, 370,
    -583, -299, 93, -548, 548, 653, -29, -53, 1058, -52, -164, -149, -635, 201, -1297,
]  # fmt: skip


@pytest.mark.parametrize(
    "integer_bits,inputs,expected",
    [
        (
            0,
            TANH_INPUT,
            [
                -136, 904, -176, -40, 260, 292, 8, 28, -44, -1304, -120, 120, -24, 112, 376,
                -576, -308, 88, -544, 544, 652, -32, -60, 1056, -56, -156, -144, -636, 192, -1300,
            ],
        ),
        (
            3,
            TANH_INPUT,
            [
                -1156, 7076, -1412, -276, 2104, 2308, 64, 220, -288, -10132, -964, 1016, -120, 844, 2944,
                -4640, -2392, 736, -4352, 4352, 5180, -232, -428, 8276, -412, -1308, -1196, -5044, 1612, -10044,
            ],
        ),
        (
            4,
            [
                -5, 163, -31, -5, 54, 90, 1, 2, -4, -42, -8, 29, 0, 47, 150,
                -26, -36, 9, -73, 25, 14, -2, -1, 29, -10, -12, -18, -29, 51, -92,
            ],
            [
                -76, 2596, -496, -76, 856, 1436, 24, 36, -64, -672, -120, 456, 0, 752, 2400,
                -412, -576, 148, -1168, 400, 216, -36, -24, 456, -164, -192, -292, -456, 820, -1476,
            ],
        ),
    ],
    ids=["QuantTanh0Test", "QuantTanh3Test", "QuantTanh4Test"],
)  # fmt: skip
def test_apply_tanh_upstream(integer_bits, inputs, expected):
    assert fp.apply_tanh(integer_bits, _i16(inputs)).tolist() == expected


def test_apply_sigmoid_upstream():  # QuantSigmoidTest
    inputs = [
        -10500, 1398, -6963, -7404, 485, -5401, -1757, -7668, -19248, -9692, -24249, -17923, -15840, -10026, 5249,
        -89, 1787, -16178, -6691, -19524, -13439, -24048, -1123, 32767, -17267, -3378, 823, 11482, -11139, 7508,
    ]  # fmt: skip
    expected = [
        2339, 19152, 5063, 4617, 17350, 6917, 12921, 4371, 299, 2813, 89, 409, 673, 2605, 25646,
        16207, 19904, 615, 5353, 273, 1187, 91, 14153, 32756, 475, 9983, 18026, 30898, 2023, 28246,
    ]  # fmt: skip
    assert fp.apply_sigmoid(_i16(inputs)).tolist() == expected


def test_apply_layer_norm_upstream():  # QuantApplyLayerNormTest: 2 rows of 15
    inputs = [
        -310, 596, 34, -68, 475, 92, 672, -54, -913, -200, -1194, -836, -620, -237, 991,
        533, 721, -736, -8, -941, -372, -1084, 591, 2557, -779, 175, 582, 956, -287, 944,
    ]  # fmt: skip
    weights = [21849, 22882, 20626, 23854, 24779, 26354, 12980, 26231, 23716, 27271, 24937, 22647, 24715, 22854, 19646]
    bias = [
        -14175520, -13805465, -16027609, -13786809, -13321033, -14399810, -15055368, -14536623,
        -14508746, -13784007, -15206609, -15125830, -14996304, -14847597, -12814379,
    ]  # fmt: skip
    expected = [
        -9407, 5846, -4802, -5295, 4822, -2390, 930, -5283, -20352, -7846, -26539, -18704, -15829, -8627, 10313,
        -2522, -132, -16058, -8206, -19158, -13296, -14407, -1235, 20612, -18591, -6738, -2274, 2602, -11622, 1565,
    ]  # fmt: skip
    out = _layer_norm(_i16(inputs).reshape(2, 15), _i16(weights), _i32(bias), _i32(1895840000), _i32(-13), _i32(1))
    assert out.ravel().tolist() == expected


MUL_INPUT_1 = [
    2491, 32767, -32768, 32767, -32768, 32767, 32767, -32768, -32768, 2157, 4545, 14835, 1285, 29498, 26788,
    2907, 7877, 6331, 8775, 3001, 1399, 4683, 1437, 1853, 12163, 4927, 7977, 3001, 16612, 4791,
]  # fmt: skip
MUL_INPUT_2 = [
    -1156, 32767, -32768, -32768, 32767, 2308, 64, 220, -288, -10132, -964, 1016, -120, 844, 2944,
    -4640, -2392, 736, -4352, 4352, 5180, -232, -428, 8276, -412, -1308, -1196, -5044, 1612, -10044,
]  # fmt: skip


@pytest.mark.parametrize(
    "shift,expected",
    [
        (
            15,
            [
                -88, 32766, -32768, -32767, -32767, 2308, 64, -220, 288, -667, -134, 460, -5, 760, 2407,
                -412, -575, 142, -1165, 399, 221, -33, -19, 468, -153, -197, -291, -462, 817, -1469,
            ],
        ),
        (
            19,
            [
                -5, 2048, 2048, -2048, -2048, 144, 4, -14, 18, -42, -8, 29, 0, 47, 150,
                -26, -36, 9, -73, 25, 14, -2, -1, 29, -10, -12, -18, -29, 51, -92,
            ],
        ),
    ],
    ids=["QuantMul16bitOut15ShiftTest", "QuantMul16bitOut19ShiftTest"],
)  # fmt: skip
def test_cwise_mul_shift_upstream(shift, expected):
    assert fp.cwise_mul(_i16(MUL_INPUT_1), _i16(MUL_INPUT_2), shift).tolist() == expected


def test_cwise_mul_quantized_upstream():  # QuantMul8bitArbitrarySclaeTest
    expected = [
        -78, 127, 127, -128, -128, 127, 62, -128, 127, -128, -120, 127, -1, 127, 127,
        -128, -128, 127, -128, 127, 127, -27, -14, 127, -128, -128, -128, -128, 127, -128,
    ]  # fmt: skip
    out = fp.cwise_mul_quantized(_i16(MUL_INPUT_1), _i16(MUL_INPUT_2), fp.Multiplier(1970324837, -15), 3)
    assert out.tolist() == expected


def test_cwise_add_upstream():  # QuantAddTest
    a = [
        2491, 32767, -32768, 32767, -32768, 32767, 32767, -32768, -32768, 20000, -20000, 14835, 1285, 29498, 26788,
        2907, 7877, 6331, 8775, 3001, 1399, 4683, 1437, 1853, 12163, 4927, 7977, 3001, 16612, 4791,
    ]  # fmt: skip
    b = [
        -1156, 32767, -32768, -32768, 32767, 2308, 64, 220, -288, 20000, -20000, 1016, -120, 844, 2944,
        -4640, -2392, 736, -4352, 4352, 5180, -232, -428, 8276, -412, -1308, -1196, -5044, 1612, -10044,
    ]  # fmt: skip
    expected = [
        1335, 32767, -32768, -1, -1, 32767, 32767, -32548, -32768, 32767, -32768, 15851, 1165, 30342, 29732,
        -1733, 5485, 7067, 4423, 7353, 6579, 4451, 1009, 10129, 11751, 3619, 6781, -2043, 18224, -5253,
    ]  # fmt: skip
    assert fp.saturating_add(_i16(a), _i16(b)).tolist() == expected


def test_sub1_vector_upstream():  # Sub1VectorInt16Test
    inputs = [32760, 300, 1, 2, 3, 4, 5, 6, 300, 1000, 32767, 32000, 300, 1, 2, 3, 4, 5, 56, 300]
    expected = [7, 32467, 32766, 32765, 32764, 32763, 32762, 32761, 32467, 31767]
    expected += [0, 767, 32467, 32766, 32765, 32764, 32763, 32762, 32711, 32467]
    assert fp.sub1_vector(_i16(inputs)).tolist() == expected


# ----------------------------------------------------------------------------- against the Python-int reference


def _batch(element):
    return st.lists(element, min_size=N, max_size=N)


@SETTINGS
@given(_batch(st.tuples(INT32, INT32)))
def test_saturating_rounding_doubling_high_mul_int32(pairs):
    pairs[:3] = [(-(2**31), -(2**31)), (-(2**31), 2**31 - 1), (2**30, 2**30)]
    a, b = (_i32(v) for v in zip(*pairs))
    assert _srdhm(a, b).tolist() == [ref.srdhm(x, y) for x, y in pairs]


@SETTINGS
@given(_batch(st.tuples(INT16, INT16)))
def test_saturating_rounding_doubling_high_mul_int16(pairs):
    pairs[:3] = [(-32768, -32768), (-32768, 32767), (16384, -16384)]
    a, b = (_i16(v) for v in zip(*pairs))
    assert _srdhm(a, b).tolist() == [ref.srdhm(x, y, 16) for x, y in pairs]


@SETTINGS
@given(_batch(st.tuples(INT32, st.integers(0, 31))))
def test_rounding_divide_by_pot_int32(pairs):
    pairs[:2] = [(-(2**31), 31), (-(2**30), 31)]
    values, exponents = zip(*pairs)
    assert _rdbpot(_i32(values), _i32(exponents)).tolist() == [ref.rdbpot(v, e) for v, e in pairs]


def test_rounding_divide_by_pot_int16_exhaustive():
    x = np.arange(-32768, 32768)
    for exponent in (1, 2, 15):
        out = fp.rounding_divide_by_pot(_i16(x), exponent)
        assert out.dtype == jnp.int16
        # ties away from zero: round(x / 2^e) with halves pushed outward
        expected = np.sign(x) * np.floor(np.abs(x) / 2**exponent + 0.5)
        np.testing.assert_array_equal(np.asarray(out), expected)


@SETTINGS
@given(_batch(st.tuples(INT32, st.integers(1, 2**31 - 1), st.integers(-31, 20))))
def test_multiply_by_quantized_multiplier(triples):
    x, m, s = (_i32(v) for v in zip(*triples))
    assert _mbqm(x, m, s).tolist() == [ref.mbqm(*t) for t in triples]


@SETTINGS
@given(_batch(st.tuples(INT32, st.integers(1, 2**31 - 1), st.integers(-31, 20))))
def test_multiply_by_quantized_multiplier_ties_up(triples):
    """As MultiplyByQuantizedMultiplier, with a final shift that rounds ties toward +inf."""

    def reference(x: int, m: int, s: int) -> int:
        left, right = max(s, 0), max(-s, 0)
        high = ref.srdhm(ref.wrap(x * ref.wrap(1 << left, 32), 32), m)
        return ref.wrap((high + ((1 << right) >> 1)) >> right, 32)

    x, m, s = (_i32(v) for v in zip(*triples))
    assert _mbqm_ties_up(x, m, s).tolist() == [reference(*t) for t in triples]


@SETTINGS
@given(_batch(st.tuples(st.integers(-(2**47), 2**47 - 1), st.integers(0, 2**31 - 1), st.integers(-31, 7))))
def test_multiply_by_quantized_multiplier_int64(triples):
    with jax.enable_x64(True):
        x, m, s = (jnp.asarray(v, jnp.int64) for v in zip(*triples))
        assert _mbqm64(x, m, s).tolist() == [ref.mbqm64(*t) for t in triples]


@SETTINGS
@given(_batch(st.integers(0, 2**31 - 1)))
def test_inv_sqrt_quantized_multiplier_exp(values):
    multiplier, shift = _inv_sqrt(_i32(values))
    assert list(zip(multiplier.tolist(), shift.tolist())) == [ref.inv_sqrt(v) for v in values]


@pytest.mark.parametrize("n", [4, 7], ids=["n4", "n7_not_a_power_of_two"])
@SETTINGS
@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 50, 10000]), st.sampled_from([200, 3000, 32767]))
def test_apply_layer_norm(n, seed, limit, spread):
    """Random rows, one of them constant (variance 0: the guard takes over)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-spread, spread + 1, size=(3, n))
    x[0] = x[0, 0]
    weights = rng.integers(-32767, 32768, size=n)
    bias = rng.integers(-(2**28), 2**28, size=n)
    multiplier, shift = int(rng.integers(2**30, 2**31)), int(rng.integers(-20, 0))
    out = _layer_norm(_i16(x), _i16(weights), _i32(bias), _i32(multiplier), _i32(shift), _i32(limit))
    expected = [ref.layer_norm_row(list(r), list(weights), list(bias), multiplier, shift, limit) for r in x.tolist()]
    assert out.tolist() == expected


@pytest.mark.parametrize("function,integer_bits", [("logistic", 3), *(("tanh", k) for k in range(7))])
def test_gemmlowp_tables_against_reference(function, integer_bits):
    """Every 61st input, the ends and the neighbours of 0 (a Python loop over all 65,536 is too slow)."""
    if function == "logistic":
        table, scalar = fp.logistic_table(), ref.logistic16
    else:
        table, scalar = fp.tanh_table(integer_bits), ref.tanh16
    inputs = sorted({*range(-32768, 32768, 61), -32768, -32767, -1, 0, 1, 32766, 32767})
    assert [int(table[x + 32768]) for x in inputs] == [scalar(x, integer_bits) for x in inputs]


def test_gemmlowp_tables_are_close_to_float():
    """Within 8 LSB (sigmoid) and 13 LSB (tanh) of the real functions over all 65,536
    inputs. (Not monotone: gemmlowp's int16 evaluation drops by up to 6 LSB where the exp
    barrel shifter changes bits, upstream too.)"""
    x = np.arange(-32768, 32768)
    sigmoid = fp.logistic_table() / 32768
    assert np.max(np.abs(sigmoid - 1 / (1 + np.exp(-x / 4096)))) < 8 / 32768
    for integer_bits in range(7):
        tanh = fp.tanh_table(integer_bits) / 32768
        assert np.max(np.abs(tanh - np.tanh(x / 2.0 ** (15 - integer_bits)))) < 13 / 32768


def test_apply_tanh_refuses_integer_bits_upstream_does_not_dispatch():
    with pytest.raises(ValueError, match="integer_bits 0 to 6"):
        fp.apply_tanh(7, _i16([0]))


@pytest.mark.parametrize("power", [-15, -12, -11, -9])
def test_tflm_activations_exhaustive(power):
    x = np.arange(-32768, 32768, 7 if power != -12 else 1)
    table = fp.SIGMOID_TABLE_UINT16
    assert fp.tflm_tanh(_i16(x), power).tolist() == [ref.tflm_tanh(int(v), power, table) for v in x]
    if power == -12:
        assert fp.tflm_logistic(_i16(x)).tolist() == [ref.tflm_logistic(int(v), table) for v in x]


def test_sigmoid_table_upstream_entries():
    """First, middle and last entries of sigmoid_table_uint16 as upstream lists them."""
    table = fp.SIGMOID_TABLE_UINT16
    assert table.shape == (256,)
    assert table[:4].tolist() == [32768, 33451, 34133, 34813]
    assert table[128:132].tolist() == [65221, 65234, 65246, 65258]
    assert table[-4:].tolist() == [65534, 65534, 65534, 65535]


@pytest.mark.parametrize(
    "scale,expected",
    [
        (2.0**-12, (-12, True)),
        (2 / 65535, (-15, True)),
        (2.0**-9, (-9, True)),
        (1e-4, (-13, False)),
        (0.75, (0, False)),
    ],
)
def test_checked_log2(scale, expected):
    assert fp.checked_log2(scale) == expected


@SETTINGS
@given(st.floats(2.0**-31, 2.0**20))
def test_quantize_multiplier_represents_the_scale(real):
    m, shift = fp.quantize_multiplier(real)
    assert 2**30 <= m < 2**31
    assert abs(m * 2.0 ** (shift - 31) - real) <= real * 2.0**-31


def test_matrix_batch_vector_multiply_accumulate_saturates_the_accumulation():
    """The x part saturates to int16 before the h part is added (two calls)."""
    x = jnp.full((1, 4), 127, jnp.int8)
    w = jnp.full((1, 4), 127, jnp.int8)
    bias = _i32([0])
    big = fp.Multiplier(2**30, 0)  # x 0.5: 4 * 127 * 127 / 2 = 32258
    z = fp.matrix_batch_vector_multiply_accumulate(x, w, bias, big, 0, jnp.zeros((1, 1), jnp.int16))
    z = fp.matrix_batch_vector_multiply_accumulate(x, w, bias, big, 0, z)
    assert z.tolist() == [[32767]]
    z = fp.matrix_batch_vector_multiply_accumulate(-x, w, bias, big, 0, z)
    assert z.tolist() == [[32767 - 32258]]
