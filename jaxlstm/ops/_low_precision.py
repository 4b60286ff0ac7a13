"""A matmul on operands cast to a narrower float dtype, which stays narrow in reverse mode.

``lax.dot_general(x.astype(bf16), w.astype(bf16), preferred_element_type=f32)`` transposes
(reverse mode) into dots of the float32 cotangent with a bfloat16 operand, which XLA runs in
float32: the forward matmuls of a training step run in bfloat16 and the backward ones do
not. `low_precision_contract` is a primitive whose transposes cast the cotangent too, so
every matmul of the step runs on bfloat16 operands with float32 accumulation (the training
step's speed-up on XLA:CPU is measured in experiments/README.md).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.extend.core.primitives import dot_general_p
from jax.interpreters import ad, batching, mlir

from jaxlstm.ops._shard_map import vary_like

low_precision_contract_p = Primitive("jaxlstm_low_precision_contract")


def low_precision_contract(x: jax.Array, w: jax.Array, dtype) -> jax.Array:
    """``x [..., k] @ w.T -> [..., m]`` for w [m, k]: operands cast to `dtype`, the sum and
    the result in their common dtype. Transposed (reverse mode), ``ct @ w`` and the weight
    gradient ``ct^T x`` cast their operands to `dtype` as well."""
    x, w = vary_like((x, w), x, w)  # inside shard_map, as dot_general's operands must
    return low_precision_contract_p.bind(x, w, dtype=jnp.dtype(dtype))


def _dot(a, b, contracting: tuple, dtype, out_dtype) -> jax.Array:
    return jax.lax.dot_general(
        a.astype(dtype), b.astype(dtype), (contracting, ((), ())), preferred_element_type=out_dtype
    )


def _contract(x, w, *, dtype):
    return _dot(x, w, ((x.ndim - 1,), (1,)), dtype, jnp.result_type(x, w))


def _abstract_eval(x, w, *, dtype):
    out, _ = dot_general_p.abstract_eval(  # shapes, and shard_map's varying-axes types
        x.update(dtype=dtype),
        w.update(dtype=dtype),
        dimension_numbers=(((x.ndim - 1,), (1,)), ((), ())),
        precision=None,
        preferred_element_type=jnp.result_type(x.dtype, w.dtype),
        out_sharding=None,
    )
    return out


# The transposes are written as dots that XLA:CPU keeps in bfloat16: with a transposed array
# as an operand (say ``ct @ w.T.T``) it folds the transpose into the dot and runs it in float32.


def _transpose_x(ct, x, w, *, dtype):  # ct [..., m] @ w [m, k]
    return _dot(ct, w, ((ct.ndim - 1,), (0,)), dtype, x.aval.dtype)


def _transpose_w(ct, x, w, *, dtype):  # ct^T x, summed over the leading axes: [m, k]
    leading = tuple(range(ct.ndim - 1))
    return _dot(ct, x, (leading, leading), dtype, w.aval.dtype)


def _batch(args, dims, *, dtype):
    (x, w), (x_dim, w_dim) = args, dims
    if w_dim is None:  # one more leading axis of x
        return low_precision_contract(jnp.moveaxis(x, x_dim, 0), w, dtype), 0
    return jax.vmap(functools.partial(_contract, dtype=dtype), (x_dim, w_dim))(x, w), 0


low_precision_contract_p.def_impl(_contract)
low_precision_contract_p.def_abstract_eval(_abstract_eval)
mlir.register_lowering(low_precision_contract_p, mlir.lower_fun(_contract, multiple_results=False))
ad.defbilinear(low_precision_contract_p, _transpose_x, _transpose_w)
batching.primitive_batchers[low_precision_contract_p] = _batch
