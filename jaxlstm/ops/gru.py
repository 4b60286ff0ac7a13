"""GRU over a sequence (Keras, PyTorch and Flax semantics) as a jitted `lax.scan` loop.

TFLite has no builtin GRU operator; `jaxlstm.model.ModelBuilder.add_gru` exports this op
as an unrolled graph of builtin operators that computes the same steps. One step, per
batch row, with gates update z, reset r and candidate n (`GRU_GATES` order):

.. math::

    z &= \\mathrm{ra}(W_z x + b_z + R_z h + \\bar b_z)\\\\
    r &= \\mathrm{ra}(W_r x + b_r + R_r h + \\bar b_r)\\\\
    n &= \\mathrm{act}(W_n x + b_n + r \\odot (R_n h + \\bar b_n))
        \\quad(\\text{reset\\_after; else } R_n (r \\odot h) + \\bar b_n)\\\\
    h' &= n + z \\odot (h - n) \\;=\\; z \\odot h + (1 - z) \\odot n

`ra` is the recurrent activation (sigmoid), `act` the activation (tanh); the
recurrent-side biases :math:`\\bar b` are optional (Keras reset_after and PyTorch have
them, Keras reset_after=False and flax nnx have none). `gru_cell` is one step; `gru` runs the
steps with the input terms of all of them computed before its loop. The NumPy loop it is
checked against is `jaxlstm.reference.np_gru`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxlstm.ops import _checks
from jaxlstm.ops._activations import activation
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._shard_map import vary_like

GRU_GATES = ("update", "reset", "candidate")
# Activations a builtin-op graph can express: TANH and LOGISTIC operators, or a fused
# activation of ADD.
GRU_ACTIVATIONS = ("TANH", "SIGMOID", "RELU", "RELU6", "RELU_N1_TO_1", "NONE")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GRUWeights:
    """The constant tensors of one GRU direction, named in TFLite's style.

    Shapes: ``input_to_*_weights`` [n_units, n_input]; ``recurrent_to_*_weights``
    [n_units, n_units]; ``*_gate_bias`` (input side) and ``recurrent_*_gate_bias``
    (recurrent side, optional) [n_units]. `jaxlstm.convert` reads the frameworks' packed
    layouts: ``gru_weights_from_keras``, ``gru_weights_from_torch``, ``gru_weights_from_flax``
    and ``gru_weights_from_fused``.
    """

    input_to_update_weights: jax.Array
    input_to_reset_weights: jax.Array
    input_to_candidate_weights: jax.Array
    recurrent_to_update_weights: jax.Array
    recurrent_to_reset_weights: jax.Array
    recurrent_to_candidate_weights: jax.Array
    update_gate_bias: jax.Array
    reset_gate_bias: jax.Array
    candidate_gate_bias: jax.Array
    recurrent_update_gate_bias: jax.Array | None = None
    recurrent_reset_gate_bias: jax.Array | None = None
    recurrent_candidate_gate_bias: jax.Array | None = None

    replace = dataclasses.replace

    @property
    def n_units(self) -> int:
        return int(self.input_to_update_weights.shape[0])

    @property
    def n_input(self) -> int:
        return int(self.input_to_update_weights.shape[1])


@dataclasses.dataclass(frozen=True)
class GRUOptions:
    """Static options of `gru` (hashable, so they are static under jit).

    Attributes:
      reset_after: apply the reset gate after the recurrent matmul (Keras default,
        PyTorch, Flax) or before it (Keras ``reset_after=False``).
      activation: the candidate activation, one of `GRU_ACTIVATIONS` (Keras "tanh" is
        "TANH", "linear" is "NONE").
      recurrent_activation: the gate activation, one of `GRU_ACTIVATIONS` ("SIGMOID").
      time_major: input is [T, B, I] instead of [B, T, I].
    """

    reset_after: bool = True
    activation: str = "TANH"
    recurrent_activation: str = "SIGMOID"
    time_major: bool = False

    replace = dataclasses.replace


def check_weights(op: str, w: GRUWeights, options: GRUOptions, n_input: int) -> None:
    """Validates `w` and `options` for an input with `n_input` features."""
    for name in ("activation", "recurrent_activation"):
        if getattr(options, name) not in GRU_ACTIVATIONS:
            raise ValueError(
                f"{op}: {name}={getattr(options, name)!r} is not supported; use one of {GRU_ACTIVATIONS} "
                "(other activations have no builtin TFLite operator)"
            )
    units = w.n_units
    if units == 0:
        raise ValueError(f"{op}: input_to_update_weights has n_units=0 rows; n_units must be > 0")
    size = f"n_units={units}"
    for gate in GRU_GATES:
        _checks.check_shape(
            op,
            f"input_to_{gate}_weights",
            getattr(w, f"input_to_{gate}_weights"),
            (units, n_input),
            f"({size}, n_input={n_input})",
        )
        _checks.check_shape(
            op,
            f"recurrent_to_{gate}_weights",
            getattr(w, f"recurrent_to_{gate}_weights"),
            (units, units),
            f"({size}, {size})",
        )
        for name in (f"{gate}_gate_bias", f"recurrent_{gate}_gate_bias"):
            v = getattr(w, name)
            if v is not None:
                _checks.check_shape(op, name, v, (units,), f"({size},)")
                _checks.check_float(op, name, v)


def _dense(w: GRUWeights, kind: str, gates: tuple[str, ...], dtype) -> Callable[[jax.Array], jax.Array]:
    """``v -> v @ W.T + b`` for the `gates` stacked: ``kind`` "input" or "recurrent"."""
    weight = jnp.concatenate([getattr(w, f"{kind}_to_{g}_weights") for g in gates]).T.astype(dtype)
    prefix = "" if kind == "input" else "recurrent_"
    biases = [getattr(w, f"{prefix}{g}_gate_bias") for g in gates]
    if all(b is None for b in biases):
        return lambda v: jnp.matmul(v, weight, precision=FLOAT32)
    bias = jnp.concatenate([jnp.zeros(w.n_units) if b is None else b for b in biases]).astype(dtype)
    return lambda v: jnp.matmul(v, weight, precision=FLOAT32) + bias


_ZR, _N = ("update", "reset"), ("candidate",)


def _step(h: jax.Array, x_zr: jax.Array, x_n: jax.Array, recurrent_zr, recurrent_n, options: GRUOptions) -> jax.Array:
    """h' from h and the step's input terms ``x_zr = [W_z; W_r] x + [b_z; b_r]`` and
    ``x_n = W_n x + b_n`` (the math of this module's docstring); ``recurrent_zr`` and
    ``recurrent_n`` are the recurrent affine maps (`_dense`)."""
    act = activation(options.activation)
    gate_act = activation(options.recurrent_activation)
    z, r = jnp.split(gate_act(x_zr + recurrent_zr(h)), 2, axis=-1)
    if options.reset_after:
        candidate = act(x_n + r * recurrent_n(h))
    else:
        candidate = act(x_n + recurrent_n(r * h))
    return candidate + z * (h - candidate)


def _gru_scan(
    x: jax.Array, w: GRUWeights, h0: jax.Array, options: GRUOptions, reverse: bool
) -> tuple[jax.Array, jax.Array]:
    """One direction over time-major `x` [T, B, I]: the steps of `gru_cell`, with the input
    terms of all steps computed before the loop (one matmul each). Returns ([T, B, n_units], h_T)."""
    x_zr = _dense(w, "input", _ZR, x.dtype)(x)
    x_n = _dense(w, "input", _N, x.dtype)(x)
    recurrent_zr = _dense(w, "recurrent", _ZR, x.dtype)
    recurrent_n = _dense(w, "recurrent", _N, x.dtype)

    def step(h: jax.Array, xs: tuple[jax.Array, jax.Array]):
        h_new = _step(h, *xs, recurrent_zr, recurrent_n, options)
        return h_new, h_new

    h0 = vary_like(h0, x_zr, x_n, w)
    h_final, y = jax.lax.scan(step, h0, (x_zr, x_n), reverse=reverse)
    return y, h_final


def _check_state(op: str, state: jax.Array, batch: int, units: int) -> None:
    _checks.check_shape(op, "state", state, (batch, units), f"(n_batch={batch}, n_units={units})")


def gru_cell(
    state: jax.Array, x_t: jax.Array, weights: GRUWeights, *, options: GRUOptions = GRUOptions()
) -> tuple[jax.Array, jax.Array]:
    """One GRU step (the math of this module's docstring).

    ``(h: [B, n_units], x_t: [B, n_input]) -> (h', h')``, the carry and output of a `lax.scan`
    step: ``lax.scan(functools.partial(gru_cell, weights=w, options=o), h, x)`` runs a
    time-major sequence, as `gru` does (it computes the input terms of all steps before its
    loop).

    Args:
      state: h [B, n_units].
      x_t: float [B, n_input].
      weights: `GRUWeights`.
      options: static `GRUOptions` (``time_major`` does not apply).

    Returns:
      (h', h'), both [B, n_units].

    References:
      keras/src/layers/rnn/gru.py (GRUCell.call), torch.nn.GRU, flax GRUCell.
    """
    op = "gru_cell"
    _checks.check_input(
        op, x_t, (2,), "[n_batch, n_input]", {"input_to_update_weights": weights.input_to_update_weights}
    )
    check_weights(op, weights, options, x_t.shape[-1])
    _check_state(op, state, x_t.shape[0], weights.n_units)
    dtype = x_t.dtype
    recurrent_zr = _dense(weights, "recurrent", _ZR, dtype)
    recurrent_n = _dense(weights, "recurrent", _N, dtype)
    x_zr, x_n = _dense(weights, "input", _ZR, dtype)(x_t), _dense(weights, "input", _N, dtype)(x_t)
    h = _step(state, x_zr, x_n, recurrent_zr, recurrent_n, options)
    return h, h


@functools.partial(jax.jit, static_argnames=("options", "reverse", "keep_order"))
def gru(
    input: jax.Array,
    weights: GRUWeights,
    state: jax.Array | None = None,
    *,
    options: GRUOptions = GRUOptions(),
    reverse: bool = False,
    keep_order: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """A GRU layer over a sequence (no TFLite builtin; exported unrolled by `add_gru`).

    ``input: [B, T, n_input] (or [T, B, n_input] if time_major) -> (output: [B, T, n_units]
    (or [T, B, n_units]), h_T: [B, n_units])``: `gru_cell` over the time steps. Semantics are
    the NumPy loop `jaxlstm.reference.np_gru.gru`, roughly::

        h = state
        for t in (reversed(range(T)) if reverse else range(T)):
            h = step(x[:, t], h); out.append(h)
        output = stack(out[::-1] if reverse and keep_order else out, axis=1)

    Args:
      input: float [B, T, n_input], or [T, B, n_input] when ``options.time_major``.
      weights: `GRUWeights`.
      state: initial state h [B, n_units]; zeros if None.
      options: static `GRUOptions`.
      reverse: process from the last time step to the first (Keras ``go_backwards``,
        the backward half of a bidirectional layer).
      keep_order: with `reverse`, put each output at its input's time index (PyTorch
        and Flax bidirectional); otherwise outputs stay in processing order (Keras
        ``go_backwards``).

    Returns:
      (output sequence in the input's layout, final state h_T [B, n_units]).

    Raises:
      ValueError / TypeError: a tensor with the wrong shape or dtype, or an activation
        outside `GRU_ACTIVATIONS`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlstm.convert import gru_weights_from_keras
      >>> w = gru_weights_from_keras(jnp.ones((3, 6)) * .1, jnp.ones((2, 6)) * .1, jnp.zeros((2, 6)))
      >>> y, h = gru(jnp.ones((1, 5, 3)), w)
      >>> y.shape, h.shape
      ((1, 5, 2), (1, 2))

    References:
      keras/src/layers/rnn/gru.py (GRUCell.call), torch.nn.GRU, flax GRUCell.
    """
    op = "gru"
    _checks.check_input(
        op,
        input,
        (3,),
        "[B, T, n_input] (or [T, B, n_input] when time_major)",
        {"input_to_update_weights": weights.input_to_update_weights},
    )
    check_weights(op, weights, options, input.shape[-1])
    with jax.named_scope(f"jaxlstm.{op}"):
        x = input if options.time_major else jnp.swapaxes(input, 0, 1)
        if state is None:
            state = jnp.zeros((x.shape[1], weights.n_units), input.dtype)
        _check_state(op, state, x.shape[1], weights.n_units)
        y, h = _gru_scan(x, weights, state, options, reverse)
        if reverse and not keep_order:
            y = y[::-1]
        return (y if options.time_major else jnp.swapaxes(y, 0, 1)), h
