"""Carries that type-check inside `jax.shard_map`.

There every value is typed as varying or invariant over each manual mesh axis (its "vma"),
and a `lax.scan` carry must keep its type through a step. A state the op makes (zeros)
starts invariant, but a step that reads a sharded input returns a varying one: the carry
has to start with the type of everything the step reads.
"""

from __future__ import annotations

import jax


def _varying_axes(leaf) -> frozenset:
    """The mesh axes `leaf` varies over (empty outside shard_map)."""
    return jax.typeof(leaf).manual_axis_type.varying


def vary_like(carry, *operands):
    """`carry` (a pytree) cast to vary over every mesh axis that a leaf of `operands` varies
    over; unchanged outside shard_map."""
    axes = frozenset().union(*map(_varying_axes, jax.tree.leaves(operands)))

    def cast(leaf):
        missing = tuple(sorted(axes - _varying_axes(leaf)))
        return jax.lax.pcast(leaf, missing, to="varying") if missing else leaf

    return jax.tree.map(cast, carry)
