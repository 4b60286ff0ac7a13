"""`low_precision_contract`: x @ w.T on bfloat16 operands, float32 accumulation, in reverse mode too.

Golden values: the forward pass and the transposes are the defining bfloat16 dots written
with `lax.dot_general` (equal to float32 rounding: the same products, summed by the same
kernel); derivatives of every other kind (forward mode, second order, vmap, shard_map) are
compared with the same function differentiated through `lax.dot_general`, to bfloat16
tolerance: 8 significant bits, relative rounding 2^-9 per operand, here 2e-2 of the largest
entry over k = 16 products.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P
from numpy.testing import assert_allclose

from jaxlstm.ops._low_precision import low_precision_contract

from .cases import dot_operand_dtypes, normal

BF16 = jnp.bfloat16
BF16_RTOL = 2e-2  # of the largest entry, see the module docstring
EXACT_ATOL = 1e-6  # the same bfloat16 products in float32, possibly summed in another order


def _cast_dot(a, b, contracting):
    return jax.lax.dot_general(
        a.astype(BF16), b.astype(BF16), (contracting, ((), ())), preferred_element_type=jnp.float32
    )


def _plain(x, w):
    """The same forward pass as a `lax.dot_general`, whose transposes are float32 dots."""
    return _cast_dot(x, w, ((x.ndim - 1,), (1,)))


def _loss(contract):
    return lambda x, w: jnp.sum(jnp.sin(contract(x, w)))


OURS = _loss(lambda x, w: low_precision_contract(x, w, BF16))
PLAIN = _loss(_plain)


def _close(actual, expected):
    assert_allclose(actual, expected, rtol=0, atol=BF16_RTOL * np.max(np.abs(expected)))


def _inputs(*x_shape, m=4):
    rng = np.random.default_rng(0)
    return normal(rng, *x_shape, scale=1.0), normal(rng, m, x_shape[-1], scale=1.0)


@pytest.mark.parametrize("x_shape", [(8, 16), (3, 5, 16)], ids=["2d", "3d"])
def test_forward_and_transposes_are_the_bfloat16_dots(x_shape):
    x, w = _inputs(*x_shape)
    y, vjp = jax.vjp(lambda x, w: low_precision_contract(x, w, BF16), x, w)
    assert y.dtype == jnp.float32
    assert_allclose(y, _plain(x, w), rtol=0, atol=EXACT_ATOL)
    ct = normal(np.random.default_rng(1), *y.shape, scale=1.0)
    d_x, d_w = vjp(ct)
    leading = tuple(range(ct.ndim - 1))
    assert_allclose(d_x, _cast_dot(ct, w, ((ct.ndim - 1,), (0,))), rtol=0, atol=EXACT_ATOL)
    assert_allclose(d_w, _cast_dot(ct, x, (leading, leading)), rtol=0, atol=EXACT_ATOL)


def test_reverse_mode_matmuls_have_bfloat16_operands():
    x, w = _inputs(8, 16)
    ours = jax.make_jaxpr(jax.grad(OURS, (0, 1)))(x, w)
    assert dot_operand_dtypes(ours.jaxpr) == {("bfloat16", "bfloat16")}
    # What the primitive is for: lax.dot_general's transposes multiply float32 cotangents.
    plain = jax.make_jaxpr(jax.grad(PLAIN, (0, 1)))(x, w)
    assert ("float32", "bfloat16") in dot_operand_dtypes(plain.jaxpr)


@pytest.mark.parametrize("axes", [(0, None), (1, None), (None, 0), (0, 0)], ids=["x", "x_axis1", "w", "both"])
def test_vmap_of_value_and_gradient(axes):
    """vmap over an axis of x [T, B, k] (the ops' layout) and/or of w equals a Python loop."""
    x, w = _inputs(3, 5, 8, 16)  # the vmapped axis first
    x_axis, w_axis = axes
    if x_axis is None:
        x = x[0]
    if w_axis is not None:
        w = jnp.stack([w, 2 * w, -w])
    if x_axis == 1:
        x = jnp.swapaxes(x, 0, 1)
    for fn in (lambda x, w: low_precision_contract(x, w, BF16), jax.grad(OURS, (0, 1))):
        # jit, as the ops run: XLA:CPU runs some batched dots op by op with a kernel that
        # has no bfloat16 (an eager `lax.dot_general` fails the same way).
        batched = jax.jit(jax.vmap(fn, axes))(x, w)
        looped = [fn(x if x_axis is None else jnp.take(x, i, x_axis), w if w_axis is None else w[i]) for i in range(3)]
        for b, l in zip(jax.tree.leaves(batched), map(jnp.stack, zip(*map(jax.tree.leaves, looped)))):
            assert_allclose(b, l, rtol=0, atol=EXACT_ATOL)


def test_forward_mode_and_second_derivatives_match_float32_transposes():
    x, w = _inputs(4, 16)
    t = jax.jvp(OURS, (x, w), (x, w))[1]
    _close(t, jax.jvp(PLAIN, (x, w), (x, w))[1])
    _close(jax.hessian(OURS)(x, w), jax.hessian(PLAIN)(x, w))


def test_gradient_inside_shard_map():
    x, w = _inputs(8, 16)
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))

    def sharded(x, w):
        return jax.grad(lambda x, w: jax.lax.psum(OURS(x, w), "data"), (0, 1))(x, w)

    got = jax.shard_map(sharded, mesh=mesh, in_specs=(P("data"), P()), out_specs=(P("data"), P()))(x, w)
    for g, e in zip(got, jax.grad(OURS, (0, 1))(x, w)):
        assert_allclose(g, e, rtol=0, atol=EXACT_ATOL)
