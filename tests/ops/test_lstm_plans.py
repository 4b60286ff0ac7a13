"""Every `Plan` of the LSTM engine against the plain step, `lax.scan(lstm_cell)`.

`_lstm_engine.plan` picks a plan from the batch size; here each one is forced at small shapes:
every forward layout against `lax.scan(lstm_cell)` and the NumPy reference (outputs and final
state), and every derivative (its layout, linear terms for all steps or per step) against
plain JAX autodiff of `lax.scan(lstm_cell)`, in float64. The cases cover peephole, projection
with bias and clip, cell clip, CIFG, layer norm, a diagonal recurrence, aux input, the reversed
(backward) direction and hybrid weights (forward only).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.testing import assert_allclose

from jaxlstm.ops import LSTMState, _lstm_engine, lstm_cell
from jaxlstm.reference import np_lstm
from tests.cases import LSTMCase

from .cases import HYBRID_ATOL, lstm_state, lstm_weights, normal, quantize_weights

lstm_module = importlib.import_module("jaxlstm.ops.lstm")  # `jaxlstm.ops.lstm` names the op
Layout, Plan = _lstm_engine.Layout, _lstm_engine.Plan

# float64: the engine and the plain step differ only in how they group the sums of the same
# products (~1e-16 each over a few hundred operations); a wrong or missing term is off by far
# more than 1e-12.
F64_ATOL = 1e-12
# Gradients, relative to each leaf's largest entry (as tests/ops/test_lstm_custom_jvp.py).
GRAD_RTOL = 1e-10
# bfloat16 operands, float32 sums: the same products summed in another grouping (float32 ulps).
BF16_ATOL = 1e-5

_SIZES = dict(batch=3, time=4, n_input=3, n_cell=5)
PEEPHOLE_PROJECTION_AUX = LSTMCase(
    **_SIZES,
    n_output=3,
    peephole=True,
    projection=True,
    projection_bias=True,
    cell_clip=0.3,
    proj_clip=0.4,
    aux="cross",
    n_aux=2,
)
CIFG_LAYER_NORM = LSTMCase(**_SIZES, n_output=3, cifg=True, layer_norm=True, peephole=True, projection=True)
DIAGONAL = LSTMCase(**_SIZES, n_output=5, diagonal=True, peephole=True, cell_clip=0.3)
REVERSED = {PEEPHOLE_PROJECTION_AUX}  # runs as a backward direction

FULL_LAYOUTS = (Layout.HOISTED, Layout.FUSED, Layout.BATCH_MINOR)
DIAGONAL_LAYOUTS = (Layout.HOISTED, Layout.FUSED)
FORWARD_CASES = [(case, layout) for case in (PEEPHOLE_PROJECTION_AUX, CIFG_LAYER_NORM) for layout in FULL_LAYOUTS] + [
    (DIAGONAL, layout) for layout in DIAGONAL_LAYOUTS
]
DERIVATIVES = [
    Plan(layout, derivative_layout=layout, linear_terms_per_step=per_step)
    for layout in (Layout.HOISTED, Layout.FUSED)
    for per_step in (False, True)
]
GRADIENT_CASES = [(case, p) for case in (PEEPHOLE_PROJECTION_AUX, CIFG_LAYER_NORM, DIAGONAL) for p in DERIVATIVES]


def _plan_id(p: Plan) -> str:
    return f"{p.derivative_layout.value}-{'per_step' if p.linear_terms_per_step else 'all_steps'}"


def _inputs(case: LSTMCase, dtype=np.float64, seed: int = 0):
    """(weights, state, x [T, B, I], aux [T, B, n_aux] or None) in `dtype`."""
    rng = np.random.default_rng(seed)
    n_aux = case.n_aux if case.aux == "cross" else 0
    weights, state = lstm_weights(case, rng, n_aux), lstm_state(case, rng)
    x = normal(rng, case.time, case.batch, case.n_input, scale=1.0)
    aux = normal(rng, case.time, case.batch, n_aux, scale=1.0) if n_aux else None
    return jax.tree.map(lambda a: np.asarray(a, dtype), (weights, state, x, aux))


def _engine(case: LSTMCase, plan: Plan, matmul_dtype=None):
    """``(weights, state, x, aux) -> (ys, final LSTMState)``: one direction with `plan` forced."""

    def run(weights, state, x, aux):
        return lstm_module._direction(
            x, weights, state, case.options, aux, reverse=case in REVERSED, matmul_dtype=matmul_dtype, plan=plan
        )

    return jax.jit(run)


def _scanned_cell(case: LSTMCase, matmul_dtype=None):
    """The same direction as `lax.scan` of `lstm_cell`, differentiated by JAX itself."""

    def run(weights, state, x, aux):
        def step(carry, inputs):
            x_t, aux_t = inputs
            return lstm_cell(carry, x_t, weights, options=case.options, aux_input=aux_t, matmul_dtype=matmul_dtype)

        final, ys = jax.lax.scan(step, state, (x, aux), reverse=case in REVERSED)
        return ys, final

    return jax.jit(run)


def _numpy_reference(case: LSTMCase, weights, state, x, aux):
    """(ys, (h, c)) of the NumPy loop for the same direction."""
    outputs, fw, bw = np_lstm.bidirectional_sequence_lstm(
        x, weights, weights, state, state, aux, time_major=True, **case.reference_options
    )
    return (outputs[1], bw) if case in REVERSED else (outputs[0], fw)


@functools.cache
def _expected(case: LSTMCase) -> tuple:
    """(`lax.scan(lstm_cell)`'s outputs, the NumPy reference's) on `_inputs(case)`, float64,
    computed once per case for all the layouts compared with them."""
    with jax.enable_x64(True):
        args = _inputs(case)
        return jax.device_get(_scanned_cell(case)(*args)), _numpy_reference(case, *args)


@functools.cache
def _expected_gradient(case: LSTMCase):
    """Plain autodiff of `lax.scan(lstm_cell)` on `_inputs(case)`, float64, once per case."""
    with jax.enable_x64(True):
        return jax.device_get(_gradient(_scanned_cell(case), _inputs(case)))


def _gradient(run, args):
    """jax.grad of `_weighted_sum(run(*args))` w.r.t. the weights, the initial state, the input
    and (when there is one) the aux input."""
    argnums = (0, 1, 2) if args[3] is None else (0, 1, 2, 3)
    return jax.jit(jax.grad(lambda *a: _weighted_sum(run(*a)), argnums))(*args)


def _assert_close(got, want, atol):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert_allclose(g, w, rtol=0, atol=atol)


@pytest.mark.parametrize(
    "case, layout", [pytest.param(c, layout, id=f"{c}-{layout.value}") for c, layout in FORWARD_CASES]
)
def test_forward_layout_matches_the_scanned_cell_and_the_reference(case: LSTMCase, layout: Layout):
    scanned, reference = _expected(case)
    with jax.enable_x64(True):
        ys, final = _engine(case, Plan(layout, derivative_layout=Layout.FUSED))(*_inputs(case))
    assert isinstance(final, LSTMState)
    _assert_close((ys, final), scanned, F64_ATOL)
    _assert_close((ys, final), reference, F64_ATOL)


@pytest.mark.parametrize("layout", FULL_LAYOUTS, ids=lambda layout: layout.value)
def test_bfloat16_matmuls_match_the_scanned_cell(layout: Layout):
    """``matmul_dtype`` rounds the same operands in every layout and in `lstm_cell`."""
    case = PEEPHOLE_PROJECTION_AUX
    args = _inputs(case, np.float32)
    got = _engine(case, Plan(layout, derivative_layout=Layout.FUSED), jnp.bfloat16)(*args)
    want = _scanned_cell(case, jnp.bfloat16)(*args)
    _assert_close(got, want, BF16_ATOL)
    exact = _scanned_cell(case)(*args)
    assert np.max(np.abs(np.asarray(got[0]) - exact[0])) > 1e-4, "bfloat16 rounding never happened"


@pytest.mark.parametrize(
    "case", [dataclasses.replace(PEEPHOLE_PROJECTION_AUX, asymmetric=True), DIAGONAL], ids=lambda c: f"{c}-hybrid"
)
def test_hybrid_layout_matches_the_scanned_cell_and_the_reference(case: LSTMCase):
    weights, state, x, aux = _inputs(case, np.float32)
    args = (quantize_weights(weights), state, x, aux)
    ys, final = _engine(case, Plan(Layout.HYBRID))(*args)
    _assert_close((ys, final), _scanned_cell(case)(*args), HYBRID_ATOL)
    _assert_close((ys, final), _numpy_reference(case, *args), HYBRID_ATOL)


def _weighted_sum(outputs, seed: int = 99):
    """sum(output * fixed random factor) over the outputs and the final state."""
    rng = np.random.default_rng(seed)
    return sum((leaf * rng.standard_normal(leaf.shape)).sum() for leaf in jax.tree.leaves(outputs))


@pytest.mark.parametrize("case, plan", [pytest.param(c, p, id=f"{c}-{_plan_id(p)}") for c, p in GRADIENT_CASES])
def test_derivative_matches_autodiff_of_the_scanned_cell(case: LSTMCase, plan: Plan):
    """jax.grad w.r.t. the weights, the initial state, the input and the aux input."""
    want = _expected_gradient(case)
    with jax.enable_x64(True):
        got = _gradient(_engine(case, plan), _inputs(case))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert np.all(np.isfinite(w)) and np.any(w != 0), "vacuous check"
        assert np.max(np.abs(np.asarray(g) - w)) <= GRAD_RTOL * np.max(np.abs(w))


def test_plan_rules():
    """What `plan` guarantees at any batch: hybrid weights run the hybrid layout; a diagonal
    recurrence never runs batch-minor; the derivative's loops are batch-major; bfloat16
    matmuls keep the linear terms outside the tangent loop."""
    for batch in range(1, 130):
        for diagonal in (False, True):
            hybrid = _lstm_engine.plan(batch, diagonal=diagonal, hybrid=True, matmul_dtype=None)
            assert hybrid == Plan(Layout.HYBRID)
            p = _lstm_engine.plan(batch, diagonal=diagonal, hybrid=False, matmul_dtype=None)
            assert p.derivative_layout in (Layout.HOISTED, Layout.FUSED)
            assert not (diagonal and p.layout is Layout.BATCH_MINOR)
            bf16 = _lstm_engine.plan(batch, diagonal=diagonal, hybrid=False, matmul_dtype=jnp.bfloat16)
            assert not bf16.linear_terms_per_step


@pytest.mark.parametrize(
    "case, plan",
    [
        (DIAGONAL, Plan(Layout.BATCH_MINOR, derivative_layout=Layout.FUSED)),
        (DIAGONAL, Plan(Layout.FUSED, derivative_layout=Layout.BATCH_MINOR)),
        (CIFG_LAYER_NORM, Plan(Layout.HYBRID)),
        (CIFG_LAYER_NORM, Plan(Layout.FUSED)),
    ],
    ids=["diagonal_batch_minor", "batch_minor_derivative", "hybrid_layout_float_weights", "no_derivative_layout"],
)
def test_a_plan_that_cannot_run_the_weights_is_rejected(case: LSTMCase, plan: Plan):
    weights, state, x, aux = _inputs(case, np.float32)
    with pytest.raises(ValueError, match="cannot run an LSTM with"):
        lstm_module._direction(x, weights, state, case.options, aux, plan=plan)


def test_lstm_cell_scans_to_the_sequence_op():
    """`lax.scan(lstm_cell)` is the documented way to run the step: the op's own result."""
    case = dataclasses.replace(CIFG_LAYER_NORM, time_major=True)
    weights, state, x, _ = _inputs(case, np.float32)
    cell = functools.partial(lstm_cell, weights=weights, options=case.options)
    final, ys = jax.lax.scan(cell, state, x)
    y_op, final_op = jax.jit(lstm_module.unidirectional_sequence_lstm, static_argnames="options")(
        x, weights, state, options=case.options
    )
    _assert_close((ys, final), (y_op, final_op), 1e-6)  # float32, the same math grouped differently


