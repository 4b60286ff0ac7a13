"""Pieces shared by the NumPy references: tensor lookup, activations and the hybrid arithmetic.

Written from TFLite's kernels (tensor_utils.h ApplyActivationToVector, portable_tensor_utils.cc
PortableSymmetricQuantizeFloats / PortableAsymmetricQuantizeFloats /
PortableMatrixBatchVectorMultiplyAccumulate, neon_tensor_utils.cc NeonAsymmetricQuantizeFloats),
not from jaxlstm. No JAX here.
"""

from __future__ import annotations

import numpy as np


def tensor(weights, name: str):
    """The tensor called `name` (TFLite name) from a dict or an object; None if absent."""
    if isinstance(weights, dict):
        return weights.get(name)
    return getattr(weights, name, None)


def is_int8(value) -> bool:
    """True for an int8 weight: anything with `values` (int8) and one float `scale`."""
    return hasattr(value, "values") and hasattr(value, "scale")


def shape_of(value) -> tuple[int, ...]:
    return tuple(np.shape(value.values if is_int8(value) else value))


def as_float(value, dtype) -> np.ndarray:
    """Float values of a tensor; int8 tensors are dequantized as float(q) * scale in float32."""
    if is_int8(value):
        return (np.asarray(value.values, np.float32) * np.float32(value.scale)).astype(dtype)
    return np.asarray(value, dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


ACTIVATIONS = {
    "NONE": lambda x: x,
    "RELU": lambda x: np.maximum(x, 0),
    "RELU_N1_TO_1": lambda x: np.clip(x, -1, 1),
    "RELU6": lambda x: np.clip(x, 0, 6),
    "TANH": np.tanh,
    "SIGN_BIT": lambda x: np.signbit(x).astype(x.dtype),  # 1 where the sign bit is set
    "SIGMOID": sigmoid,
}


def round_half_away(x) -> np.ndarray:
    """`std::round` (TfLiteRound): halves go away from zero.

    Done in float64, where |x| + 0.5 is exact for any float32 x (in float32 it could round up).
    """
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def quantize_row(v: np.ndarray, asymmetric: bool) -> tuple[np.ndarray, np.float32, int]:
    """Quantizes one float32 row to int8 the way `BatchQuantizeFloats` does for each row.

    Returns (q as int64 [n], scaling_factor float32, zero_point int). An all-zero row gives
    q = 0, scaling factor 1, zero point 0 (the kernel then skips the matmul: same result).
    """
    v = np.asarray(v, np.float32)
    zeros = np.zeros(v.shape, np.int64)
    if not asymmetric:
        # Symmetric: range = max(|min|, |max|), sf = range / 127, q = round(v * (127 / range)).
        value_range = max(abs(v.min()), abs(v.max()))
        if value_range == 0:
            return zeros, np.float32(1), 0
        scaling_factor = np.float32(value_range / np.float32(127))
        inverse = np.float32(np.float32(127) / value_range)
        q = np.clip(round_half_away(v * inverse), -127, 127)
        return q.astype(np.int64), scaling_factor, 0
    # Asymmetric, as NeonAsymmetricQuantizeFloats (neon_tensor_utils.cc) computes it: that is
    # the code LiteRT runs on ARM and, through NEON_2_SSE, on x86. The range always contains 0;
    # its width is a float32 difference; scale and zero point are computed in double.
    rmin = min(np.float32(0), v.min())
    rmax = max(np.float32(0), v.max())
    if rmin == rmax:
        return zeros, np.float32(1), 0
    scale = float(rmax - rmin) / 255.0
    rmin, rmax = float(rmin), float(rmax)
    zero_point_from_min = -128.0 - rmin / scale
    zero_point_from_max = 127.0 - rmax / scale
    from_min_error = 128.0 + abs(rmin / scale)
    from_max_error = 127.0 + abs(rmax / scale)
    zero_point = zero_point_from_min if from_min_error < from_max_error else zero_point_from_max
    if zero_point <= -128:
        zero_point = -128
    elif zero_point >= 127:
        zero_point = 127
    else:
        zero_point = int(round_half_away(zero_point))
    scaling_factor = np.float32(scale)
    inverse = np.float32(1.0 / float(scaling_factor))  # float(1.0 / sf), the division in double
    # The zero point is added after rounding (the portable kernel rounds zero_point + v * inverse
    # instead; the two differ on ties, and LiteRT's x86 and ARM builds run this one). On ARMv8
    # the rounding is vcvta (ties away); x86's emulation adds +-0.5 in float32 and truncates,
    # which differs only within an ulp of a half-integer.
    q = np.clip(zero_point + round_half_away(v * inverse), -128, 127)
    return q.astype(np.int64), scaling_factor, zero_point


def matvec(weights, v: np.ndarray, asymmetric: bool, dtype) -> np.ndarray:
    """W·v for one row. Float weights: in `dtype`. Int8 weights: the hybrid product in float32.

    Hybrid: v is quantized per row, dot = sum(Wq * vq) exactly in integers (minus
    rowsum(Wq) * zero_point when asymmetric), then float(dot) * float32(sf * weight_scale).
    """
    if not is_int8(weights):
        return np.asarray(weights, dtype) @ np.asarray(v, dtype)
    q, scaling_factor, zero_point = quantize_row(v, asymmetric)
    values = np.asarray(weights.values, np.int64)
    dot = values @ q - values.sum(axis=1) * zero_point
    scale = np.float32(scaling_factor * np.float32(weights.scale))
    return dot.astype(np.float32) * scale
