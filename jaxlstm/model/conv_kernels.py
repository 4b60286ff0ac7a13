"""Convolution and pooling kernels: CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D.

TFLite's layouts: activations [batch, height, width, channels]; CONV_2D filters
[out_channels, filter_height, filter_width, in_channels / groups]; DEPTHWISE_CONV_2D filters
[1, filter_height, filter_width, in_channels * depth_multiplier]. Padding and output sizes follow
`tflite/kernels/padding.h` (ComputePaddingHeightWidth); fused activations are clamps
(`CalculateActivationRange`).

An int8 filter with float activations is the hybrid (dynamic-range) path: each batch element's
whole input is quantized to int8 (one scale per batch element), the convolution runs in exact
int32 arithmetic and the result is scaled back in float, as `tflite/kernels/conv.cc`
(EvalHybrid, EvalHybridPerChannel) and `tflite/kernels/depthwise_conv.cc` (EvalHybridPerChannel) do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.model.kernels import KernelContext, kernel
from jaxlstm.ops._activations import activation
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._quant import QuantizedTensor, quantize_rows

# The fused activations these kernels implement: clamps to a range. CalculateActivationRange
# leaves any other activation (TANH, SIGN_BIT) unapplied, which a file never means.
_CLAMPS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")
_NHWC = ("NHWC", "HWIO", "NHWC")  # lax dimension numbers: filters as [H, W, in / groups, out]

if TYPE_CHECKING:
    from jaxlstm.model.graph import Operator


def _clamp(op: Operator, x: jax.Array) -> jax.Array:
    name = op.option("fused_activation_function", "NONE")
    if name not in _CLAMPS:
        raise NotImplementedError(f"{op.opcode} with fused activation {name} (LiteRT applies only {_CLAMPS})")
    return activation(name)(x)


def _padding(size: int, window: int, stride: int, dilation: int, padding: str) -> tuple[int, int]:
    """(before, after) padding of one spatial axis, as ComputePaddingHeightWidth (padding.h)."""
    if stride < 1 or dilation < 1:
        raise ValueError(f"strides and dilations must be positive, got stride {stride}, dilation {dilation}")
    effective = (window - 1) * dilation + 1
    out = (size + stride - 1) // stride if padding == "SAME" else (size + stride - effective) // stride
    if out < 1:
        raise ValueError(f"a window of {effective} does not fit an input of size {size} with VALID padding")
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def _window(op: Operator, x_shape: tuple[int, ...], window: tuple[int, int]) -> dict:
    """Strides, dilation and explicit padding of a 2-D window op for `lax` (NHWC input)."""
    if len(x_shape) != 4:
        raise ValueError(f"{op.opcode} takes a 4-D [batch, height, width, channels] input, got {list(x_shape)}")
    strides = (op.option("stride_h", 1), op.option("stride_w", 1))
    dilation = (op.option("dilation_h_factor", 1), op.option("dilation_w_factor", 1))
    padding = op.option("padding", "SAME")
    pads = [_padding(n, k, s, d, padding) for n, k, s, d in zip(x_shape[1:3], window, strides, dilation)]
    return {"window_strides": strides, "padding": pads, "rhs_dilation": dilation}


def _convolve(x: jax.Array, filters: jax.Array, window: dict, groups: int, integer: bool) -> jax.Array:
    """NHWC x HWIO filters -> NHWC; int32 accumulation of integer operands, else float32."""
    kwargs = {"preferred_element_type": jnp.int32} if integer else {"precision": FLOAT32}
    return jax.lax.conv_general_dilated(
        x, filters, dimension_numbers=_NHWC, feature_group_count=groups, **window, **kwargs
    )


def _hybrid_accumulate(
    x: jax.Array, filters: jax.Array, window: dict, groups: int, asymmetric: bool
) -> tuple[jax.Array, jax.Array]:
    """The integer part of a hybrid convolution: (float32 accumulators [B, H', W', out],
    input scales [B, 1, 1, 1]).

    Each batch element is quantized whole (`quantize_rows` on [B, H*W*C]); the accumulators are
    exact int32 sums of ``filter * (q - input_offset)``, so padding contributes zero, as the
    kernels' padding with the offset (im2col) and row-sum correction give.
    """
    batch = x.shape[0]
    q, input_scale, offset = quantize_rows(x.reshape(batch, -1), asymmetric)
    q = q.reshape(x.shape).astype(jnp.int32) - offset[:, None, None, None]
    acc = _convolve(q, filters.astype(jnp.int32), window, groups, integer=True)
    return acc.astype(jnp.float32), input_scale[:, None, None, None]


def _channel_scales(filters: QuantizedTensor, channels: int) -> jax.Array:
    return jnp.broadcast_to(jnp.reshape(jnp.asarray(filters.scale, jnp.float32), -1), (channels,))


@kernel("CONV_2D")
def _conv_2d(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/conv.cc: float (EvalFloat) or hybrid int8 filter (EvalHybrid[PerChannel])."""
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    if w.ndim != 4:
        raise ValueError(f"CONV_2D filter must be 4-D [out, height, width, in], got {list(w.shape)}")
    in_channels = w.shape[3]
    if in_channels < 1 or x.shape[-1] % in_channels:
        raise ValueError(f"CONV_2D input has {x.shape[-1]} channels, not a multiple of the filter's {in_channels}")
    groups = x.shape[-1] // in_channels
    window = _window(op, x.shape, w.shape[1:3])
    if isinstance(w, QuantizedTensor):
        hwio = jnp.transpose(w.values, (1, 2, 3, 0))
        scale = _channel_scales(w, w.shape[0])
        acc, input_scale = _hybrid_accumulate(x, hwio, window, groups, asymmetric=True)
        if groups != 1:  # reference HybridConvPerChannel (conv.h), the only grouped hybrid kernel
            y = acc * scale * input_scale
        else:  # Prepare takes the per-channel kernel only when the filter scales differ
            per_channel = acc * (scale * input_scale)  # optimized_ops HybridConvPerChannel
            acc, input_scale = _hybrid_accumulate(x, hwio, window, groups, asymmetric=False)
            symmetric = acc * (input_scale * scale[0])  # EvalHybrid: the first filter scale
            y = jnp.where(jnp.all(scale == scale[0]), symmetric, per_channel)
    else:
        y = _convolve(x, jnp.transpose(jnp.asarray(w), (1, 2, 3, 0)), window, groups, integer=False)
    if bias is not None:
        y = y + bias
    return [_clamp(op, y)], {}