# Batches 1, 3 and 64 differentiate through the plans' HOISTED and FUSED derivative layouts
# and the per-step linear terms.
FUSED_CELL_CASES = [
    (dataclasses.replace(PEEPHOLE_PROJECTION_AUX, aux="none"), False),
    (dataclasses.replace(PEEPHOLE_PROJECTION_AUX, aux="none", batch=64), False),
    (CIFG_LAYER_NORM, False),
    (dataclasses.replace(CIFG_LAYER_NORM, batch=1), False),
    (DIAGONAL, False),
    (CIFG_LAYER_NORM, True),
]


@pytest.mark.parametrize(
    "case, hybrid", [pytest.param(c, h, id=f"{c}{'-hybrid' if h else ''}") for c, h in FUSED_CELL_CASES]
)
def test_fused_cell_is_lstm_cell(case: LSTMCase, hybrid: bool):
    """`lstm_cell_fused` (the fast step of jaxlstm.nn's masked scans) against `lstm_cell`:
    outputs, final state, gradients and forward-mode derivatives, float64 (hybrid: forward
    only, float32)."""
    with jax.enable_x64(True):
        weights, state, x, _ = _inputs(case, np.float32 if hybrid else np.float64)
        if hybrid:
            weights = quantize_weights(weights)

        def run(cell):
            def scanned(weights, state, x):
                final, ys = jax.lax.scan(cell(weights), state, x)
                return ys, final

            return jax.jit(scanned)

        plain = run(lambda w: functools.partial(lstm_cell, weights=w, options=case.options))
        fused = run(lambda w: lstm_module.lstm_cell_fused(w, options=case.options, dtype=x.dtype))
        _assert_close(fused(weights, state, x), plain(weights, state, x), HYBRID_ATOL if hybrid else F64_ATOL)
        if not hybrid:
            gradients = [
                jax.grad(lambda *a, f=f: _weighted_sum(f(*a)), (0, 1, 2))(weights, state, x) for f in (fused, plain)
            ]
            _assert_close(*gradients, F64_ATOL)
            primals = (weights, state, x)
            rng = np.random.default_rng(7)
            tangents = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(np.shape(a)), a.dtype), primals)
            derivatives = [jax.jvp(f, primals, tangents) for f in (fused, plain)]
            _assert_close(*derivatives, F64_ATOL)
