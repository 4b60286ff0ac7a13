"""LSTM family (float path) against the NumPy reference: UNIDIRECTIONAL_SEQUENCE_LSTM, LSTM
(FULL and BASIC kernels) and BIDIRECTIONAL_SEQUENCE_LSTM; jit vs eager, vmap and a property test."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from jaxlstm.ops import (
    LSTMOptions,
    LSTMState,
    basic_lstm_cell,
    bidirectional_sequence_lstm,
    lstm,
    unidirectional_sequence_lstm,
)
from jaxlstm.reference import np_lstm
from tests.cases import LSTMCase

from .cases import FLOAT_ATOL, JIT_EAGER_ATOL, lstm_state, lstm_weights, normal, structural_lstm_cases

USEQ_CASES = structural_lstm_cases() + [
    LSTMCase(diagonal=True),
    LSTMCase(diagonal=True, cifg=True, peephole=True, layer_norm=True, cell_clip=0.3, time_major=True),
    LSTMCase(peephole=True, projection=True, n_output=3, activation="RELU"),
    LSTMCase(peephole=True, activation="RELU6", cell_clip=0.3, time_major=True),
    LSTMCase(cifg=True, layer_norm=True, activation="RELU_N1_TO_1"),
    LSTMCase(peephole=True, activation="SIGN_BIT"),
    LSTMCase(batch=1, time=1, n_input=1, n_cell=1, n_output=1),
    LSTMCase(
        batch=3,
        time=7,
        n_input=5,
        n_cell=6,
        n_output=2,
        peephole=True,
        projection=True,
        projection_bias=True,
        layer_norm=True,
        cell_clip=0.3,
        proj_clip=0.1,
    ),
    # batch >= 8: `_lstm_engine.plan` picks the batch-minor layout (test_lstm_plans.py forces every layout)
    LSTMCase(batch=8, time=5, n_input=3, n_cell=8, n_output=8),
    LSTMCase(
        batch=8,
        time=5,
        n_input=3,
        n_cell=6,
        n_output=4,
        peephole=True,
        projection=True,
        projection_bias=True,
        layer_norm=True,
        cell_clip=0.3,
        proj_clip=0.1,
    ),
    LSTMCase(
        batch=9,
        time=5,
        n_input=3,
        n_cell=6,
        n_output=6,
        cifg=True,
        peephole=True,
        layer_norm=True,
        cell_clip=0.3,
        time_major=True,
        activation="RELU6",
    ),
]
# The step op shares the sequence op's code: half of the combinations (odd feature parity).
LSTM_STEP_CASES = [dataclasses.replace(c, time_major=False) for c in structural_lstm_cases(time=3) if c.time_major]
BIDI_CASES = [
    LSTMCase(time_major=True),
    LSTMCase(time_major=True, merge_outputs=True, aux="cross"),
    LSTMCase(time_major=True, aux="cross", n_aux=2, cifg=True, peephole=True),
    LSTMCase(time_major=True, aux="bw_input", projection=True, n_output=3, projection_bias=True),
    LSTMCase(aux="cross", n_aux=2, projection=True, n_output=3, proj_clip=0.1),
    LSTMCase(aux="bw_input", peephole=True, cell_clip=0.3),
    LSTMCase(cifg=True, projection=True, n_output=3, merge_outputs=True),
    LSTMCase(
        time_major=True,
        cifg=True,
        peephole=True,
        projection=True,
        n_output=3,
        merge_outputs=True,
        aux="bw_input",
        activation="RELU",
    ),
]


def _assert_clipping_active(case: LSTMCase, run) -> None:
    """A clip case must actually clip: the reference without the clips must differ."""
    if case.cell_clip or case.proj_clip:
        clipped, unclipped = run(case), run(dataclasses.replace(case, cell_clip=0.0, proj_clip=0.0))
        assert not np.allclose(clipped, unclipped, atol=1e-3), f"{case}: clips never reached"


@pytest.mark.parametrize("case", USEQ_CASES, ids=str)
def test_unidirectional_sequence_lstm_matches_reference(case: LSTMCase):
    rng = np.random.default_rng(1)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    x = normal(rng, *case.input_shape, scale=1.0)

    y, (h, c) = unidirectional_sequence_lstm(x, weights, state, options=case.options)

    def reference(c_):
        return np_lstm.unidirectional_sequence_lstm(
            x, weights, *state, time_major=c_.time_major, **c_.reference_options
        )

    y_ref, h_ref, c_ref = reference(case)
    assert_allclose(y, y_ref, rtol=0, atol=FLOAT_ATOL)
    assert_allclose(h, h_ref, rtol=0, atol=FLOAT_ATOL)
    assert_allclose(c, c_ref, rtol=0, atol=FLOAT_ATOL)
    _assert_clipping_active(case, lambda c_: reference(c_)[0])


def test_unidirectional_sequence_lstm_default_state_is_zero():
    case = LSTMCase(peephole=True)
    rng = np.random.default_rng(2)
    weights, x = lstm_weights(case, rng), normal(rng, *case.input_shape)
    y, _ = unidirectional_sequence_lstm(x, weights)
    assert_allclose(y, np_lstm.unidirectional_sequence_lstm(x, weights)[0], rtol=0, atol=FLOAT_ATOL)


@pytest.mark.parametrize("case", LSTM_STEP_CASES, ids=str)
def test_lstm_step_matches_reference(case: LSTMCase):
    """The single-step LSTM op, invoked once per time step with the state carried (as the
    interpreter's variable tensors are)."""
    rng = np.random.default_rng(3)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    x = normal(rng, case.time, case.batch, case.n_input, scale=1.0)
    h_ref, c_ref = state
    for t in range(case.time):
        y, state = lstm(x[t], weights, state, options=case.options)
        y_ref, h_ref, c_ref = np_lstm.lstm(x[t], weights, h_ref, c_ref, **case.reference_options)
        assert_allclose(y, y_ref, rtol=0, atol=FLOAT_ATOL, err_msg=f"step {t}")
    assert_allclose(state.output_state, h_ref, rtol=0, atol=FLOAT_ATOL)
    assert_allclose(state.cell_state, c_ref, rtol=0, atol=FLOAT_ATOL)


@pytest.mark.parametrize("batch, n_input, units", [(2, 3, 4), (1, 2, 3)], ids=lambda v: str(v))
def test_basic_lstm_cell_matches_reference(batch, n_input, units):
    rng = np.random.default_rng(4)
    args = (
        normal(rng, batch, n_input, scale=1.0),
        normal(rng, batch, units),
        normal(rng, 4 * units, n_input + units),
        normal(rng, 4 * units, scale=0.2),
        normal(rng, batch, units),
    )
    for actual, expected in zip(basic_lstm_cell(*args), np_lstm.basic_lstm_cell(*args)):
        assert_allclose(actual, expected, rtol=0, atol=FLOAT_ATOL)


def _bidirectional_inputs(case: LSTMCase, rng):
    fw_weights = lstm_weights(case, rng, n_aux=case.n_aux if case.aux == "cross" else 0)
    bw_weights = lstm_weights(case, rng, n_aux=case.n_aux if case.aux == "cross" else 0)
    fw_state, bw_state = lstm_state(case, rng), lstm_state(case, rng)
    x = normal(rng, *case.input_shape, scale=1.0)
    aux = None
    if case.aux == "cross":
        aux = normal(rng, *case.input_shape[:2], case.n_aux, scale=1.0)
    elif case.aux == "bw_input":
        aux = normal(rng, *case.input_shape, scale=1.0)
    return x, fw_weights, bw_weights, fw_state, bw_state, aux


@pytest.mark.parametrize("case", BIDI_CASES, ids=str)
def test_bidirectional_sequence_lstm_matches_reference(case: LSTMCase):
    """All three aux modes, merged and separate outputs, both layouts (fw and bw weights differ;
    TFLite requires them to have the same sizes). Note: when batch-major and merged, the kernel
    offsets the state by the merged row width (spec §4, suspected latent bug); jaxlstm and the
    reference do not."""
    rng = np.random.default_rng(5)
    x, fw_weights, bw_weights, fw_state, bw_state, aux = _bidirectional_inputs(case, rng)

    outputs, (fw_final, bw_final) = bidirectional_sequence_lstm(
        x,
        fw_weights,
        bw_weights,
        fw_state,
        bw_state,
        aux,
        options=case.options,
        merge_outputs=case.merge_outputs,
    )
    ref_outputs, ref_fw, ref_bw = np_lstm.bidirectional_sequence_lstm(
        x,
        fw_weights,
        bw_weights,
        fw_state,
        bw_state,
        aux,
        time_major=case.time_major,
        merge_outputs=case.merge_outputs,
        **case.reference_options,
    )
    assert len(outputs) == len(ref_outputs) == (1 if case.merge_outputs else 2)
    for actual, expected in zip(outputs, ref_outputs):
        assert_allclose(actual, expected, rtol=0, atol=FLOAT_ATOL)
    for actual, expected in zip((*fw_final, *bw_final), (*ref_fw, *ref_bw)):
        assert_allclose(actual, expected, rtol=0, atol=FLOAT_ATOL)


# ----------------------------------------------------------------------------- jit, vmap, property

FULL_CASE = LSTMCase(
    peephole=True, projection=True, n_output=3, projection_bias=True, layer_norm=True, cell_clip=0.3, proj_clip=0.1
)


def test_jit_matches_eager():
    rng = np.random.default_rng(6)
    weights, state = lstm_weights(FULL_CASE, rng), lstm_state(FULL_CASE, rng)
    x = normal(rng, *FULL_CASE.input_shape, scale=1.0)
    jitted = unidirectional_sequence_lstm(x, weights, state, options=FULL_CASE.options)
    with jax.disable_jit():
        eager = unidirectional_sequence_lstm(x, weights, state, options=FULL_CASE.options)
    for actual, expected in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        assert_allclose(actual, expected, rtol=0, atol=JIT_EAGER_ATOL)


def test_bidirectional_jit_matches_eager():
    case = LSTMCase(time_major=True, aux="cross", peephole=True, merge_outputs=True)
    args = _bidirectional_inputs(case, np.random.default_rng(7))
    jitted = bidirectional_sequence_lstm(*args, options=case.options, merge_outputs=True)
    with jax.disable_jit():
        eager = bidirectional_sequence_lstm(*args, options=case.options, merge_outputs=True)
    for actual, expected in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        assert_allclose(actual, expected, rtol=0, atol=JIT_EAGER_ATOL)


@pytest.mark.parametrize("batch", [2, 8], ids=["b2", "b8"])  # batch 8: the batch-minor loop
def test_vmap_over_inputs_states_and_weights(batch: int):
    """vmap over a leading axis of inputs, initial states and weights equals a Python loop."""
    case = dataclasses.replace(FULL_CASE, batch=batch)
    rng = np.random.default_rng(8)
    n = 3
    weights = [lstm_weights(case, rng) for _ in range(n)]
    states = [lstm_state(case, rng) for _ in range(n)]
    xs = normal(rng, n, *case.input_shape, scale=1.0)

    def run(x, w, s):
        return unidirectional_sequence_lstm(x, w, s, options=case.options)

    stack = lambda *leaves: np.stack(leaves)  # noqa: E731
    batched = jax.vmap(run)(xs, jax.tree.map(stack, *weights), jax.tree.map(stack, *states))
    for i in range(n):
        looped = run(xs[i], weights[i], states[i])
        for actual, expected in zip(jax.tree.leaves(batched), jax.tree.leaves(looped)):
            assert_allclose(actual[i], expected, rtol=0, atol=JIT_EAGER_ATOL)


# batch 1 hoists the input matmuls, batch 8 runs the loop batch-minor
@pytest.mark.parametrize("batch", [1, 2, 8], ids=["b1", "b2", "b8"])
def test_unroll_matches_plain_scan(batch: int):
    """`unroll` (speed only) changes neither outputs nor gradients; 3 does not divide T = 5."""
    case = dataclasses.replace(FULL_CASE, batch=batch)
    rng = np.random.default_rng(9)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    x = normal(rng, *case.input_shape, scale=1.0)

    def run(unroll):
        def loss(w):
            y, (h, c) = unidirectional_sequence_lstm(x, w, state, options=case.options, unroll=unroll)
            return jax.numpy.sum(y * y) + jax.numpy.sum(c), (y, h, c)

        return jax.grad(loss, has_aux=True)(weights)

    for actual, expected in zip(jax.tree.leaves(run(3)), jax.tree.leaves(run(1)), strict=True):
        assert_allclose(actual, expected, rtol=0, atol=JIT_EAGER_ATOL)


@st.composite
def lstm_cases(draw) -> LSTMCase:
    projection = draw(st.booleans())
    n_cell = draw(st.integers(1, 5))
    diagonal = not projection and draw(st.booleans())
    return LSTMCase(
        batch=draw(st.integers(1, 3)),
        time=draw(st.integers(1, 4)),
        n_input=draw(st.integers(1, 4)),
        n_cell=n_cell,
        n_output=draw(st.integers(1, 4)) if projection else n_cell,
        cifg=draw(st.booleans()),
        peephole=draw(st.booleans()),
        projection=projection,
        projection_bias=projection and draw(st.booleans()),
        layer_norm=draw(st.booleans()),
        diagonal=diagonal,
        cell_clip=draw(st.sampled_from([0.0, 0.5])),
        proj_clip=draw(st.sampled_from([0.0, 0.2])) if projection else 0.0,
        time_major=draw(st.booleans()),
        activation=draw(st.sampled_from(["TANH", "RELU", "RELU6", "RELU_N1_TO_1"])),
    )


@settings(max_examples=6, deadline=None, derandomize=True)
@given(case=lstm_cases(), seed=st.integers(0, 2**16))
def test_property_unidirectional_sequence_lstm_matches_reference(case: LSTMCase, seed: int):
    rng = np.random.default_rng(seed)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    x = normal(rng, *case.input_shape, scale=1.0)
    y, (h, c) = unidirectional_sequence_lstm(x, weights, state, options=case.options)
    y_ref, h_ref, c_ref = np_lstm.unidirectional_sequence_lstm(
        x, weights, *state, time_major=case.time_major, **case.reference_options
    )
    for actual, expected in ((y, y_ref), (h, h_ref), (c, c_ref)):
        assert_allclose(actual, expected, rtol=0, atol=FLOAT_ATOL, err_msg=case.name)


def test_options_time_major_is_ignored_by_the_step_op():
    """The LSTM op always runs time-major on its 2-D input, whatever `time_major` says."""
    case = LSTMCase(peephole=True)
    rng = np.random.default_rng(9)
    weights, state = lstm_weights(case, rng), lstm_state(case, rng)
    x = normal(rng, case.batch, case.n_input)
    a = lstm(x, weights, state, options=LSTMOptions(time_major=False))
    b = lstm(x, weights, state, options=LSTMOptions(time_major=True))
    for actual, expected in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert_allclose(actual, expected, rtol=0, atol=0)
    assert isinstance(a[1], LSTMState)
