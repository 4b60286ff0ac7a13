"""Trace-time validation shared by the op families: shapes, dtypes and options, with clear errors."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def shape_of(value: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in value.shape)


def check_shape(op: str, name: str, value: Any, expected: tuple[int, ...], meaning: str) -> None:
    """Raises ValueError naming `name` when `value.shape` differs from `expected`.

    Args:
      op: the operator, for the message (e.g. ``"unidirectional_sequence_lstm"``).
      name: the tensor name (TFLite's).
      value: the array.
      expected: the required shape.
      meaning: how the expected shape reads, e.g. ``"(n_cell=4, n_input=3)"``.
    """
    actual = shape_of(value)
    if actual != tuple(expected):
        raise ValueError(f"{op}: {name} has shape {actual}, expected {meaning}")


def check_rank(op: str, name: str, value: Any, ranks: tuple[int, ...], meaning: str) -> None:
    if len(value.shape) not in ranks:
        raise ValueError(f"{op}: {name} has shape {shape_of(value)} (rank {len(value.shape)}), expected {meaning}")


def check_input(op: str, input: Any, ranks: tuple[int, ...], meaning: str, input_weights: dict[str, Any]) -> None:
    """The input's rank and float dtype, then its feature count against each weight of
    `input_weights` (name -> [n, n_input]), before the weights themselves are checked."""
    check_rank(op, "input", input, ranks, meaning)
    check_float(op, "input", input)
    for name, weight in input_weights.items():
        check_input_size(op, input, name, weight)


def check_input_size(op: str, input: Any, weight_name: str, weight: Any) -> None:
    """Raises ValueError when the last axis of `input` does not fit `weight` [n, n_input]: an
    input error, raised before any weight shape is checked against the input's size."""
    if weight is None or len(weight.shape) != 2:
        return  # the weight checks name the problem
    n_input, expected = input.shape[-1], weight.shape[1]
    if n_input != expected:
        raise ValueError(
            f"{op}: input has n_input={n_input} features (shape {shape_of(input)}) but {weight_name} is "
            f"{shape_of(weight)}: the weights expect n_input={expected}"
        )


def check_float(op: str, name: str, value: Any) -> None:
    if not jnp.issubdtype(value.dtype, jnp.floating):
        raise TypeError(f"{op}: {name} has dtype {value.dtype}, expected a float dtype")


def check_clip(op: str, name: str, value: float) -> None:
    if not value >= 0:  # also rejects NaN
        raise ValueError(f"{op}: {name}={value} is invalid; it must be >= 0 (0 means no clipping)")


def check_activation(op: str, name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"{op}: fused_activation_function={name!r} is not supported; use one of {allowed}")


def require(op: str, condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"{op}: {message}")