@kernel("DEPTHWISE_CONV_2D")
def _depthwise_conv_2d(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/depthwise_conv.cc: float (EvalFloat) or hybrid int8 filter
    (EvalHybridPerChannel, whatever the number of scales); output channel
    ``c * depth_multiplier + m`` reads input channel c."""
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    if w.ndim != 4 or w.shape[0] != 1:
        raise ValueError(f"DEPTHWISE_CONV_2D filter must be [1, height, width, channels], got {list(w.shape)}")
    channels = x.shape[-1]
    if channels < 1 or w.shape[3] % channels:
        raise ValueError(
            f"DEPTHWISE_CONV_2D filter has {w.shape[3]} channels, not a multiple of the input's {channels}"
        )
    window = _window(op, x.shape, w.shape[1:3])
    # Hybrid: float(acc) * channel_scale * input_scale, the product order whose rounding LiteRT's
    # builtin kernel reproduces bit for bit (measured; the scales multiplied first differ by an ulp).
    if isinstance(w, QuantizedTensor):
        acc, input_scale = _hybrid_accumulate(x, jnp.transpose(w.values, (1, 2, 0, 3)), window, channels, True)
        y = acc * _channel_scales(w, w.shape[3]) * input_scale
    else:
        y = _convolve(x, jnp.transpose(jnp.asarray(w), (1, 2, 0, 3)), window, channels, integer=False)
    if bias is not None:
        y = y + bias
    return [_clamp(op, y)], {}


def _pool_window(op: Operator, x: jax.Array) -> tuple[tuple[int, ...], tuple[int, ...], list]:
    size = (op.option("filter_height", 1), op.option("filter_width", 1))
    if min(size) < 1:
        raise ValueError(f"{op.opcode} filter size must be positive, got {list(size)}")
    window = _window(op, x.shape, size)
    return (1, *size, 1), (1, *window["window_strides"], 1), [(0, 0), *window["padding"], (0, 0)]


@kernel("MAX_POOL_2D")
def _max_pool_2d(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/pooling.cc MaxEval: the largest in-bounds value of each window."""
    x = jnp.asarray(args[0])
    dims, strides, padding = _pool_window(op, x)
    y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, padding)
    return [_clamp(op, y)], {}


@kernel("AVERAGE_POOL_2D")
def _average_pool_2d(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/pooling.cc AverageEval: the sum of each window's in-bounds values
    divided by their count (padding is not averaged in)."""
    x = jnp.asarray(args[0])
    dims, strides, padding = _pool_window(op, x)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, padding)
    ones = np.ones((1, *x.shape[1:3], 1), np.float32)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, dims, strides, padding)
    return [_clamp(op, total / count)], {}
