"""Elementwise, comparison, reduction and indexing kernels: the glue TensorFlow's converter writes
around recurrent loops (masking, normalization, padding, shape arithmetic).

Integer and boolean operands that are NumPy constants give NumPy results (`_array_module`), so
shape arithmetic stays static under jit; the operands that select, slice or reshape (axes, pads,
sizes, multiples) must be such constants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.model.kernels import KernelContext, _array_module, _dense, _fused, _static, kernel
from jaxlstm.ops._activations import activation

if TYPE_CHECKING:
    from jaxlstm.model.graph import Operator


def _module(*args: Any):
    """`_array_module` of the operands that are present."""
    return _array_module(*(a for a in args if a is not None))


def _operands(*args: Any) -> tuple[Any, list]:
    """(array module, operands): NumPy constants stay NumPy, anything else becomes a JAX
    array (int8 constants dequantized)."""
    xp = _module(*args)
    return xp, [a if xp is np else _dense(a) for a in args]


def _ints(value: Any, what: str) -> list[int]:
    """A constant integer tensor (scalar or 1-D) as a list of ints."""
    return [int(v) for v in np.ravel(_static(value, what))]


def _axes(value: Any, rank: int, what: str) -> tuple[int, ...]:
    """Axes in [-rank, rank) as sorted, distinct non-negative axes (reduce.cc ResolveAxis)."""
    axes = _ints(value, what)
    bad = [a for a in axes if not -rank <= a < rank]
    if bad:
        raise ValueError(f"{what} {bad} out of range for a rank-{rank} input")
    return tuple(sorted({a % rank for a in axes}))


# ----------------------------------------------------------------------------- activations


@kernel("RELU", "RELU6", "RELU_N1_TO_1")
def _relu(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/activations.cc ReluEval, Relu6Eval, Relu1Eval: clamps."""
    return [activation(op.opcode)(jnp.asarray(args[0]))], {}


