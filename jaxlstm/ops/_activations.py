"""TFLite fused activation functions (schema `ActivationFunctionType`) as JAX callables."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


def _sign_bit(x: jax.Array) -> jax.Array:
    # tensor_utils ApplySignbitToVector: 1.0 where the sign bit is set (-0.0 included).
    return jnp.signbit(x).astype(x.dtype)


# Names are the schema's enum names; SIGMOID exists only inside the kernels.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "NONE": lambda x: x,
    "RELU": jax.nn.relu,
    "RELU_N1_TO_1": lambda x: jnp.clip(x, -1.0, 1.0),
    "RELU6": lambda x: jnp.clip(x, 0.0, 6.0),
    "TANH": jnp.tanh,
    "SIGN_BIT": _sign_bit,
    "SIGMOID": jax.nn.sigmoid,
}

# Schema enum values, for the flatbuffer reader and writer.
ACTIVATION_CODES: dict[str, int] = {
    "NONE": 0,
    "RELU": 1,
    "RELU_N1_TO_1": 2,
    "RELU6": 3,
    "TANH": 4,
    "SIGN_BIT": 5,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """Returns the TFLite fused activation called `name` (e.g. ``"TANH"``)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown fused activation {name!r}; expected one of {sorted(ACTIVATIONS)}") from None


def clip(x: jax.Array, limit: float) -> jax.Array:
    """TFLite `CwiseClipping`: clamps to [-limit, limit] when limit > 0, else identity."""
    if limit > 0:
        return jnp.clip(x, -limit, limit)
    return x
