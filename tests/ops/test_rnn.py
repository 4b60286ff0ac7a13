"""RNN family (float path) against the NumPy reference: RNN, UNIDIRECTIONAL_SEQUENCE_RNN and
BIDIRECTIONAL_SEQUENCE_RNN (with the kernel's documented quirks); jit vs eager, vmap, property."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from jaxlstm.ops import bidirectional_sequence_rnn, rnn, rnn_cell, unidirectional_sequence_rnn
from jaxlstm.reference import np_rnn
from tests.cases import RNNCase

from .cases import FLOAT_ATOL, HYBRID_ATOL, JIT_EAGER_ATOL, normal, quantize_weights, rnn_weights

ACTIVATION_CASES = [RNNCase(activation=name) for name in ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")]
USEQ_CASES = [
    RNNCase(),
    RNNCase(time_major=True),
    RNNCase(activation="TANH"),
    RNNCase(activation="TANH", time_major=True),
    RNNCase(batch=1, time=1, n_input=1, n_units=1),
]
BIDI_CASES = [
    RNNCase(),
    RNNCase(time_major=True, merge_outputs=True),
    RNNCase(aux="cross", activation="TANH"),
    RNNCase(aux="cross", n_aux=2, merge_outputs=True),  # batch-major float: aux read correctly
    RNNCase(aux="cross", time_major=True),
    RNNCase(aux="cross", n_aux=2, time_major=True),  # quirk (a): aux stride = input size
    RNNCase(aux="bw_input", time_major=True),
    RNNCase(aux="bw_input", merge_outputs=True),  # quirk (b): bw reads `input` anyway
]


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=str)
def test_rnn_step_matches_reference(case: RNNCase):
    """The single-step RNN op, invoked once per step with the hidden state carried."""
    rng = np.random.default_rng(10)
    weights = rnn_weights(case.n_input, case.n_units, rng)
    h = h_ref = normal(rng, case.batch, case.n_units)
    x = normal(rng, case.time, case.batch, case.n_input, scale=1.0)
    for t in range(case.time):
        y, h = rnn(x[t], weights, h, options=case.options)
        y_ref, h_ref = np_rnn.rnn(x[t], weights, h_ref, **case.reference_options)
        assert_allclose(y, y_ref, rtol=0, atol=FLOAT_ATOL, err_msg=f"step {t}")
        assert_allclose(h, y, rtol=0, atol=0)  # output and new state are the same values


@pytest.mark.parametrize("case", USEQ_CASES, ids=str)
def test_unidirectional_sequence_rnn_matches_reference(case: RNNCase):
    rng = np.random.default_rng(11)
    weights = rnn_weights(case.n_input, case.n_units, rng)
    h0 = normal(rng, case.batch, case.n_units)
    x = normal(rng, *case.input_shape, scale=1.0)
    y, h = unidirectional_sequence_rnn(x, weights, h0, options=case.options)
    y_ref, h_ref = np_rnn.unidirectional_sequence_rnn(
        x, weights, h0, time_major=case.time_major, **case.reference_options
    )
    assert_allclose(y, y_ref, rtol=0, atol=FLOAT_ATOL)
    assert_allclose(h, h_ref, rtol=0, atol=FLOAT_ATOL)


@pytest.mark.parametrize("hybrid", [False, True], ids=["float", "hybrid"])
@pytest.mark.parametrize("aux", [False, True], ids=["no_aux", "aux"])
def test_rnn_cell_matches_the_reference_step_and_scans_to_the_sequence_op(aux: bool, hybrid: bool):
    """`rnn_cell` is one `np_rnn.rnn_step` per batch row; `lax.scan` of it computes what the
    sequence ops compute (they take the input terms of all steps before their loop)."""
    case = RNNCase(activation="TANH", asymmetric=hybrid, time_major=True)
    rng = np.random.default_rng(15)
    n_aux = case.n_input  # the kernel's aux stride quirk (`_aux_as_read`) is then a no-op
    weights = rnn_weights(case.n_input, case.n_units, rng, n_aux=n_aux if aux else 0)
    weights = quantize_weights(weights) if hybrid else weights
    x = normal(rng, case.time, case.batch, case.n_input, scale=1.0)
    a = normal(rng, case.time, case.batch, n_aux, scale=1.0) if aux else None
    h0 = normal(rng, case.batch, case.n_units)
    h1, y1 = rnn_cell(h0, x[0], weights, options=case.options, aux_input=None if a is None else a[0])
    expected = [
        np_rnn.rnn_step(x[0, b], None if a is None else a[0, b], h0[b], weights, **case.reference_options)
        for b in range(case.batch)
    ]
    assert_allclose(h1, np.stack(expected), rtol=0, atol=HYBRID_ATOL if hybrid else FLOAT_ATOL)
    assert_allclose(y1, h1, rtol=0, atol=0)

    def step(h, inputs):
        x_t, a_t = inputs
        return rnn_cell(h, x_t, weights, options=case.options, aux_input=a_t)

    h, y = jax.lax.scan(step, h0, (x, a))
    # The ops run batch-major: time-major hybrid, the bidirectional kernel repeats the sequence.
    options = case.options.replace(time_major=False)
    x_bm, a_bm = (None if v is None else np.swapaxes(v, 0, 1) for v in (x, a))
    if aux:  # the forward direction of the cross-linked bidirectional op
        (y_op, _), (h_op, _) = bidirectional_sequence_rnn(x_bm, weights, weights, h0, h0, a_bm, options=options)
    else:
        y_op, h_op = unidirectional_sequence_rnn(x_bm, weights, h0, options=options)
    assert_allclose(y, np.swapaxes(y_op, 0, 1), rtol=0, atol=JIT_EAGER_ATOL)  # the same products, summed alike
    assert_allclose(h, h_op, rtol=0, atol=JIT_EAGER_ATOL)


def _bidirectional_inputs(case: RNNCase, rng):
    n_aux = case.n_aux if case.aux == "cross" else 0
    fw = rnn_weights(case.n_input, case.n_units, rng, n_aux)
    bw = rnn_weights(case.n_input, case.n_units + 1, rng, n_aux)  # n_fw != n_bw
    fw_h, bw_h = normal(rng, case.batch, case.n_units), normal(rng, case.batch, case.n_units + 1)
    x = normal(rng, *case.input_shape, scale=1.0)
    aux = None
    if case.aux == "cross":
        aux = normal(rng, *case.input_shape[:2], case.n_aux, scale=1.0)
    elif case.aux == "bw_input":
        aux = normal(rng, *case.input_shape, scale=1.0)
    return x, fw, bw, fw_h, bw_h, aux


@pytest.mark.parametrize("case", BIDI_CASES, ids=str)
def test_bidirectional_sequence_rnn_matches_reference(case: RNNCase):
    rng = np.random.default_rng(12)
    args = _bidirectional_inputs(case, rng)
    outputs, finals = bidirectional_sequence_rnn(*args, options=case.options, merge_outputs=case.merge_outputs)
    ref_outputs, ref_finals = np_rnn.bidirectional_sequence_rnn(
        *args, time_major=case.time_major, merge_outputs=case.merge_outputs, **case.reference_options
    )
    assert len(outputs) == len(ref_outputs)
    for actual, expected in zip((*outputs, *finals), (*ref_outputs, *ref_finals)):
        assert_allclose(actual, expected, rtol=0, atol=FLOAT_ATOL)


def test_bidirectional_rnn_batch_major_bw_ignores_aux_input():
    """Quirk (b) made visible: batch-major, non-stacking, bw output does not depend on aux_input."""
    case = RNNCase(aux="bw_input")
    x, fw, bw, fw_h, bw_h, aux = _bidirectional_inputs(case, np.random.default_rng(13))
    (_, bw_a), _ = bidirectional_sequence_rnn(x, fw, bw, fw_h, bw_h, aux, options=case.options)
    (_, bw_b), _ = bidirectional_sequence_rnn(x, fw, bw, fw_h, bw_h, aux + 1, options=case.options)
    assert_allclose(bw_a, bw_b, rtol=0, atol=0)
    tm = RNNCase(aux="bw_input", time_major=True)
    x, fw, bw, fw_h, bw_h, aux = _bidirectional_inputs(tm, np.random.default_rng(13))
    (_, bw_a), _ = bidirectional_sequence_rnn(x, fw, bw, fw_h, bw_h, aux, options=tm.options)
    (_, bw_b), _ = bidirectional_sequence_rnn(x, fw, bw, fw_h, bw_h, aux + 1, options=tm.options)
    assert not np.allclose(bw_a, bw_b)


def test_jit_matches_eager():
    case = RNNCase(aux="cross", n_aux=2, time_major=True, activation="TANH", merge_outputs=True)
    args = _bidirectional_inputs(case, np.random.default_rng(14))
    jitted = bidirectional_sequence_rnn(*args, options=case.options, merge_outputs=True)
    with jax.disable_jit():
        eager = bidirectional_sequence_rnn(*args, options=case.options, merge_outputs=True)
    for actual, expected in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager)):
        assert_allclose(actual, expected, rtol=0, atol=JIT_EAGER_ATOL)


def test_unroll_matches_plain_scan():
    """`unroll` (speed only) changes no output; 3 does not divide T = 5."""
    case = RNNCase(aux="cross", n_aux=2, activation="TANH")
    args = _bidirectional_inputs(case, np.random.default_rng(16))
    rolled = bidirectional_sequence_rnn(*args, options=case.options)
    unrolled = bidirectional_sequence_rnn(*args, options=case.options, unroll=3)
    for actual, expected in zip(jax.tree.leaves(unrolled), jax.tree.leaves(rolled), strict=True):
        assert_allclose(actual, expected, rtol=0, atol=JIT_EAGER_ATOL)


def test_vmap_over_inputs_states_and_weights():
    case = RNNCase(activation="TANH")
    rng = np.random.default_rng(15)
    n = 3
    weights = [rnn_weights(case.n_input, case.n_units, rng) for _ in range(n)]
    h0 = normal(rng, n, case.batch, case.n_units)
    xs = normal(rng, n, *case.input_shape, scale=1.0)

    def run(x, w, h):
        return unidirectional_sequence_rnn(x, w, h, options=case.options)

    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *weights)
    batched = jax.vmap(run)(xs, stacked, h0)
    for i in range(n):
        for actual, expected in zip(jax.tree.leaves(batched), jax.tree.leaves(run(xs[i], weights[i], h0[i]))):
            assert_allclose(actual[i], expected, rtol=0, atol=JIT_EAGER_ATOL)


@st.composite
def rnn_cases(draw) -> RNNCase:
    return RNNCase(
        batch=draw(st.integers(1, 3)),
        time=draw(st.integers(1, 4)),
        n_input=draw(st.integers(1, 4)),
        n_units=draw(st.integers(1, 5)),
        time_major=draw(st.booleans()),
        activation=draw(st.sampled_from(["RELU", "TANH", "RELU6", "RELU_N1_TO_1", "NONE"])),
        aux=draw(st.sampled_from(["none", "cross", "bw_input"])),
        n_aux=draw(st.integers(1, 4)),
        merge_outputs=draw(st.booleans()),
    )


@settings(max_examples=6, deadline=None, derandomize=True)
@given(case=rnn_cases(), seed=st.integers(0, 2**16))
def test_property_bidirectional_sequence_rnn_matches_reference(case: RNNCase, seed: int):
    args = _bidirectional_inputs(case, np.random.default_rng(seed))
    outputs, finals = bidirectional_sequence_rnn(*args, options=case.options, merge_outputs=case.merge_outputs)
    ref_outputs, ref_finals = np_rnn.bidirectional_sequence_rnn(
        *args, time_major=case.time_major, merge_outputs=case.merge_outputs, **case.reference_options
    )
    for actual, expected in zip((*outputs, *finals), (*ref_outputs, *ref_finals)):
        assert_allclose(actual, expected, rtol=0, atol=FLOAT_ATOL, err_msg=case.name)