@kernel("LEAKY_RELU")
def _leaky_relu(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/activations.cc LeakyReluEval: x if x > 0 else alpha * x."""
    x = jnp.asarray(args[0])
    return [jnp.where(x > 0, x, x * jnp.float32(op.option("alpha", 0.0)))], {}


# ----------------------------------------------------------------------------- elementwise math


@kernel("NEG")
def _neg(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/neg.cc."""
    return [_module(args[0]).negative(args[0])], {}


@kernel("RSQRT")
def _rsqrt(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/elementwise.cc RsqrtEval: 1 / sqrt(x), both correctly rounded. The barrier
    keeps XLA from fusing them into its rsqrt, which is up to 3 ulps off."""
    root = jax.lax.optimization_barrier(jnp.sqrt(jnp.asarray(_dense(args[0]))))
    return [jnp.float32(1) / root], {}


@kernel("DIV")
def _div(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/div.cc: a / b, broadcasting, then the fused activation; int32
    quotients truncate toward zero, as C++ division does. The barrier keeps XLA from turning
    ``a / broadcast(b)`` into ``a * broadcast(1 / b)``, which rounds differently."""
    a, b = jnp.broadcast_arrays(*(jnp.asarray(_dense(v)) for v in args))
    return [_fused(op, jax.lax.div(a, jax.lax.optimization_barrier(b)))], {}


@kernel("SQUARED_DIFFERENCE")
def _squared_difference(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/squared_difference.cc: (a - b) * (a - b), broadcasting."""
    xp, (a, b) = _operands(*args)
    d = xp.subtract(a, b)
    return [d * d], {}


_BINARY = {
    "MAXIMUM": "maximum",  # maximum_minimum.cc
    "MINIMUM": "minimum",
    "LESS": "less",  # comparisons.cc
    "LESS_EQUAL": "less_equal",
    "GREATER": "greater",
    "GREATER_EQUAL": "greater_equal",
    "EQUAL": "equal",
    "NOT_EQUAL": "not_equal",
    "LOGICAL_AND": "logical_and",  # logical.cc
    "LOGICAL_OR": "logical_or",
}


@kernel(*_BINARY)
def _binary(op: Operator, args: list, context: KernelContext):
    """The broadcasting binary ops of `_BINARY` (tflite/kernels/maximum_minimum.cc,
    comparisons.cc, logical.cc); comparisons and logical ops give bool tensors."""
    xp, operands = _operands(*args)
    return [getattr(xp, _BINARY[op.opcode])(*operands)], {}


@kernel("LOGICAL_NOT")
def _logical_not(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/logical.cc."""
    return [_module(args[0]).logical_not(args[0])], {}


@kernel("SELECT", "SELECT_V2")
def _select(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/select.cc: x where cond else y. SELECT_V2 broadcasts; SELECT takes a
    condition of the operands' shape or, for rank-1 conditions, one per row."""
    cond, x, y = args
    xp = _module(*args)
    if op.opcode == "SELECT" and np.ndim(cond) == 1 and np.ndim(x) > 1:
        cond = cond.reshape((-1,) + (1,) * (np.ndim(x) - 1))
    return [xp.where(cond, x, y)], {}


@kernel("CAST")
def _cast(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/cast.cc: static_cast to the options' out_data_type (floats truncate
    toward zero, nonzero is true)."""
    out = op.option("out_data_type")
    if out is None:
        raise NotImplementedError("CAST without CastOptions.out_data_type (the output type is not known)")
    return [_module(args[0]).asarray(args[0]).astype(np.dtype(out.lower()))], {}


@kernel("ZEROS_LIKE")
def _zeros_like(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/zeros_like.cc."""
    return [_module(args[0]).zeros_like(args[0])], {}


# ----------------------------------------------------------------------------- reductions

_REDUCERS = {
    "MEAN": "mean",  # reduce.cc EvalMean: sum / count
    "SUM": "sum",
    "REDUCE_PROD": "prod",
    "REDUCE_MAX": "max",
    "REDUCE_MIN": "min",
    "REDUCE_ANY": "any",
    "REDUCE_ALL": "all",
}


@kernel(*_REDUCERS)
def _reduce(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/reduce.cc: reduce over the constant axes (negative and repeated axes
    allowed), keeping them as size 1 with keep_dims."""
    xp, (x,) = _operands(args[0])
    if op.opcode == "MEAN" and not jnp.issubdtype(x.dtype, jnp.floating):
        raise NotImplementedError(f"MEAN of {x.dtype} values (only float means are supported)")
    axes = _axes(args[1], np.ndim(x), f"{op.opcode} axis")
    return [getattr(xp, _REDUCERS[op.opcode])(x, axis=axes, keepdims=op.option("keep_dims", False))], {}


# ----------------------------------------------------------------------------- shapes and indexing


@kernel("PAD", "PADV2")
def _pad(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/pad.cc: constant padding by a constant [rank, 2] tensor of (before,
    after) counts; PAD pads with zeros, PADV2 with its third input."""
    x = args[0]
    pads = np.asarray(_static(args[1], f"{op.opcode} paddings")).astype(int).reshape(-1, 2)
    if pads.shape[0] != np.ndim(x) or np.any(pads < 0):
        raise ValueError(f"{op.opcode} paddings {pads.tolist()} do not fit a rank-{np.ndim(x)} input")
    value = args[2] if len(args) > 2 and args[2] is not None else np.zeros((), x.dtype)
    xp = _module(x, value)
    return [xp.pad(x, [tuple(p) for p in pads.tolist()], constant_values=xp.reshape(value, ()))], {}


@kernel("SLICE")
def _slice(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/slice.cc: ``x[begin : begin + size]`` per axis; size -1 takes the rest.
    A begin computed at run time needs constant sizes (it becomes a dynamic slice)."""
    x, begin, size = args
    sizes = _ints(size, "SLICE size")
    if len(sizes) != np.ndim(x):
        raise ValueError(f"SLICE size {sizes} does not fit a rank-{np.ndim(x)} input")
    try:
        starts = _ints(begin, "SLICE begin")
    except NotImplementedError:
        if any(s < 0 for s in sizes):
            raise NotImplementedError("SLICE with a begin computed at run time and size -1") from None
        return [jax.lax.dynamic_slice(jnp.asarray(x), list(jnp.asarray(begin)), sizes)], {}
    ends = [n if s < 0 else b + s for b, s, n in zip(starts, sizes, np.shape(x))]
    bad = [i for i, (b, e, n) in enumerate(zip(starts, ends, np.shape(x))) if not 0 <= b <= e <= n]
    if bad:
        raise ValueError(f"SLICE begin {starts} size {sizes} out of range for shape {list(np.shape(x))}")
    return [x[tuple(slice(b, e) for b, e in zip(starts, ends))]], {}


@kernel("DYNAMIC_UPDATE_SLICE")
def _dynamic_update_slice(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/dynamic_update_slice.cc: `operand` with `update` written at
    `start_indices` (one per axis, run-time values allowed), each clamped to
    ``[0, operand dim - update dim]`` as in XLA's DynamicUpdateSlice."""
    operand, update, start = args
    rank = np.ndim(operand)
    if np.ndim(start) != 1 or np.shape(start)[0] != rank:
        raise ValueError(f"start_indices of shape {list(np.shape(start))} do not fit a rank-{rank} operand")
    if np.ndim(update) != rank or any(u > n for u, n in zip(np.shape(update), np.shape(operand))):
        raise ValueError(f"update of shape {list(np.shape(update))} does not fit in operand {list(np.shape(operand))}")
    if jnp.dtype(update.dtype) != jnp.dtype(operand.dtype):
        raise ValueError(f"update is {jnp.dtype(update.dtype).name}, operand {jnp.dtype(operand.dtype).name}")
    # Clamped here: lax.dynamic_update_slice would wrap negative indices around first.
    limit = np.subtract(np.shape(operand), np.shape(update))
    if isinstance(start, np.ndarray):  # int64 indices are clamped before they become int32
        start = np.clip(start, 0, limit)
    start = jnp.clip(jnp.asarray(start).astype(jnp.int32), 0, limit)
    starts = [start[a] for a in range(rank)]
    return [jax.lax.dynamic_update_slice(jnp.asarray(operand), jnp.asarray(update), starts)], {}


@kernel("EXPAND_DIMS")
def _expand_dims(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/expand_dims.cc: a size-1 axis at the constant position (negative counts
    from the end of the output)."""
    x = args[0]
    (axis,) = _ints(args[1], "EXPAND_DIMS axis")
    rank = np.ndim(x) + 1
    if not -rank <= axis < rank:
        raise ValueError(f"EXPAND_DIMS axis {axis} out of range for a rank-{np.ndim(x)} input")
    return [_module(x).expand_dims(x, axis % rank)], {}


@kernel("SQUEEZE")
def _squeeze(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/squeeze.cc: drops the squeeze_dims axes, or every size-1 axis."""
    x = args[0]
    dims = op.option("squeeze_dims", ())
    axes = _axes(np.asarray(dims), np.ndim(x), "SQUEEZE squeeze_dims") if dims else None
    return [_module(x).squeeze(x, axis=axes)], {}


@kernel("BROADCAST_TO")
def _broadcast_to(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/broadcast_to.cc: NumPy broadcasting to a constant shape."""
    return [_module(args[0]).broadcast_to(args[0], tuple(_ints(args[1], "BROADCAST_TO shape")))], {}


@kernel("TILE")
def _tile(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/tile.cc: repeats the input along each axis by the constant multiples."""
    return [_module(args[0]).tile(args[0], _ints(args[1], "TILE multiples"))], {}


@kernel("SPLIT_V")
def _split_v(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/split_v.cc: splits along a constant axis into the constant sizes (one
    may be -1: the rest)."""
    x = args[0]
    sizes = _ints(args[1], "SPLIT_V size_splits")
    (axis,) = _ints(args[2], "SPLIT_V axis")
    n = np.shape(x)[axis]
    if sizes.count(-1) == 1:
        sizes[sizes.index(-1)] = n - (sum(sizes) + 1)
    if sum(sizes) != n or min(sizes) < 0:
        raise ValueError(f"SPLIT_V sizes {sizes} do not split axis {axis} of size {n}")
    return list(_module(x).split(x, np.cumsum(sizes)[:-1].tolist(), axis=axis)), {}


def _spatial(op: Operator, x: Any, block: list[int], pads: np.ndarray) -> None:
    if not 1 <= len(block) <= np.ndim(x) - 1 or min(block) < 1 or pads.shape != (len(block), 2):
        raise ValueError(
            f"{op.opcode}: block shape {block} and paddings/crops {pads.tolist()} do not fit input {list(np.shape(x))}"
        )


@kernel("SPACE_TO_BATCH_ND")
def _space_to_batch_nd(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/space_to_batch_nd.cc: pads the spatial axes (1..M), then moves each
    block offset into the batch: output batch ``offset * batch + b``."""
    x, block = args[0], _ints(args[1], "SPACE_TO_BATCH_ND block_shape")
    pads = np.asarray(_static(args[2], "SPACE_TO_BATCH_ND paddings")).astype(int).reshape(-1, 2)
    _spatial(op, x, block, pads)
    xp, m = _module(x), len(block)
    x = xp.pad(x, [(0, 0), *map(tuple, pads.tolist())] + [(0, 0)] * (np.ndim(x) - 1 - m))
    batch, spatial, rest = x.shape[0], x.shape[1 : m + 1], x.shape[m + 1 :]
    if any(n % b for n, b in zip(spatial, block)):
        raise ValueError(f"SPACE_TO_BATCH_ND padded spatial shape {list(spatial)} is not a multiple of {block}")
    x = x.reshape((batch, *[d for n, b in zip(spatial, block) for d in (n // b, b)], *rest))
    order = [2 + 2 * i for i in range(m)] + [0] + [1 + 2 * i for i in range(m)]
    x = xp.transpose(x, order + list(range(1 + 2 * m, x.ndim)))
    return [x.reshape((batch * int(np.prod(block)), *[n // b for n, b in zip(spatial, block)], *rest))], {}


@kernel("BATCH_TO_SPACE_ND")
def _batch_to_space_nd(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/batch_to_space_nd.cc: the inverse of SPACE_TO_BATCH_ND, then crops the
    spatial axes by a constant [M, 2] tensor of (start, end) counts."""
    x, block = args[0], _ints(args[1], "BATCH_TO_SPACE_ND block_shape")
    crops = np.asarray(_static(args[2], "BATCH_TO_SPACE_ND crops")).astype(int).reshape(-1, 2)
    _spatial(op, x, block, crops)
    xp, m = _module(x), len(block)
    blocks = int(np.prod(block))
    if x.shape[0] % blocks:
        raise ValueError(f"BATCH_TO_SPACE_ND batch {x.shape[0]} is not a multiple of the block size {blocks}")
    batch, spatial, rest = x.shape[0] // blocks, x.shape[1 : m + 1], x.shape[m + 1 :]
    x = x.reshape((*block, batch, *spatial, *rest))
    order = [m] + [d for i in range(m) for d in (m + 1 + i, i)]
    x = xp.transpose(x, order + list(range(1 + 2 * m, x.ndim)))
    x = x.reshape((batch, *[n * b for n, b in zip(spatial, block)], *rest))
    index = [slice(None)] + [slice(c0, n * b - c1) for (c0, c1), n, b in zip(crops.tolist(), spatial, block)]
    return [x[tuple(index)]], {}
