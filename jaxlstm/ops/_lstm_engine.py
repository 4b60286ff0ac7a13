"""The LSTM ops' speed engine: loop layouts of the step of `jaxlstm.ops.lstm`, and its derivative.

A step (`lstm.lstm_cell`) has a matmul half, the gate terms ``z_X = W_xX x + W_aX a + W_hX h``
of every gate X and, with a projection, ``p = W_proj m``, and an elementwise half: the gates,
the cell update and the output (`lstm.lstm_gate`, `update_cell`, `lstm_output`, reached through
the step's `_Cell`). This module runs steps over a sequence with the matmul half laid out for
speed on XLA (`Layout`); every layout calls the same elementwise half of lstm.py. For the float
path it adds a custom JVP whose terms linear in the weight, input and bias tangents are
matmuls over all steps at once (or, per `Plan`, inside the tangent loop).

`plan` picks a `Plan` for a direction and is the only place that looks at the batch size. Why
each layout and threshold exists, with the measurements: experiments/README.md.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.ops._low_precision import low_precision_contract
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._quant import QuantizedTensor, hybrid_matmul
from jaxlstm.ops._shard_map import vary_like


class Layout(enum.Enum):
    """How a loop lays out the matmul half of the step (each is a `_*` class below)."""

    HOISTED = "hoisted"  # the input terms of all steps before the loop; h @ W_h.T in TFLite's layout
    FUSED = "fused"  # batch-major: one [x_t, a_t, h] @ [W_x; W_a; W_h] per step, row-major weights
    BATCH_MINOR = "batch_minor"  # state [n, B]: one [W_x, W_a, W_h] @ [x_t; a_t; h] per step
    HYBRID = "hybrid"  # int8 weights: TFLite's hybrid matmuls, batch-major


@dataclasses.dataclass(frozen=True)
class Plan:
    """How the engine runs one direction.

    Attributes:
      layout: the forward loop's layout.
      derivative_layout: the layout of the forward loop inside the float path's custom JVP
        (HOISTED or FUSED: the derivative's loops are batch-major); None for HYBRID, which
        JAX differentiates as it is.
      linear_terms_per_step: the JVP computes its terms linear in the weight, input and bias
        tangents inside the tangent loop, step by step, instead of before it for all steps.
    """

    layout: Layout
    derivative_layout: Layout | None = None
    linear_terms_per_step: bool = False


# The thresholds of `plan` (measured on XLA:CPU, experiments/README.md).
_BATCH_MINOR_FROM = 8  # the forward loop runs batch-minor from this batch size on
_LINEAR_TERMS_PER_STEP_FROM = 64  # the JVP's linear terms go inside the tangent loop from here


def plan(batch: int, *, diagonal: bool, hybrid: bool, matmul_dtype) -> Plan:
    """The `Plan` for a direction with `batch` rows: the only home of the engine's thresholds.

    Batch 1 hoists the input terms (its steps are matrix-vector products); from
    `_BATCH_MINOR_FROM` rows the forward loop runs batch-minor (not with a diagonal
    recurrence); the derivative's loops stay batch-major; from `_LINEAR_TERMS_PER_STEP_FROM`
    rows, with float32 matmuls, the linear terms are computed per step.
    """
    if hybrid:
        return Plan(Layout.HYBRID)
    if batch == 1:
        layout = Layout.HOISTED
    elif batch >= _BATCH_MINOR_FROM and not diagonal:
        layout = Layout.BATCH_MINOR
    else:
        layout = Layout.FUSED
    return Plan(
        layout,
        derivative_layout=Layout.FUSED if layout is Layout.BATCH_MINOR else layout,
        linear_terms_per_step=batch >= _LINEAR_TERMS_PER_STEP_FROM and matmul_dtype is None,
    )


def run(
    cell,
    matrices,
    vectors,
    xs: tuple[jax.Array, ...],
    state: tuple[jax.Array, jax.Array],
    *,
    reverse: bool = False,
    unroll: int = 1,
    matmul_dtype=None,
    _plan: Plan | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Runs the step of `cell` over time-major inputs; returns (ys [T, B, n_output], (h_T, c_T)).

    Args:
      cell: the step's `lstm._Cell` (structure, options and elementwise halves).
      matrices: its `lstm._StepMatrices` (TFLite's layout, per gate; `QuantizedTensor`s: hybrid).
      vectors: its `lstm._StepVectors`, in the input's dtype.
      xs: (x [T, B, n_input],) or (x, aux [T, B, n_aux]) read through ``matrices.inputs``.
      state: (h [B, n_output], c [B, n_cell]).
      reverse, unroll: as `lax.scan`'s.
      matmul_dtype: the operand dtype of the float matmuls (None: the input's).
      _plan: a `Plan` to use instead of `plan`'s (tests force every one).
    """
    diagonal = matrices.recurrent[0].ndim == 1
    hybrid = isinstance(matrices.inputs[0][0], QuantizedTensor)
    if _plan is None:
        _plan = plan(xs[0].shape[1], diagonal=diagonal, hybrid=hybrid, matmul_dtype=matmul_dtype)
    _check_plan(_plan, diagonal, hybrid)
    state = vary_like(tuple(state), xs, matrices, vectors)
    if hybrid:
        matmuls = _Hybrid.of(matrices, cell.asymmetric_quantize_inputs)
        ys, final, _ = _loop(cell, matmuls, vectors, xs, state, reverse, unroll)
        return ys, final
    mats = _float_matrices(matrices, xs[0].dtype)
    return _float_loop(cell, _plan, matmul_dtype, reverse, unroll, mats, vectors, xs, state)


def step(cell, matrices, vectors, *, dtype, matmul_dtype=None) -> Callable:
    """The step of `cell` as ``step((h, c), xs_t) -> ((h', c'), h')``, its matmul half in the
    FUSED layout (HYBRID for int8 weights) with the weights laid out once: for loops that run
    one step at a time (the masked scans of `jaxlstm.nn`). ``xs_t`` is (x_t,) or (x_t, a_t)."""
    if isinstance(matrices.inputs[0][0], QuantizedTensor):
        matmuls = _Hybrid.of(matrices, cell.asymmetric_quantize_inputs)
    else:
        matmuls = _Fused.of(_float_matrices(matrices, dtype), len(cell.gates), matmul_dtype)

    def one_step(carry: tuple, xs_t: tuple):
        carry, _ = _step(cell, matmuls, vectors, -1, carry, xs_t)
        return carry, carry[0]

    return one_step


def _float_matrices(matrices, dtype) -> _Float:
    return _Float(
        tuple(jnp.concatenate(m).astype(dtype) for m in matrices.inputs),
        jnp.concatenate(matrices.recurrent).astype(dtype),
        None if matrices.projection is None else matrices.projection.astype(dtype),
    )


def _check_plan(p: Plan, diagonal: bool, hybrid: bool) -> None:
    float_layouts = {Layout.HOISTED, Layout.FUSED} | (set() if diagonal else {Layout.BATCH_MINOR})
    if hybrid:
        valid = p.layout is Layout.HYBRID and p.derivative_layout is None
    else:
        valid = p.layout in float_layouts and p.derivative_layout in {Layout.HOISTED, Layout.FUSED}
    if not valid:
        kind = "hybrid" if hybrid else "diagonal" if diagonal else "full"
        raise ValueError(f"{p} cannot run an LSTM with {kind} weights")


# ----------------------------------------------------------------------------- matmuls


def _split(z: jax.Array, n: int, axis: int = -1) -> tuple[jax.Array, ...]:
    """The G gate arrays of z [..., G * n_cell] (along `axis`), in `gates` order.

    They travel through the loops as separate arrays, never as slices of one stacked
    [T, B, G * n_cell] array: XLA:CPU's code for the dynamic slice (a step's row) of a slice
    (a gate) was slower than the gate math itself."""
    return tuple(jnp.split(z, n, axis=axis))


def _times(a: jax.Array, w: jax.Array, matmul_dtype=None) -> jax.Array:
    """``a [..., k] @ w.T`` for a weight in TFLite's layout w [m, k], a dot contracting the
    weight's last axis: [..., m]. With `matmul_dtype`, a `low_precision_contract` (operands
    cast to it, in reverse mode too). A diagonal w [m] (which needs k dividing m) multiplies
    a, tiled to m, elementwise."""
    if w.ndim == 1:
        return jnp.tile(a, (1,) * (a.ndim - 1) + (w.shape[0] // a.shape[-1],)) * w
    if matmul_dtype is None:
        return jax.lax.dot_general(a, w, (((a.ndim - 1,), (1,)), ((), ())), precision=FLOAT32)
    return low_precision_contract(a, w, matmul_dtype)


def _row_major(a: jax.Array, w_t: jax.Array, out_dtype) -> jax.Array:
    """``a [..., k] @ w_t`` for a row-major copy w_t [k, m] of a weight, made before the loop."""
    return jax.lax.dot_general(
        a.astype(w_t.dtype),
        w_t,
        (((a.ndim - 1,), (0,)), ((), ())),
        precision=FLOAT32,
        preferred_element_type=out_dtype,
    )


def _column(w: jax.Array, a: jax.Array, out_dtype) -> jax.Array:
    """``w @ a`` for w [m, k] in TFLite's layout and a batch-minor a [k, B]: [m, B]."""
    return jax.lax.dot_general(
        w, a.astype(w.dtype), (((1,), (0,)), ((), ())), precision=FLOAT32, preferred_element_type=out_dtype
    )


def _per_gate(pairs: list, matmul: Callable) -> tuple[jax.Array, ...]:
    """The matmul half per gate: for each gate g, the sum of ``matmul(a, w[g])`` over the
    (a, w) pairs, where w holds one weight per gate (the products made pair by pair)."""
    products = [[matmul(a, w_g) for w_g in w] for a, w in pairs]
    return tuple(functools.reduce(jnp.add, gate) for gate in zip(*products))


class _Float(NamedTuple):
    """The float matrices, the gates stacked along the first axis in `gates` order."""

    inputs: tuple[jax.Array, ...]  # per input [G * n_cell, k]
    recurrent: jax.Array  # [G * n_cell, n_output], or the diagonal [G * n_cell]
    projection: jax.Array | None  # [n_output, n_cell]


def _cast(w: jax.Array, matmul_dtype) -> jax.Array:
    return w if matmul_dtype is None else w.astype(matmul_dtype)


@dataclasses.dataclass(frozen=True)
class _TFLite:
    """The recurrent and projection matmuls on the weights in TFLite's layout, batch-major
    (`_times`). The derivative's tangent loop multiplies this way: reverse mode runs its
    transpose, whose ``dz @ W_h`` then reads the weight row-major."""

    recurrent: jax.Array  # [G * n_cell, n_output] cast to matmul_dtype, or the diagonal
    projection: jax.Array | None
    matmul_dtype: Any
    out_dtype: Any

    @classmethod
    def of(cls, mats: _Float, matmul_dtype) -> _TFLite:
        r = mats.recurrent
        recurrent = r if r.ndim == 1 else _cast(r, matmul_dtype)
        projection = None if mats.projection is None else _cast(mats.projection, matmul_dtype)
        return cls(recurrent, projection, matmul_dtype, mats.inputs[0].dtype)

    def recurrent_terms(self, h: jax.Array) -> jax.Array:
        """h [B, n_output] -> [B, G * n_cell]."""
        if self.recurrent.ndim == 1:
            return _times(h, self.recurrent)
        return _times(h, self.recurrent, self.matmul_dtype).astype(self.out_dtype)

    def project(self, m: jax.Array) -> jax.Array:
        """m [B, n_cell] -> [B, n_output]."""
        return _times(m, self.projection, self.matmul_dtype).astype(self.out_dtype)


@dataclasses.dataclass(frozen=True)
class _Hoisted:
    """Layout.HOISTED: the input terms of all steps are computed before the loop, one matmul
    per gate and input on row-major copies; the loop multiplies h (and m) in TFLite's layout.
    At batch 1 the steps are matrix-vector products, as fast on TFLite's layout, and a
    row-major copy would be the largest fixed cost of a short sequence."""

    inputs: tuple[tuple[jax.Array, ...], ...]  # per input, per gate: row-major [k, n_cell]
    tflite: _TFLite
    batch_minor = False

    @classmethod
    def of(cls, mats: _Float, n_gates: int, tflite: _TFLite) -> _Hoisted:
        rows = tuple(tuple(_cast(w_g, tflite.matmul_dtype).T for w_g in jnp.split(w, n_gates)) for w in mats.inputs)
        return cls(rows, tflite)

    def step_inputs(self, xs: tuple) -> tuple[jax.Array, ...]:
        """The input terms of every step, per gate [T, B, n_cell]."""
        matmul = functools.partial(_row_major, out_dtype=self.tflite.out_dtype)
        return _per_gate(list(zip(xs, self.inputs)), matmul)

    def gates(self, zx_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(map(jnp.add, zx_t, _split(self.tflite.recurrent_terms(h), len(zx_t))))

    def project(self, m: jax.Array) -> jax.Array:
        return self.tflite.project(m)


@dataclasses.dataclass(frozen=True)
class _Fused:
    """Layout.FUSED: one ``[x_t, a_t, h] @ [W_x; W_a; W_h]`` per step (a diagonal recurrence
    adds ``h * w_h`` to ``[x_t, a_t] @ [W_x; W_a]``), on row-major copies of the weights
    made before the loop: inside the loop, a dot contracting a weight's last axis made XLA
    transpose the whole matrix at every step once the batch is above 1."""

    weights: jax.Array  # row-major [n_input (+ n_aux) (+ n_output), G * n_cell]
    diagonal: jax.Array | None  # [G * n_cell]
    projection: jax.Array | None  # row-major [n_cell, n_output]
    n_gates: int
    out_dtype: Any
    batch_minor = False

    @classmethod
    def of(cls, mats: _Float, n_gates: int, matmul_dtype) -> _Fused:
        diagonal = mats.recurrent if mats.recurrent.ndim == 1 else None
        matrices = mats.inputs if diagonal is not None else (*mats.inputs, mats.recurrent)
        projection = None if mats.projection is None else _cast(mats.projection, matmul_dtype).T
        weights = _cast(jnp.concatenate(matrices, axis=1), matmul_dtype).T
        return cls(weights, diagonal, projection, n_gates, mats.inputs[0].dtype)

    def step_inputs(self, xs: tuple) -> tuple:
        return xs  # each step multiplies its own x_t

    def gates(self, xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
        if self.diagonal is None:
            return _split(_row_major(jnp.concatenate((*xs_t, h), axis=-1), self.weights, self.out_dtype), self.n_gates)
        z = _row_major(jnp.concatenate(xs_t, axis=-1), self.weights, self.out_dtype) + _times(h, self.diagonal)
        return _split(z, self.n_gates)

    def project(self, m: jax.Array) -> jax.Array:
        return _row_major(m, self.projection, self.out_dtype)


@dataclasses.dataclass(frozen=True)
class _BatchMinor:
    """Layout.BATCH_MINOR: the loop holds the state as [n, B] (and the vectors as [n, 1]
    columns), and a step multiplies ``[W_x, W_a, W_h] @ [x_t; a_t; h]``: the weights in
    TFLite's layout as they are, a [G * n_cell, k] @ [k, B] GEMM whose gates are contiguous
    row blocks. Full recurrent weights only."""

    weights: jax.Array  # [G * n_cell, n_input (+ n_aux) + n_output]
    projection: jax.Array | None  # [n_output, n_cell]
    n_gates: int
    out_dtype: Any
    batch_minor = True

    @classmethod
    def of(cls, mats: _Float, n_gates: int, matmul_dtype) -> _BatchMinor:
        projection = None if mats.projection is None else _cast(mats.projection, matmul_dtype)
        weights = _cast(jnp.concatenate((*mats.inputs, mats.recurrent), axis=1), matmul_dtype)
        return cls(weights, projection, n_gates, mats.inputs[0].dtype)

    def step_inputs(self, xs: tuple) -> tuple[jax.Array, ...]:
        return tuple(jnp.swapaxes(x, 1, 2) for x in xs)  # [T, k, B]: each step multiplies its own x_t

    def gates(self, xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
        return _split(_column(self.weights, jnp.concatenate((*xs_t, h)), self.out_dtype), self.n_gates, axis=0)

    def project(self, m: jax.Array) -> jax.Array:
        return _column(self.projection, m, self.out_dtype)


@dataclasses.dataclass(frozen=True)
class _Hybrid:
    """Layout.HYBRID: int8 weights, one `hybrid_matmul` per input (all gates at once: each
    activation row is quantized once per step, as TFLite does), batch-major. A diagonal
    recurrence stays float."""

    inputs: tuple[tuple[jax.Array, jax.Array], ...]  # per input: (int8 [G * n_cell, k], scales)
    recurrent: tuple[jax.Array, jax.Array] | jax.Array  # likewise, or the float diagonal
    projection: tuple[jax.Array, jax.Array] | None
    n_gates: int
    asymmetric: bool
    batch_minor = False

    @classmethod
    def of(cls, matrices, asymmetric: bool) -> _Hybrid:
        def int8(mats: list) -> tuple[jax.Array, jax.Array]:
            values = jnp.concatenate([m.values for m in mats])
            scales = [jnp.broadcast_to(jnp.asarray(m.scale, jnp.float32), m.shape[:1]) for m in mats]
            return values, jnp.concatenate(scales)

        r = matrices.recurrent
        recurrent = jnp.concatenate(r) if r[0].ndim == 1 else int8(r)  # a diagonal is float
        inputs = tuple(int8(m) for m in matrices.inputs)
        projection = None if matrices.projection is None else int8([matrices.projection])
        return cls(inputs, recurrent, projection, len(r), asymmetric)

    def step_inputs(self, xs: tuple) -> tuple:
        return xs

    def _matmul(self, a: jax.Array, w) -> jax.Array:
        if isinstance(w, tuple):
            return hybrid_matmul(a, *w, self.asymmetric)
        return _times(a, w)

    def gates(self, xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
        z = sum(self._matmul(x_t, w) for x_t, w in zip(xs_t, self.inputs)) + self._matmul(h, self.recurrent)
        return _split(z, self.n_gates)

    def project(self, m: jax.Array) -> jax.Array:
        return self._matmul(m, self.projection)


def _float_matmuls(layout: Layout, mats: _Float, n_gates: int, tflite: _TFLite):
    if layout is Layout.HOISTED:
        return _Hoisted.of(mats, n_gates, tflite)
    if layout is Layout.FUSED:
        return _Fused.of(mats, n_gates, tflite.matmul_dtype)
    return _BatchMinor.of(mats, n_gates, tflite.matmul_dtype)


# ----------------------------------------------------------------------------- the loop


def _loop(cell, matmuls, vectors, xs: tuple, state: tuple, reverse: bool, unroll: int, residuals: bool = False):
    """The time loop of every layout: the matmul half from `matmuls`, the elementwise half
    from `cell`.

    Args:
      matmuls: a layout (`_Hoisted`, ...); with ``matmuls.batch_minor`` the loop holds the
        state as [n, B] and the vectors as [n, 1] columns.
      xs: the sequence inputs; the loop reads ``matmuls.step_inputs(xs)`` per step.
      residuals: also return what the derivative needs, stacked over steps: each step's
        input state h_in [T, B, n_output] and c_in [T, B, n_cell], z (G arrays
        [T, B, n_cell]) and, with a projection, m [T, B, n_cell] and p [T, B, n_output]
        (else None).

    Returns:
      (ys [T, B, n_output], final (h, c), (h_in, z, c_in, m, p) or None).
    """
    axis = 0 if matmuls.batch_minor else -1
    if matmuls.batch_minor:
        vectors = jax.tree.map(lambda v: v[:, None], vectors)
        state = jax.tree.map(jnp.transpose, state)

    def step(carry: tuple, xs_t: tuple):
        carry, saved = _step(cell, matmuls, vectors, axis, carry, xs_t)
        return carry, (carry[0], saved if residuals else None)

    final, (ys, per_step) = jax.lax.scan(step, state, matmuls.step_inputs(xs), reverse=reverse, unroll=unroll)
    if matmuls.batch_minor:
        final, ys = jax.tree.map(jnp.transpose, final), jnp.swapaxes(ys, 1, 2)
    return ys, final, per_step


def _step(cell, matmuls, vectors, axis: int, carry: tuple, xs_t: tuple):
    """One step: the matmul half from `matmuls`, the elementwise half from `cell`. Returns the
    new (h', c') and what the derivative saves of it: (h, z, c, m, p) (m and p None without
    a projection)."""
    h, c = carry
    z = matmuls.gates(xs_t, h)
    m, c_new = cell.gates_and_cell(z, c, vectors, axis)
    p = matmuls.project(m) if cell.projection else None
    h_new = m if p is None else cell.output_state(p, vectors)
    return (h_new, c_new), (h, z, c, m if cell.projection else None, p)


# ----------------------------------------------------------------------------- the derivative


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3, 4))
def _float_loop(
    cell, plan: Plan, matmul_dtype, reverse: bool, unroll: int, mats: _Float, vectors, xs: tuple, state: tuple
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The float time loop in ``plan.layout``; returns (ys [T, B, n_output], final (h, c))."""
    tflite = _TFLite.of(mats, matmul_dtype)
    matmuls = _float_matmuls(plan.layout, mats, len(cell.gates), tflite)
    ys, final, _ = _loop(cell, matmuls, vectors, xs, state, reverse, unroll)
    return ys, final


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _float_loop_jvp(cell, plan: Plan, matmul_dtype, reverse: bool, unroll: int, primals, tangents):
    """JVP with the weight and input terms outside the loop.

    The terms linear in the tangents of the weight matrices, of xs and (without layer norm)
    of the gate biases are batched matmuls over all steps: their transposes, the weight,
    input and bias gradients, are one matmul or sum each. The loop left carries (dh, dc)
    through each step with the matrices held constant; transposed, it does one ``dz @ W_h``
    per step. The steps' elementwise parts are recomputed from the saved z and state
    (`_recomputed_jvp`), so only those, not every intermediate, are stacked over time.

    With ``plan.linear_terms_per_step`` each step of the tangent loop computes its own linear
    terms instead: reverse mode then accumulates the weight gradients step by step, with
    B-deep matmuls, and never stacks z's cotangents over time. The forward loop here runs in
    ``plan.derivative_layout`` (batch-major).
    """
    mats, vectors, xs, state = primals
    d_mats, d_vectors, d_xs, d_state = tangents
    G = len(cell.gates)
    tflite = _TFLite.of(mats, matmul_dtype)  # the tangent loop's matmuls
    matmuls = _float_matmuls(plan.derivative_layout, mats, G, tflite)
    ys, final, (h_in, z, c, m, p) = _loop(cell, matmuls, vectors, xs, state, reverse, unroll, residuals=True)
    d_vectors = jax.tree.map(lambda v, d: jnp.zeros_like(v) if _is_zero(d) else d, vectors, d_vectors)
    d_xs = tuple(None if _is_zero(d) else d for d in d_xs)
    d_bias = [d_vectors.bias[g] for g in cell.gates]
    # The weights and their tangents split into gates once, outside the loops.
    inputs = [jnp.split(w, G) for w in mats.inputs]
    d_inputs = [None if _is_zero(d_w) else jnp.split(d_w, G) for d_w in d_mats.inputs]
    d_recurrent = None if _is_zero(d_mats.recurrent) else jnp.split(d_mats.recurrent, G)
    d_projection = d_mats.projection if cell.projection and not _is_zero(d_mats.projection) else None
    times = functools.partial(_times, matmul_dtype=matmul_dtype)

    def linear_terms(xs, d_xs, h_in, m) -> tuple[tuple[jax.Array, ...], jax.Array | None]:
        """The terms of z (G arrays [..., B, n_cell]) and of p ([..., B, n_output] or None)
        linear in the tangents of the weight matrices, of xs and (without layer norm) of
        the gate biases: the matmul half on (x, dW), (dx, W) and (h, dW_h) pairs, from xs,
        h_in and m, all steps' [T, B, ...] or one step's."""
        pairs = [(x, d_w) for x, d_w in zip(xs, d_inputs) if d_w is not None]
        pairs += [(d_x, w) for d_x, w in zip(d_xs, inputs) if d_x is not None]
        if d_recurrent is not None:
            pairs.append((h_in, d_recurrent))
        zero = jnp.zeros(h_in.shape[:-1] + z[0].shape[-1:], z[0].dtype)
        dz = _per_gate(pairs, times) if pairs else (zero,) * G
        if not cell.layer_norm:  # the bias adds straight to z
            dz = tuple(map(jnp.add, dz, d_bias))
        return dz, None if d_projection is None else times(m, d_projection)

    if plan.linear_terms_per_step:
        linear_in, linear = (xs, d_xs, h_in, m), (None, None)  # computed by each step
    else:
        linear_in, linear = None, linear_terms(xs, d_xs, h_in, m)
    if not cell.layer_norm:  # the gate bias tangents are in the linear terms
        d_vectors = d_vectors._replace(bias=jax.tree.map(jnp.zeros_like, vectors.bias))

    def tangent_step(d_carry: tuple, s: tuple):
        (dz_t, dp_t), linear_in_t, z_t, c_t, p_t = s  # per step: linear terms, then saved primals
        if linear_in_t is not None:
            dz_t, dp_t = linear_terms(*linear_in_t)
        dh, dc = d_carry
        dz = tuple(map(jnp.add, dz_t, _split(tflite.recurrent_terms(dh), G)))
        dm, dc = _recomputed_jvp(cell.gates_and_cell, (z_t, c_t, vectors), (dz, dc, d_vectors))
        dh = dm
        if cell.projection:
            dp = tflite.project(dm)
            dh = _recomputed_jvp(cell.output_state, (p_t, vectors), (dp if dp_t is None else dp + dp_t, d_vectors))
        return (dh, dc), dh

    d_state = jax.tree.map(lambda v, d: jnp.zeros_like(v) if _is_zero(d) else d, state, d_state)
    d_weights = [d for d in jax.tree.leaves(d_mats, is_leaf=_is_zero) if not _is_zero(d)]
    d_state = vary_like(d_state, linear, linear_in, d_weights, d_vectors)
    d_final, d_ys = jax.lax.scan(tangent_step, d_state, (linear, linear_in, z, c, p), reverse=reverse, unroll=unroll)
    return (ys, final), (d_ys, d_final)


_float_loop.defjvp(_float_loop_jvp, symbolic_zeros=True)


def _recomputed_jvp(f: Callable, primals: tuple, tangents: tuple):
    """``jax.jvp(f, primals, tangents)[1]``, recomputed from `primals` when transposed."""
    return jax.checkpoint(lambda p, t: jax.jvp(f, p, t)[1])(primals, tangents)
