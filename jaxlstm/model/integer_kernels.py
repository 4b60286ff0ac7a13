"""Integer kernels of the builtin operators around recurrent layers, bit for bit.

QUANTIZE, DEQUANTIZE, FULLY_CONNECTED, SOFTMAX, LOGISTIC, TANH, ADD, MUL and CONCATENATION
on int8, uint8 and int16 activations (RESHAPE, STRIDED_SLICE and the other kernels that
only move values need none: `kernels.check_operator`). Activations are raw integer arrays;
their quantization (scale, zero point) is the tensor table's (`KernelContext.tensors`),
static under jit. Each kernel reproduces LiteRT's builtin kernel (the optimized kernels of
the default op resolver, without the XNNPACK delegate, which rounds differently) and,
where its arithmetic differs, TensorFlow Lite Micro's (``KernelContext.runtime``):

* LOGISTIC and TANH on int8: LiteRT reads a 256-entry table of the float function
  (activations.cc LUTPopulate), TFLite Micro computes gemmlowp's fixed-point function
  (reference/integer_ops/logistic.h, tanh.h); on int16 with scale 2^-12 (TANH: or 2^-11)
  LiteRT uses gemmlowp (optimized_ops.h), TFLite Micro the interpolated table.
* SOFTMAX: on int8 LiteRT exponentiates through a float table (optimized_ops.h Softmax),
  TFLite Micro in gemmlowp fixed point (reference/softmax.h); on int16 both interpolate
  tables, filled in double by LiteRT and in float by TFLite Micro.
* FULLY_CONNECTED: TFLite Micro multiplies the input and weight scales in double, LiteRT
  in float (kernel_util.cc GetQuantizedConvolutionMultipler).

LiteRT's x86 build runs the NEON code of its optimized kernels (translated to SSE by
NEON_2_SSE, neon_check.h): a vector loop over blocks of 8 or 16 elements, then a scalar loop
for the tail, and the two round differently. QUANTIZE, DEQUANTIZE, 8-bit requantization,
int8 ADD and MUL therefore depend on an element's position (`vector_lanes`).

Prepare's float arithmetic (multipliers, tables) runs on the host with the precision of the
C++; `check` makes Prepare's refusals at load time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlstm.model.kernels import KERNELS, KernelContext, kernel
from jaxlstm.model.operators import NO_TENSOR
from jaxlstm.ops import _fixed_point as fp
from jaxlstm.ops._fixed_point import Multiplier, quantize_multiplier
from jaxlstm.ops._quant import QuantizedTensor, round_half_away

if TYPE_CHECKING:
    from jaxlstm.model.graph import Operator, Tensor

OPCODES = ("QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED", "SOFTMAX", "LOGISTIC", "TANH", "ADD", "MUL", "CONCATENATION")
ACTIVATION_TYPES = ("int8", "uint8", "int16")
# The fused activations of the integer kernels and their real bounds (kernel_util.cc
# CalculateActivationRangeQuantized; None: the type's limit).
_FUSED_BOUNDS = {"NONE": (None, None), "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
_FUSED = tuple(_FUSED_BOUNDS)


def is_quantized(t: Tensor) -> bool:
    """An integer activation type with one quantization scale."""
    return t.dtype in ACTIVATION_TYPES and t.scale is not None


def computes_on_integers(op: Operator, tensors: Sequence[Tensor]) -> bool:
    """Whether `op` reads or writes quantized integer activations (its first input or an output)."""
    return bool(tensors) and any(is_quantized(tensors[i]) for i in (*op.inputs[:1], *op.outputs) if i != NO_TENSOR)


def _integer(opcode: str):
    """Registers an integer kernel ``fn(op, args, tensors, runtime)`` for `opcode` in front of
    its float kernel, which runs when the operator has no quantized integer activations.

    The kernel runs as one jitted computation per operator and operand shapes (eagerly, each
    of its array operations would compile alone), under x64 so that int64 biases keep their
    type through the jit boundary."""
    float_kernel = KERNELS.get(opcode)

    def register(fn):
        @kernel(opcode)
        @functools.wraps(fn)
        def dispatch(op: Operator, args: list, context: KernelContext):
            if computes_on_integers(op, context.tensors):
                with jax.enable_x64(True):
                    return [_jitted(fn, op, context.tensors, context.runtime, *args)], {}
            if float_kernel is None:
                raise NotImplementedError(f"{opcode} on float tensors has no kernel in jaxlstm")
            return float_kernel(op, args, context)

        return fn

    return register


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _jitted(fn, op: Operator, tensors: Sequence[Tensor], runtime: str, *args) -> jax.Array:
    return fn(op, list(args), tensors, runtime)


def _quantization(t: Tensor) -> tuple[float, int]:
    return float(t.scale), int(t.zero_point)


def _clamp(x: jax.Array, dtype, low: int | None = None, high: int | None = None) -> jax.Array:
    """Saturates int32 `x` to `dtype` (or the fused activation's [low, high]) and casts."""
    info = jnp.iinfo(dtype)
    return jnp.clip(x, info.min if low is None else low, info.max if high is None else high).astype(dtype)


def vector_lanes(shape: tuple[int, ...], block: int, run: int | None = None) -> np.ndarray:
    """bool `shape`: the elements an optimized LiteRT kernel computes in its vector loop, the
    first ``floor(run / block) * block`` of every `run` consecutive elements (default: the
    whole tensor is one run; 0: no vector loop); the rest fall to its scalar tail loop."""
    size = math.prod(shape)
    run = size if run is None else run
    if run == 0:
        return np.zeros(shape, bool)
    return (np.arange(size) % run < run // block * block).reshape(shape)


def activation_range(activation: str, t: Tensor) -> tuple[int, int]:
    """CalculateActivationRangeQuantized (kernel_util.cc): the fused activation's bounds in
    `t`'s quantized values, ``zero_point + round(bound / scale)`` in float, within its type."""
    info = np.iinfo(t.dtype)
    if activation not in _FUSED:
        raise ValueError(f"fused activation {activation} has no integer kernel; supported: {_FUSED}")
    scale, zero_point = _quantization(t)

    def quantize(bound: float) -> int:
        return zero_point + int(fp.round_half_away(float(np.float32(bound) / np.float32(scale))))

    low, high = _FUSED_BOUNDS[activation]
    return (
        int(info.min) if low is None else max(int(info.min), quantize(low)),
        int(info.max) if high is None else min(int(info.max), quantize(high)),
    )


# ----------------------------------------------------------------------------- QUANTIZE, DEQUANTIZE


def affine_quantize(x: jax.Array, scale: float, zero_point: int, dtype, runtime: str) -> jax.Array:
    """AffineQuantize: ``clamp(round(x / scale) + zero_point)``; values beyond int32 (and NaN)
    convert to INT32_MIN, as x86's conversion does, before the zero point is added (wrapping).

    TFLite Micro (reference/quantize.h) divides in float and rounds half away from zero.
    LiteRT (optimized_ops.h) multiplies by the float reciprocal and rounds half to even in its
    vector loop (blocks of 8); its scalar tail divides in double and rounds half away.
    """
    x = x.astype(jnp.float32)

    def divided(dtype_) -> jax.Array:
        # An opaque divisor: XLA rewrites division by a constant (a constant array too, once a
        # caller's jit folds it) into an inexact multiplication.
        return round_half_away(x.astype(dtype_) / lax.optimization_barrier(jnp.full(x.shape, scale, dtype_)))

    if runtime == "tflite-micro":
        q = divided(jnp.float32)
    else:
        with jax.enable_x64(True):
            tail = divided(jnp.float64)
            vector = jnp.round(x * (np.float32(1) / np.float32(scale))).astype(jnp.float64)
            q = jnp.where(vector_lanes(x.shape, 8), vector, tail)
    with jax.enable_x64(True):
        q = jnp.where(jnp.abs(q) < 2.0**31, q, fp.INT32[0]).astype(jnp.int32)
    return _clamp(q + zero_point, dtype)


def requantize(
    x: jax.Array, input_zero_point: int, scale: Multiplier, output_zero_point: int, dtype, ties_up: jax.Array | bool
) -> jax.Array:
    """Requantize (reference/requantize.h): ``clamp(MBQM(x - input_zp, scale) + output_zp)``;
    where `ties_up`, the multiplier's final shift rounds ties up (LiteRT's vector loop for
    8-bit to 8-bit, blocks of 16: MultiplyByQuantizedMultiplier4Rows, common.h)."""
    v = x.astype(jnp.int32) - input_zero_point
    shifted = jnp.where(
        ties_up, fp.multiply_by_quantized_multiplier_ties_up(v, *scale), fp.multiply_by_quantized_multiplier(v, *scale)
    )
    return _clamp(shifted + output_zero_point, dtype)


def dequantize(x: jax.Array, scale: float, zero_point: int, runtime: str) -> jax.Array:
    """Dequantize: ``float(scale * (x - zero_point))`` (reference/dequantize.h; the double
    product of a float and a 17-bit integer is exact, so float32 arithmetic rounds it the
    same). LiteRT's vector loop for 8-bit inputs (optimized_ops.h, blocks of 8) computes
    ``scale * x - scale * zero_point`` in float, rounding twice."""
    exact = (x.astype(jnp.int32) - zero_point).astype(jnp.float32) * jnp.float32(scale)
    if runtime == "tflite-micro" or x.dtype == jnp.int16:
        return exact
    s = np.float32(scale)
    vector = _float32_sum(_float32_product(x, s), -(s * np.float32(zero_point)))
    return jnp.where(vector_lanes(x.shape, 8), vector, exact)


def _float32_product(x: jax.Array, scale: np.float32) -> jax.Array:
    """float32 ``x * scale`` of an integer array, held in float64 (exact, then rounded to float32
    precision). Separate float32 operations would let XLA contract a product and a following
    sum into one FMA (rounding once, where the C++ rounds twice); rounding a float64 value to
    float32 precision by a float64 -> float32 -> float64 round trip is elided under jit too,
    `lax.reduce_precision` is not."""
    with jax.enable_x64(True):
        return lax.reduce_precision(x.astype(jnp.float64) * np.float64(scale), exponent_bits=8, mantissa_bits=23)


def _float32_sum(x: jax.Array, c: np.float32) -> jax.Array:
    """float32 ``x + c`` of `_float32_product`'s float64 values (exact in float64 for operands of
    similar magnitude, then rounded once), as float32."""
    with jax.enable_x64(True):
        return lax.reduce_precision(x + np.float64(c), exponent_bits=8, mantissa_bits=23).astype(jnp.float32)


@_integer("QUANTIZE")
def _quantize(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """quantize.cc: float -> int8/uint8/int16, or a requantization between integer types by
    ``QuantizeMultiplier(double(input scale) / double(output scale))``."""
    source, target = tensors[op.inputs[0]], tensors[op.outputs[0]]
    scale, zero_point = _quantization(target)
    x = args[0]
    if source.dtype == "float32":
        return affine_quantize(x, scale, zero_point, target.dtype, runtime)
    ratio = quantize_multiplier(float(np.float32(source.scale)) / float(np.float32(scale)))
    eight_bit = source.dtype != "int16" and target.dtype != "int16"
    ties_up = vector_lanes(x.shape, 16) if runtime == "litert" and eight_bit else False
    return requantize(x, int(source.zero_point), ratio, zero_point, target.dtype, ties_up)


@_integer("DEQUANTIZE")
def _dequantize(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """dequantize.cc: int8/uint8/int16 -> float32 (a constant: its `QuantizedTensor` scale)."""
    x = args[0]
    if isinstance(x, QuantizedTensor):
        return x.dequantize()
    return dequantize(x, *_quantization(tensors[op.inputs[0]]), runtime)


# ----------------------------------------------------------------------------- FULLY_CONNECTED


def _weight_scales(w: Tensor) -> np.ndarray:
    return np.atleast_1d(np.asarray(w.scale, np.float32))


def fully_connected_multipliers(x: Tensor, w: Tensor, y: Tensor, runtime: str) -> tuple[np.ndarray, np.ndarray]:
    """The output multipliers (int32 [1] or [n_out], per channel) and shifts of an integer
    FULLY_CONNECTED (fully_connected.cc Prepare): ``s_x * s_w / s_y``. One weight scale: the
    scales' product is float for LiteRT (kernel_util.cc GetQuantizedConvolutionMultipler),
    double for TFLite Micro; per channel, double for both."""
    s_x, s_y = np.float32(x.scale), np.float32(y.scale)
    scales = _weight_scales(w)
    if scales.size == 1 and runtime == "litert":
        reals = [float(s_x * scales[0]) / float(s_y)]
    else:
        reals = [float(s_x) * float(s) / float(s_y) for s in scales]
    multipliers = [quantize_multiplier(r) for r in reals]
    return np.array([m.multiplier for m in multipliers], np.int32), np.array([m.shift for m in multipliers], np.int32)


@_integer("FULLY_CONNECTED")
def _fully_connected(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """fully_connected.cc EvalQuantized, int8 x int8 -> int8 with an int32 bias, or int16 x
    int8 -> int16 ("16x8"), per-tensor or per-channel weights (one multiplier per output row):
    ``clamp(rescale(sum (w - zp_w) (x - zp_x) + bias) + zp_y)``.

    The rescale is MultiplyByQuantizedMultiplier of an int32 accumulator (LiteRT's optimized
    kernel rounds its ties up: `fp.multiply_by_quantized_multiplier_ties_up`), except for 16x8
    with an int64 bias: LiteRT then rounds ``acc * (s_x s_w / s_y)`` in double
    (reference_integer_ops::FullyConnected with float scales), TFLite Micro accumulates in
    int64 (also without a bias) and rescales with MultiplyByQuantizedMultiplier(int64).
    """
    x_t, w_t, y_t = (tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    bias = None if bias is None else (bias.values if isinstance(bias, QuantizedTensor) else bias)
    weights = (w.values if isinstance(w, QuantizedTensor) else w).astype(jnp.int32) - int(w_t.zero_point)
    rows = x.reshape(-1, weights.shape[-1]).astype(jnp.int32) - int(x_t.zero_point)
    multiplier, shift = fully_connected_multipliers(x_t, w_t, y_t, runtime)
    bias_type = None if bias is None else tensors[op.inputs[2]].dtype
    dims = (((1,), (1,)), ((), ()))
    if x_t.dtype == "int16" and (bias_type == "int64" if runtime == "litert" else bias_type != "int32"):
        with jax.enable_x64(True):
            acc = lax.dot_general(rows.astype(jnp.int64), weights.astype(jnp.int64), dims)
            acc = acc if bias is None else acc + bias.astype(jnp.int64)
            if runtime == "tflite-micro":
                y = fp.multiply_by_quantized_multiplier_int64(acc, multiplier, shift)
            else:
                s_x, s_y = float(np.float32(x_t.scale)), float(np.float32(y_t.scale))
                real = np.array([s_x * float(s_w) / s_y for s_w in _weight_scales(w_t)])
                y = round_half_away(acc.astype(jnp.float64) * real).astype(jnp.int32)
    else:
        acc = lax.dot_general(rows, weights, dims, preferred_element_type=jnp.int32)
        acc = acc if bias is None else acc + bias.astype(jnp.int32)
        if runtime == "tflite-micro":
            y = fp.multiply_by_quantized_multiplier(acc, multiplier, shift)
        else:
            y = fp.multiply_by_quantized_multiplier_ties_up(acc, multiplier, shift)
    low, high = activation_range(op.option("fused_activation_function", "NONE"), y_t)
    y = _clamp(y + int(y_t.zero_point), y_t.dtype, low, high)
    if op.option("keep_num_dims", False):
        return y.reshape(x.shape[:-1] + (weights.shape[0],))
    return y


# ----------------------------------------------------------------------------- SOFTMAX


@functools.cache
def _softmax_table(input_scale: float, beta: float) -> np.ndarray:
    """PopulateSoftmaxLookupTable (optimized_ops.h): float32 [256], entry 255 - d holds
    expf(-input_scale * beta * d)."""
    scale = -np.float32(input_scale) * np.float32(beta)
    expf = fp.libm_float32("expf")
    table = np.array([expf(scale * np.float32(255 - k)) for k in range(256)], np.float32)
    table.setflags(write=False)
    return table


def softmax_lut(x: jax.Array, input_scale: float, beta: float, output: Tensor) -> jax.Array:
    """optimized_ops::Softmax (int8/uint8 input, int8/uint8/int16 output): exps from the float
    table at ``255 - (max - x)``, summed in order in float32, times ``1 / (sum * s_y)``,
    rounded half away (uint8: ``+ 0.5f`` truncated) plus the output zero point."""
    table = jnp.asarray(_softmax_table(input_scale, beta))
    v = x.astype(jnp.int32)
    exps = table[255 - (jnp.max(v, axis=-1, keepdims=True) - v)]
    total, _ = lax.scan(lambda s, e: (s + e, None), jnp.zeros(exps.shape[:-1], jnp.float32), jnp.moveaxis(exps, -1, 0))
    inverse = jnp.float32(1) / (total * jnp.float32(output.scale))
    probabilities = exps * inverse[..., None]
    if output.dtype == "uint8":
        rounded = (probabilities + jnp.float32(0.5)).astype(jnp.int32)
    else:
        rounded = round_half_away(probabilities).astype(jnp.int32)
    return _clamp(rounded + int(output.zero_point), output.dtype)


def softmax_gemmlowp(x: jax.Array, input_scale: float, beta: float, output_dtype) -> jax.Array:
    """reference_ops::Softmax (softmax.h, int8 input), as TFLite Micro runs it: exps of the
    rescaled differences in gemmlowp Q5.26 fixed point, summed in Q12.19, times the
    reciprocal; output at scale 1 / 2^bits, zero point at the type's minimum."""
    scaled_diff_integer_bits, accumulation_integer_bits = 5, 12
    multiplier, left_shift = quantize_multiplier(
        min(float(beta) * float(np.float32(input_scale)) * (1 << (31 - scaled_diff_integer_bits)), 2.0**31 - 1)
    )
    diff_min = -fp.calculate_input_radius(scaled_diff_integer_bits, left_shift)
    v = x.astype(jnp.int32)
    diff = v - jnp.max(v, axis=-1, keepdims=True)
    kept = diff >= diff_min
    rescaled = fp.saturating_rounding_doubling_high_mul(diff * (1 << left_shift), jnp.int32(multiplier))
    exps = fp.exp_on_negative_values(rescaled, scaled_diff_integer_bits)
    summed = jnp.where(kept, fp.rounding_divide_by_pot(exps, accumulation_integer_bits), 0)
    summed = summed.sum(axis=-1, keepdims=True, dtype=jnp.int32)
    scale, bits_over_unit = fp.get_reciprocal(summed, accumulation_integer_bits)
    bits = jnp.iinfo(output_dtype).bits
    unsaturated = fp.rounding_divide_by_pot(
        fp.saturating_rounding_doubling_high_mul(scale, exps), bits_over_unit + 31 - bits
    )
    y = _clamp(unsaturated + int(jnp.iinfo(output_dtype).min), output_dtype)
    return jnp.where(kept, y, jnp.iinfo(output_dtype).min).astype(output_dtype)


@functools.cache
def _softmax16_tables(runtime: str) -> tuple[np.ndarray, np.ndarray]:
    """exp on [-10, 0] and 1 / (1 + x) on [0, 1], int16 [513] each, output range [-1, 1]:
    LiteRT computes them in double from the quantization of the int16 range
    (activations.cc SoftmaxPrepare), TFLite Micro in float (softmax_common.cc gen_lut)."""
    if runtime == "tflite-micro":
        expf = fp.libm_float32("expf")
        return (
            fp.lut_int16(expf, -10.0, 0.0, -1.0, 1.0, np.float32),
            fp.lut_int16(lambda v: np.float32(1) / (np.float32(1) + v), 0.0, 1.0, -1.0, 1.0, np.float32),
        )
    span = 65535  # int16 max - min
    out_min, out_max = 2.0 / span * -32768, 2.0 / span * 32767
    return (
        fp.lut_int16(math.exp, 10.0 / span * (-32768 - 32767), 10.0 / span * 0, out_min, out_max),
        fp.lut_int16(lambda v: 1.0 / (1.0 + v), 1.0 / span * 0, 1.0 / span * (32767 + 32768), out_min, out_max),
    )


def softmax_int16(x: jax.Array, input_scale: float, beta: float, runtime: str) -> jax.Array:
    """reference_ops::SoftmaxInt16 (softmax.h): differences rescaled so that [-65535, 0] is
    [-10, 0], exps from the interpolated table (Q0.15), their int32 sum's reciprocal from the
    1 / (1 + x) table, products rounded to Q0.15."""
    exp_table, reciprocal_table = _softmax16_tables(runtime)
    multiplier, shift = quantize_multiplier(float(np.float32(input_scale)) * float(np.float32(beta)) / (10.0 / 65535.0))
    v = x.astype(jnp.int32)
    diff = fp.multiply_by_quantized_multiplier(v - jnp.max(v, axis=-1, keepdims=True), multiplier, shift)
    exps = fp.lut_lookup16(_clamp(diff + 32767, jnp.int16), exp_table).astype(jnp.int32)
    total = exps.sum(axis=-1, keepdims=True, dtype=jnp.int32)
    headroom_plus_one = lax.clz(total)
    with jax.enable_x64(True):
        shifted = (lax.shift_left(total.astype(jnp.int64), (headroom_plus_one - 1).astype(jnp.int64)) + (1 << 13)) >> 14
        reciprocal = fp.lut_lookup16(_clamp(shifted - ((1 << 15) + (1 << 16)), jnp.int16), reciprocal_table)
        right_shift = (31 - headroom_plus_one).astype(jnp.int64)
        rounding = lax.shift_left(jnp.ones_like(right_shift), right_shift - 1)
        result = lax.shift_right_arithmetic(
            exps.astype(jnp.int64) * reciprocal.astype(jnp.int64) + rounding, right_shift
        )
        return jnp.clip(result, 0, fp.INT16[1]).astype(jnp.int16)


@_integer("SOFTMAX")
def _softmax(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """activations.cc SoftmaxEval (TFLite Micro: softmax.cc) over the last axis."""
    x_t, y_t = tensors[op.inputs[0]], tensors[op.outputs[0]]
    beta = float(np.float32(op.option("beta", 1.0)))
    if x_t.dtype == "int16":
        return softmax_int16(args[0], float(x_t.scale), beta, runtime)
    if runtime == "tflite-micro":
        return softmax_gemmlowp(args[0], float(x_t.scale), beta, y_t.dtype)
    return softmax_lut(args[0], float(x_t.scale), beta, y_t)


# ----------------------------------------------------------------------------- LOGISTIC, TANH


def _logistic_float32(value: np.float32) -> np.float32:
    """``1.0f / (1.0f + std::exp(-value))`` in float (activations.cc SigmoidPrepare)."""
    return np.float32(1) / (np.float32(1) + fp.libm_float32("expf")(-value))


@functools.cache
def _activation_table(function: str, x: Tensor, y: Tensor) -> np.ndarray:
    transform = _logistic_float32 if function == "LOGISTIC" else fp.libm_float32("tanhf")
    return fp.lut_int8(transform, float(x.scale), int(x.zero_point), float(y.scale), int(y.zero_point), x.dtype)


def lookup_table(x: jax.Array, table: np.ndarray) -> jax.Array:
    """LUTLookup (common.h, 8-bit): ``table[x - min]``."""
    return jnp.asarray(table)[x.astype(jnp.int32) - int(np.iinfo(table.dtype).min)]


def gemmlowp_activation8(function: str, x: jax.Array, x_t: Tensor) -> jax.Array:
    """reference_integer_ops::Logistic / Tanh (int8; logistic.h, tanh.h), as TFLite Micro runs
    them: ``x - zp`` rescaled to Q4.27 (saturating outside the input radius), gemmlowp's
    int32 function, rounded to Q0.8 with zero point -128 (LOGISTIC) or Q0.7 (TANH)."""
    integer_bits = 4
    q, left_shift = math.frexp(float(np.float32(x_t.scale)) * (1 << (31 - integer_bits)))
    multiplier = int(fp.round_half_away(q * 2**31))
    radius = fp.calculate_input_radius(integer_bits, left_shift, 31)
    v = x.astype(jnp.int32) - int(x_t.zero_point)
    q4 = fp.multiply_by_quantized_multiplier(jnp.clip(v, -radius, radius), multiplier, left_shift)
    if function == "LOGISTIC":
        y = fp.rounding_divide_by_pot(fp.gemmlowp_logistic(q4, integer_bits), 23) - 128
    else:
        y = fp.rounding_divide_by_pot(fp.gemmlowp_tanh(q4, integer_bits), 24)
    y = jnp.where(v <= -radius, -128, jnp.where(v >= radius, 127, y))
    return _clamp(y, jnp.int8)


def activation16_multiplier(function: str, scale: float) -> tuple[int, int]:
    """The int16 LOGISTIC / TANH input rescale (activations.cc Prepare): (0, left shift) for
    a power-of-two scale the fixed-point kernels take (2^-12; TANH: or 2^-11), else a
    multiplier of at most 15 bits to the table's 1 / (3 * 4096) and its right shift."""
    log2, is_power_of_two = fp.checked_log2(scale)
    left_shift = 12 + log2
    if is_power_of_two and left_shift in ((0,) if function == "LOGISTIC" else (0, 1)):
        return 0, left_shift
    multiplier, shift = float(np.float32(scale)) * 4096.0 * 3.0, 0
    while multiplier <= 32767.0 / 2.0 and shift <= 30:
        shift, multiplier = shift + 1, multiplier * 2.0
    return int(multiplier), shift


def activation16(function: str, x: jax.Array, scale: float, runtime: str) -> jax.Array:
    """LOGISTIC / TANH on int16, output Q0.15. LiteRT: gemmlowp's function on Q3.12 (TANH at
    2^-11: saturating-doubled first; optimized_ops.h) for the power-of-two scales, else the
    interpolated table (reference_integer_ops); TFLite Micro: always the table."""
    multiplier, shift = activation16_multiplier(function, scale)
    if multiplier == 0 and runtime == "litert":
        x = fp.saturating_rounding_multiply_by_pot(x.astype(jnp.int16), shift)
        return fp.apply_sigmoid(x) if function == "LOGISTIC" else fp.apply_tanh(3, x)
    table_function = fp.integer_logistic16 if function == "LOGISTIC" else fp.integer_tanh16
    return table_function(x, multiplier, shift)


def _activation(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    x_t, y_t = tensors[op.inputs[0]], tensors[op.outputs[0]]
    if x_t.dtype == "int16":
        return activation16(op.opcode, args[0], float(x_t.scale), runtime)
    if runtime == "tflite-micro":
        return gemmlowp_activation8(op.opcode, args[0], x_t)
    return lookup_table(args[0], _activation_table(op.opcode, x_t, y_t))


_integer("LOGISTIC")(_activation)
_integer("TANH")(_activation)


# ----------------------------------------------------------------------------- ADD, MUL


def broadcast_run(a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> int | None:
    """The runs of consecutive output elements LiteRT's optimized binary kernels loop over
    (reference/process_broadcast_shapes.h, optimized_ops.h BinaryBroadcastFiveFold): None for
    equal shapes (one run), the shared innermost extent y4 when above 1, else the broadcast
    extent y3 (a scalar against a run); 0 for a broadcast the five-fold loop cannot take (the
    scalar reference kernel)."""
    rank = max(len(a_shape), len(b_shape))
    a = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    if a == b:
        return None
    axis = max(i for i in range(rank) if a[i] != b[i])
    if 1 not in (a[axis], b[axis]):
        return 0
    small, large = (a, b) if a[axis] == 1 else (b, a)
    y = [1] * 5
    i = rank - 1
    while i >= 0 and small[i] == large[i]:
        y[4], i = y[4] * large[i], i - 1
    while i >= 0 and small[i] == 1:
        y[3], i = y[3] * large[i], i - 1
    while i >= 0 and small[i] == large[i]:
        y[2], i = y[2] * large[i], i - 1
    while i >= 0 and large[i] == 1:
        y[1], i = y[1] * small[i], i - 1
    while i >= 0 and small[i] == large[i]:
        y[0], i = y[0] * large[i], i - 1
    if i >= 0:
        return 0
    return y[4] if y[4] > 1 else y[3]


def _wrap16(x: jax.Array) -> jax.Array:
    """int32 -> int16 by truncation (vmovn / vaddq_s16 wrap), back in int32."""
    return x.astype(jnp.int16).astype(jnp.int32)


def _add_multipliers(
    a_t: Tensor, b_t: Tensor, y_t: Tensor, left_shift: int
) -> tuple[Multiplier, Multiplier, Multiplier]:
    """add.cc Prepare: each input to twice the larger input scale, the sum to the output."""
    twice_max = 2 * float(max(np.float32(a_t.scale), np.float32(b_t.scale)))
    return (
        quantize_multiplier(float(np.float32(a_t.scale)) / twice_max),
        quantize_multiplier(float(np.float32(b_t.scale)) / twice_max),
        quantize_multiplier(twice_max / (float(1 << left_shift) * float(np.float32(y_t.scale)))),
    )


def add_general(
    a: jax.Array, b: jax.Array, ts: tuple[Tensor, Tensor, Tensor], activation: str, lanes: np.ndarray | bool
) -> jax.Array:
    """Add with general rescalings (reference_integer_ops::Add, add.h): each input less its
    zero point, shifted left (20 bits for 8-bit, 15 for int16), rescaled; the sum rescaled to
    the output. In LiteRT's int8 vector loop (`lanes`; optimized/integer_ops/add.h) the
    input's right shift joins the left shift (truncating) before its multiplier, and the
    rescaled sum is truncated to int16 before the output offset is added in int16."""
    a_t, b_t, y_t = ts
    left_shift = 15 if y_t.dtype == "int16" else 20
    m_a, m_b, m_y = _add_multipliers(a_t, b_t, y_t, left_shift)
    srdhm = fp.saturating_rounding_doubling_high_mul
    low, high = activation_range(activation, y_t)
    xa, xb = a.astype(jnp.int32) - int(a_t.zero_point), b.astype(jnp.int32) - int(b_t.zero_point)

    def scalar_term(x: jax.Array, m: Multiplier) -> jax.Array:
        return fp.multiply_by_quantized_multiplier(x * (1 << left_shift), *m)

    total = scalar_term(xa, m_a) + scalar_term(xb, m_b)
    y = fp.multiply_by_quantized_multiplier(total, *m_y) + int(y_t.zero_point)
    if lanes is not False:

        def vector_term(x: jax.Array, m: Multiplier) -> jax.Array:
            shift = left_shift + m.shift
            shifted = x << shift if shift >= 0 else x >> -shift
            return srdhm(shifted, jnp.int32(m.multiplier))

        rescaled = fp.multiply_by_quantized_multiplier(vector_term(xa, m_a) + vector_term(xb, m_b), *m_y)
        y = jnp.where(lanes, _wrap16(_wrap16(rescaled) + int(y_t.zero_point)), y)
    return _clamp(y, y_t.dtype, low, high)


def add_power_of_two16(a: jax.Array, b: jax.Array, ts: tuple[Tensor, Tensor, Tensor], activation: str) -> jax.Array:
    """optimized_ops::Add (int16, power-of-two scales, add.cc's pot_scale_int16 path): the
    input whose scale is not the output's is rounded right by the difference of exponents,
    then the two are added with saturation."""
    a_t, b_t, y_t = ts
    shift_a, shift_b = (fp.checked_log2(t.scale)[0] - fp.checked_log2(y_t.scale)[0] for t in (a_t, b_t))
    a = fp.rounding_divide_by_pot(a.astype(jnp.int16), -shift_a) if shift_a else a
    b = fp.rounding_divide_by_pot(b.astype(jnp.int16), -shift_b) if shift_b else b
    low, high = activation_range(activation, y_t)
    return _clamp(fp.saturating_add(a, b).astype(jnp.int32), jnp.int16, low, high)


def _pot_int16_add(op: Operator, ts: Sequence[Tensor], runtime: str) -> bool:
    """add.cc Prepare: LiteRT's power-of-two int16 path, taken when the ``pot_scale_int16``
    option (schema default true) is set and all three scales are powers of two (TFLite
    Micro has only the general path)."""
    return (
        runtime == "litert"
        and ts[2].dtype == "int16"
        and bool(op.option("pot_scale_int16", True))
        and all(fp.checked_log2(t.scale)[1] for t in ts)
    )


def _binary_operands(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str):
    """(a, b, (a, b, output tensors), the lanes of LiteRT's int8 vector loop or False)."""
    ts = tuple(tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    a, b = (jnp.asarray(v.values if isinstance(v, QuantizedTensor) else v) for v in args[:2])
    if runtime != "litert" or ts[2].dtype != "int8":
        return a, b, ts, False
    shape = jnp.broadcast_shapes(a.shape, b.shape)
    return a, b, ts, vector_lanes(shape, 16, broadcast_run(a.shape, b.shape))


@_integer("ADD")
def _add(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """add.cc: the power-of-two int16 path or the general rescalings."""
    a, b, ts, lanes = _binary_operands(op, args, tensors, runtime)
    activation = op.option("fused_activation_function", "NONE")
    if _pot_int16_add(op, ts, runtime):
        return add_power_of_two16(a, b, ts, activation)
    return add_general(a, b, ts, activation, lanes)


@_integer("MUL")
def _mul(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """Mul (reference_integer_ops::MulElementwise, mul.h): ``MBQM((a - zp_a)(b - zp_b), m) + zp_y``
    with ``m = s_a s_b / s_y``, in float for LiteRT (mul.cc Prepare), in double for TFLite
    Micro. LiteRT's int8 vector loop (optimized/integer_ops/mul.h) saturates the rescaled
    product to int16 and adds the output offset in int16, wrapping."""
    a, b, (a_t, b_t, y_t), lanes = _binary_operands(op, args, tensors, runtime)
    scales = [np.float32(t.scale) for t in (a_t, b_t, y_t)]
    real = (
        scales[0] * scales[1] / scales[2]
        if runtime == "litert"
        else float(scales[0]) * float(scales[1]) / float(scales[2])
    )
    product = (a.astype(jnp.int32) - int(a_t.zero_point)) * (b.astype(jnp.int32) - int(b_t.zero_point))
    rescaled = fp.multiply_by_quantized_multiplier(product, *quantize_multiplier(float(real)))
    y = rescaled + int(y_t.zero_point)
    if lanes is not False:
        y = jnp.where(lanes, _wrap16(jnp.clip(rescaled, *fp.INT16) + int(y_t.zero_point)), y)
    low, high = activation_range(op.option("fused_activation_function", "NONE"), y_t)
    return _clamp(y, y_t.dtype, low, high)


# ----------------------------------------------------------------------------- CONCATENATION


def concatenation_with_scaling(xs: list[jax.Array], ts: list[Tensor], y_t: Tensor, axis: int) -> jax.Array:
    """ConcatenationWithScaling (reference_ops.h, uint8): each input whose quantization differs
    from the output's becomes ``round(x * (s_x / s_y) + (-zp_x * s_x / s_y)) + zp_y`` in float."""
    inverse = np.float32(1) / np.float32(y_t.scale)
    parts = []
    for x, t in zip(xs, ts):
        if (float(t.scale), int(t.zero_point)) != (float(y_t.scale), int(y_t.zero_point)):
            scale = np.float32(t.scale) * inverse
            bias = np.float32(-int(t.zero_point)) * scale
            value = round_half_away(_float32_sum(_float32_product(x, scale), bias)).astype(jnp.int32)
            x = _clamp(value + int(y_t.zero_point), y_t.dtype)
        parts.append(x)
    return jnp.concatenate(parts, axis=axis)


@_integer("CONCATENATION")
def _concatenation(op: Operator, args: list, tensors: Sequence[Tensor], runtime: str) -> jax.Array:
    """concatenation.cc: int8 and int16 inputs share the output's quantization (a copy); uint8
    inputs are requantized to it."""
    ts = [tensors[i] for i in op.inputs]
    xs = [v.values if isinstance(v, QuantizedTensor) else jnp.asarray(v) for v in args]
    return concatenation_with_scaling(xs, ts, tensors[op.outputs[0]], op.option("axis", 0))


# ----------------------------------------------------------------------------- load-time checks


def check(op: Operator, tensors: Sequence[Tensor], runtime: str, constants: Collection[int] = ()) -> None:
    """Prepare's refusals for an integer operator of `OPCODES`, at load time (`constants`:
    the indices of constant tensors, which may be quantized per channel).

    Raises:
      ValueError: a configuration the runtime's kernel refuses (the reason).
      NotImplementedError: one jaxlstm (or the runtime) has no kernel for.
    """
    ins = [tensors[i] for i in op.inputs if i != NO_TENSOR]
    outs = [tensors[i] for i in op.outputs]
    for i in (*op.inputs, *op.outputs):
        t = tensors[i] if i != NO_TENSOR else None
        if t is not None and t.dtype in ACTIVATION_TYPES and isinstance(t.scale, tuple) and i not in constants:
            raise NotImplementedError(
                f"{op.opcode}: {t.name!r} has per-channel quantization, which only constants may have"
            )
        if t is not None and t.dtype == "uint8" and runtime == "tflite-micro":
            raise NotImplementedError(f"{op.opcode}: {t.name!r} is uint8; TFLite Micro's kernels take int8 and int16")
    _CHECKS[op.opcode](op, ins, outs, runtime)


def _require(condition: bool, op: Operator, message: str) -> None:
    if not condition:
        raise ValueError(f"{op.opcode}: {message}")


def _types(op: Operator, ts: list[Tensor], allowed: tuple[str, ...], what: str) -> None:
    for t in ts:
        if t.dtype not in allowed:
            raise NotImplementedError(f"{op.opcode}: {what} {t.name!r} is {t.dtype}; integer kernels take {allowed}")


def _unquantized(op: Operator, ts: list[Tensor]) -> None:
    for t in ts:
        if t.dtype in ACTIVATION_TYPES and t.scale is None:
            raise ValueError(f"{op.opcode}: {t.name!r} is {t.dtype} without quantization parameters")


def _zero_points(op: Operator, ts: list[Tensor], why: str) -> None:
    for t in ts:
        _require(t.zero_point == 0, op, f"{t.name!r} has zero point {t.zero_point}; {why}")


def _check_quantize(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    x, y = ins[0], outs[0]
    _unquantized(op, [x, y])
    if x.dtype == "float32":
        _types(op, [y], ACTIVATION_TYPES, "output")
        return
    pairs = {"int8": ("int8", "uint8", "int16"), "uint8": ("int8", "uint8", "int16"), "int16": ("int8", "int16")}
    if y.dtype not in pairs.get(x.dtype, ()):
        raise NotImplementedError(
            f"QUANTIZE from {x.dtype} to {y.dtype} has no kernel (quantize.cc); supported: {pairs}"
        )
    if x.dtype == y.dtype == "int16":
        _zero_points(op, [x, y], "int16 requantization is symmetric (quantize.cc)")


def _check_dequantize(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    _unquantized(op, ins)
    _types(op, ins, ACTIVATION_TYPES, "input")
    _require(outs[0].dtype == "float32", op, f"the output is {outs[0].dtype}, dequantize.cc writes float32")


def _check_fully_connected(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    x, w, y = ins[0], ins[1], outs[0]
    bias = ins[2] if len(ins) > 2 else None
    _unquantized(op, [x, w, y])
    if (x.dtype, y.dtype) not in (("int8", "int8"), ("int16", "int16")):
        raise NotImplementedError(
            f"FULLY_CONNECTED from {x.dtype} to {y.dtype}: integer kernels take int8 -> int8 and int16 -> int16 (16x8)"
        )
    _types(op, [w], ("int8",), "weights")
    activation = op.option("fused_activation_function", "NONE")
    _require(activation in _FUSED, op, f"fused activation {activation}; fully_connected.cc takes {_FUSED}")
    if isinstance(w.scale, tuple) and len(w.scale) != w.shape[0]:
        raise ValueError(f"FULLY_CONNECTED: {len(w.scale)} weight scales for {w.shape[0]} output channels")
    if x.dtype == "int16":
        _zero_points(op, [x, y], "16x8 FULLY_CONNECTED is symmetric (fully_connected.cc)")
    if bias is not None:
        wanted = ("int32",) if x.dtype == "int8" else ("int32", "int64")
        _types(op, [bias], wanted, "bias")
        if bias.scale is not None and not isinstance(w.scale, tuple):
            # kernel_util.cc GetQuantizedConvolutionMultipler: the bias must be at s_x * s_w.
            product = float(np.float32(x.scale)) * float(np.float32(w.scale))
            difference = abs(product - float(np.float32(bias.scale))) / float(np.float32(y.scale))
            _require(difference <= 0.02, op, f"bias scale {bias.scale} is not input scale x weight scale ({product})")


def _check_softmax(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    x, y = ins[0], outs[0]
    _unquantized(op, [x, y])
    # (input, output) -> the output (scale, zero point) the kernel needs, or None if any.
    supported = {
        ("int8", "int8"): (1 / 256, -128),
        ("int16", "int16"): (1 / 32768, 0),
        ("int8", "int16"): (1 / 65536, -32768) if runtime == "tflite-micro" else None,
        ("uint8", "uint8"): None,
    }
    if (x.dtype, y.dtype) not in supported:
        raise NotImplementedError(
            f"SOFTMAX from {x.dtype} to {y.dtype} has no integer kernel; supported: {list(supported)}"
        )
    expected = supported[(x.dtype, y.dtype)]
    if expected is not None:
        scale, zero_point = expected
        _require(
            y.zero_point == zero_point, op, f"the output zero point is {y.zero_point}, the kernel needs {zero_point}"
        )
        _require(
            abs(float(np.float32(y.scale)) - scale) <= 0.001 * scale,
            op,
            f"the output scale is {y.scale}, the kernel needs {scale}",
        )
    if x.dtype == "int16":
        _zero_points(op, [x], "int16 SOFTMAX is symmetric (activations.cc)")


def _check_activation(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    x, y = ins[0], outs[0]
    _unquantized(op, [x, y])
    _require(x.dtype == y.dtype, op, f"input {x.dtype}, output {y.dtype}: activations.cc needs one type")
    _types(op, [x], ACTIVATION_TYPES, "input")
    if x.dtype == "int16":
        _zero_points(op, [x, y], "int16 activations are symmetric (activations.cc)")
        log2, is_power_of_two = fp.checked_log2(y.scale)
        _require(is_power_of_two and log2 == -15, op, f"the output scale is {y.scale}, the kernel needs 2^-15")
    elif op.opcode == "LOGISTIC":
        _require(float(np.float32(y.scale)) == 1 / 256, op, f"the output scale is {y.scale}, the kernel needs 1/256")
        if runtime == "tflite-micro":
            _require(y.zero_point == -128, op, f"the output zero point is {y.zero_point}, TFLite Micro needs -128")
    elif runtime == "tflite-micro":  # its int8 TANH writes Q0.7 whatever the output says
        _require(
            (float(np.float32(y.scale)), y.zero_point) == (1 / 128, 0),
            op,
            f"the output quantization is ({y.scale}, {y.zero_point}); TFLite Micro's kernel writes (1/128, 0)",
        )


def _check_binary(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    a, b, y = ins[0], ins[1], outs[0]
    _unquantized(op, [a, b, y])
    _require(a.dtype == b.dtype == y.dtype, op, f"types {a.dtype}, {b.dtype} -> {y.dtype}; the kernel needs one type")
    _types(op, [a], ("int8", "int16"), "input")
    activation = op.option("fused_activation_function", "NONE")
    _require(activation in _FUSED, op, f"fused activation {activation}; integer kernels take {_FUSED}")
    if y.dtype == "int16":
        _zero_points(op, [a, b, y], f"int16 {op.opcode} is symmetric ({op.opcode.lower()}.cc)")
        if op.opcode == "ADD" and _pot_int16_add(op, [a, b, y], runtime):
            shifts = [fp.checked_log2(t.scale)[0] - fp.checked_log2(y.scale)[0] for t in (a, b)]
            _require(
                0 in shifts and max(shifts) <= 0,
                op,
                "the power-of-two int16 path (pot_scale_int16) needs one input at the output's scale and the "
                "other at a finer one",
            )


def _check_concatenation(op: Operator, ins: list[Tensor], outs: list[Tensor], runtime: str) -> None:
    y = outs[0]
    _unquantized(op, [*ins, y])
    _types(op, [*ins, y], ACTIVATION_TYPES, "tensor")
    _require(all(t.dtype == y.dtype for t in ins), op, "inputs and output must have one type")
    activation = op.option("fused_activation_function", "NONE")
    _require(activation == "NONE", op, f"fused activation {activation}; concatenation.cc takes NONE")
    if y.dtype != "uint8" or runtime == "tflite-micro":
        for t in ins:
            _require(
                (float(t.scale), t.zero_point) == (float(y.scale), y.zero_point),
                op,
                f"input {t.name!r} is quantized ({t.scale}, {t.zero_point}) and the output ({y.scale}, "
                f"{y.zero_point}); {y.dtype} concatenation does not requantize",
            )


_CHECKS = {
    "QUANTIZE": _check_quantize,
    "DEQUANTIZE": _check_dequantize,
    "FULLY_CONNECTED": _check_fully_connected,
    "SOFTMAX": _check_softmax,
    "LOGISTIC": _check_activation,
    "TANH": _check_activation,
    "ADD": _check_binary,
    "MUL": _check_binary,
    "CONCATENATION": _check_concatenation,
}
