"""The float LSTM's custom JVP (`_lstm_engine._float_loop`) against plain JAX autodiff, in float64.

The reference is the same op traced without the rule: `_float_loop` is swapped for its
undecorated function (`jax.custom_jvp.fun`, set in `custom_jvp.__init__` in JAX 0.10), so JAX
differentiates the scan step by step. jax.grad, jax.jvp and jax.vjp must agree with it for
every feature that enters the rule (CIFG, peephole, projection and its bias and clip, layer
norm, cell clip, diagonal recurrence, aux input, time-major, the reversed backward direction,
a non-zero initial state) and for derivatives with respect to all or only some arguments
(the others then reach the rule as symbolic zeros).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxlstm.ops import _lstm_engine, bidirectional_sequence_lstm, unidirectional_sequence_lstm
from tests.cases import LSTMCase

from .cases import lstm_state, lstm_weights, normal

# Both sides evaluate the same float64 math and differ only in summation order (the rule sums
# weight and input terms over all steps at once), so they agree to rounding: ~1e-16 per
# operation over a few hundred operations. 1e-10 of each leaf's largest magnitude leaves a
# wide margin, while a missing or wrong term is off by far more than 1e-6.
RTOL = 1e-10

# B=2, T=4, I=3, n_cell=5; at B=1 `_lstm_engine.plan` picks the hoisted layout. At B=8 the
# reference differentiates the batch-minor forward loop (the custom derivative's are batch-major);
# at B=64 the custom derivative computes its weight and input terms step by step.
# (tests/ops/test_lstm_plans.py forces every plan at small batches.)
_SIZES = dict(batch=2, time=4, n_input=3, n_cell=5, n_output=5)
_PROJ = dict(projection=True, n_output=3)
PROJECTION = LSTMCase(**{**_SIZES, **_PROJ}, projection_bias=True, proj_clip=0.1)
ALL_FEATURES = LSTMCase(**{**_SIZES, **_PROJ}, cifg=True, layer_norm=True, peephole=True, cell_clip=0.3)
CROSS_AUX = LSTMCase(**_SIZES, time_major=True, aux="cross", n_aux=2, peephole=True)
UNIDIRECTIONAL_CASES = [
    LSTMCase(**_SIZES),
    LSTMCase(**{**_SIZES, "batch": 1}),
    LSTMCase(**_SIZES, cifg=True),
    LSTMCase(**_SIZES, peephole=True, cell_clip=0.3),
    LSTMCase(**_SIZES, cifg=True, peephole=True, time_major=True),
    PROJECTION,
    LSTMCase(**{**_SIZES, **_PROJ, "batch": 1}, projection_bias=True),
    LSTMCase(**_SIZES, layer_norm=True),
    ALL_FEATURES,
    LSTMCase(**_SIZES, diagonal=True),
    LSTMCase(**{**_SIZES, "batch": 1}, diagonal=True, peephole=True, time_major=True),
    LSTMCase(**{**_SIZES, "batch": 8}),
    LSTMCase(**{**_SIZES, "batch": 8}, cifg=True, layer_norm=True, peephole=True, cell_clip=0.3, time_major=True),
    dataclasses.replace(ALL_FEATURES, batch=8, projection_bias=True, proj_clip=0.1),
    # batch 64: the linear terms are computed per step (`Plan.linear_terms_per_step`)
    LSTMCase(**{**_SIZES, "batch": 64}),
    dataclasses.replace(ALL_FEATURES, batch=64, projection_bias=True, proj_clip=0.1),
    LSTMCase(**{**_SIZES, "batch": 64}, diagonal=True, peephole=True, time_major=True),
]
BIDIRECTIONAL_CASES = [
    CROSS_AUX,
    LSTMCase(**{**_SIZES, **_PROJ}, time_major=True, aux="bw_input", cifg=True, projection_bias=True),
    LSTMCase(**{**_SIZES, "batch": 1}, aux="cross", n_aux=2, peephole=True, cell_clip=0.3, merge_outputs=True),
    LSTMCase(**_SIZES, diagonal=True, time_major=True),
    LSTMCase(**{**_SIZES, "batch": 8}, aux="cross", n_aux=2, peephole=True, merge_outputs=True),
    LSTMCase(**{**_SIZES, **_PROJ, "batch": 64}, aux="cross", n_aux=2, cifg=True, peephole=True, projection_bias=True),
]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _without_custom_jvp(op):
    """`op` traced un-jitted (so no cached trace of the custom version is reused) with
    `_float_loop` replaced by its undecorated function."""

    def reference(*args, **kwargs):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(_lstm_engine, "_float_loop", _lstm_engine._float_loop.fun)
            return op.__wrapped__(*args, **kwargs)

    return reference


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _like(tree, rng: np.random.Generator):
    """A random float64 tree shaped like `tree` (tangents and cotangents)."""
    return jax.tree.map(lambda a: rng.standard_normal(np.shape(a)), tree)


def _unidirectional(case: LSTMCase, rng: np.random.Generator):
    """(params, fn(op, params) -> outputs, op) for UNIDIRECTIONAL_SEQUENCE_LSTM."""
    params = {
        "input": normal(rng, *case.input_shape, scale=1.0),
        "state": lstm_state(case, rng),
        "weights": lstm_weights(case, rng),
    }

    def fn(op, p):
        return op(p["input"], p["weights"], p["state"], options=case.options)

    return _f64(params), fn, unidirectional_sequence_lstm


def _bidirectional(case: LSTMCase, rng: np.random.Generator):
    """(params, fn(op, params) -> outputs, op) for BIDIRECTIONAL_SEQUENCE_LSTM."""
    n_aux = case.n_aux if case.aux == "cross" else 0
    params = {
        "input": normal(rng, *case.input_shape, scale=1.0),
        "fw_state": lstm_state(case, rng),
        "bw_state": lstm_state(case, rng),
        "fw": lstm_weights(case, rng, n_aux),
        "bw": lstm_weights(case, rng, n_aux),
    }
    if case.aux != "none":
        params["aux"] = normal(rng, *case.input_shape[:2], n_aux or case.n_input, scale=1.0)

    def fn(op, p):
        return op(
            p["input"],
            p["fw"],
            p["bw"],
            p["fw_state"],
            p["bw_state"],
            p.get("aux"),
            options=case.options,
            merge_outputs=case.merge_outputs,
        )

    return _f64(params), fn, bidirectional_sequence_lstm


_SETUPS = {
    "unidirectional": (_unidirectional, UNIDIRECTIONAL_CASES),
    "bidirectional": (_bidirectional, BIDIRECTIONAL_CASES),
}
_CASES = [pytest.param(op, case, id=f"{op}-{case}") for op, (_, cases) in _SETUPS.items() for case in cases]


def _setup(op_kind: str, case: LSTMCase, seed: int = 0):
    """(params, the op as a function of params, the same without the custom JVP)."""
    params, fn, op = _SETUPS[op_kind][0](case, np.random.default_rng(seed))
    return params, lambda p: fn(op, p), lambda p: fn(_without_custom_jvp(op), p)


def max_relative_error(got, want) -> float:
    """max over leaves of max |got - want| / max |want| (leaf structures must match)."""
    leaves = zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)
    return max(float(np.max(np.abs(np.asarray(g) - w)) / np.max(np.abs(w))) for g, w in leaves)


def assert_same_derivatives(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert all(np.all(np.isfinite(w)) and np.any(w != 0) for w in jax.tree.leaves(want)), "vacuous check"
    assert max_relative_error(got, want) <= RTOL


def _weighted_sum(outputs, seed: int = 99):
    """sum(output * fixed random factor) over every output and final state."""
    rng = np.random.default_rng(seed)
    return sum((leaf * rng.standard_normal(leaf.shape)).sum() for leaf in jax.tree.leaves(outputs))


def _jvp_and_vjp(fn, params, tangents, cotangents):
    """(outputs, jax.jvp tangents, jax.vjp cotangents) of `fn` at `params`, as one jitted
    program (one compilation instead of many small ones)."""

    def both(p, t, c):
        outputs, d_outputs = jax.jvp(fn, (p,), (t,))
        (d_params,) = jax.vjp(fn, p)[1](c)
        return outputs, d_outputs, d_params

    return jax.jit(both)(params, tangents, cotangents)


@pytest.mark.parametrize("op_kind, case", _CASES)
def test_jvp_and_vjp(op_kind, case):
    params, custom, plain = _setup(op_kind, case)
    tangents = _like(params, np.random.default_rng(1))
    cotangents = _like(jax.eval_shape(custom, params), np.random.default_rng(2))
    got = _jvp_and_vjp(custom, params, tangents, cotangents)
    want = _jvp_and_vjp(plain, params, tangents, cotangents)
    assert max_relative_error(got[0], want[0]) <= RTOL  # the primal outputs
    assert_same_derivatives(got[1], want[1])
    assert_same_derivatives(got[2], want[2])


# jax.grad (reverse mode, as training uses it) with respect to all or some arguments; the
# others reach the rule as symbolic zeros. With and without layer norm (which moves the gate
# bias inside the loop).
_GRAD_CASES = [
    pytest.param("unidirectional", case, keys, id=f"unidirectional-{case}-{'+'.join(keys)}")
    for case, parts in (
        (PROJECTION, (("input",), ("state",), ("weights",))),
        (ALL_FEATURES, (("weights",),)),
        (dataclasses.replace(PROJECTION, batch=64), (("input",), ("weights",))),
    )
    for keys in (("input", "state", "weights"), *parts)
] + [
    pytest.param("bidirectional", CROSS_AUX, keys, id=f"bidirectional-{CROSS_AUX}-{'+'.join(keys)}")
    for keys in (("input", "aux", "fw_state", "bw_state", "fw", "bw"), ("aux",), ("bw",), ("fw", "bw_state"))
]


@pytest.mark.parametrize("op_kind, case, keys", _GRAD_CASES)
def test_grad(op_kind, case, keys):
    params, custom, plain = _setup(op_kind, case)

    def loss(fn):
        return lambda part: _weighted_sum(fn({**params, **part}))

    part = {k: params[k] for k in keys}
    assert_same_derivatives(jax.jit(jax.grad(loss(custom)))(part), jax.jit(jax.grad(loss(plain)))(part))


def test_reference_is_plain_autodiff():
    """The reference really bypasses the rule (else every comparison above is vacuous)."""
    params, custom, plain = _setup("unidirectional", UNIDIRECTIONAL_CASES[0])
    assert "custom_jvp_call" in str(jax.make_jaxpr(custom)(params))
    assert "custom_jvp_call" not in str(jax.make_jaxpr(plain)(params))
