"""jax.grad through every op (float path) against central finite differences, in float64.

Each check compares the directional derivative <grad, v> along a random direction v with
(f(p + eps v) - f(p - eps v)) / (2 eps) for the input, the initial state, aux_input and single
weight tensors, on a loss that weighs every output and final state with fixed random factors.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.ops import (
    LSTMState,
    basic_lstm_cell,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    lstm,
    rnn,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)
from tests.cases import LSTMCase, RNNCase

from .cases import lstm_state, lstm_weights, normal, rnn_weights

EPS = 1e-6
# Central differences in float64: truncation ~eps^2 * f''' ~ 1e-12, rounding ~1e-16 |f| / eps.
FD_RTOL, FD_ATOL = 1e-6, 1e-8


@pytest.fixture(autouse=True)
def x64():
    """float64 for the whole test (finite differences need it); restores the previous mode."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _weighted_sum(outputs, rng_seed: int = 99):
    """sum(output * fixed random factor) over every leaf: all outputs matter to the gradient."""
    rng = np.random.default_rng(rng_seed)
    leaves = jax.tree.leaves(outputs)
    return sum(jnp.sum(leaf * rng.standard_normal(leaf.shape)) for leaf in leaves)


def check_gradients(loss, params: dict, groups: dict[str, tuple], rng):
    """For each group (name -> path of keys into `params`), compares jax.grad with central
    differences along a random direction of that group's leaves."""
    grads = jax.grad(loss)(params)
    for name, path in groups.items():
        value, grad = params, grads
        for key in path:
            value, grad = value[key], grad[key]
        direction = jax.tree.map(lambda a: rng.standard_normal(np.shape(a)), value)

        def shifted(sign):
            moved = jax.tree.map(lambda a, d: a + sign * EPS * d, value, direction)  # noqa: B023 (called at once)
            return loss(_replace_at(params, path, moved))  # noqa: B023

        numeric = (float(shifted(1)) - float(shifted(-1))) / (2 * EPS)
        analytic = sum(float(np.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction)))
        assert analytic != 0, f"{name}: zero gradient, the check would be vacuous"
        np.testing.assert_allclose(analytic, numeric, rtol=FD_RTOL, atol=FD_ATOL, err_msg=name)


def _replace_at(tree: dict, path: tuple, value):
    if not path:
        return value
    return {**tree, path[0]: _replace_at(tree[path[0]], path[1:], value)}


def _weight_groups(weights, names) -> dict[str, tuple]:
    return {name: ("weights", name) for name in names if getattr(weights, name) is not None}


LSTM_WEIGHT_NAMES = (
    "input_to_forget_weights",
    "recurrent_to_cell_weights",
    "input_gate_bias",
    "output_gate_bias",
    "cell_to_input_weights",
    "cell_to_forget_weights",
    "cell_to_output_weights",
    "projection_weights",
    "projection_bias",
    "forget_layer_norm_coefficients",
    "output_layer_norm_coefficients",
)

USEQ_CASES = [  # clipped entries have derivative 0; the clips are active in these cases
    LSTMCase(time=4, cifg=True, peephole=True, time_major=True),
    LSTMCase(time=4, peephole=True, projection=True, projection_bias=True, n_output=3, proj_clip=0.1),
    LSTMCase(time=4, peephole=True, layer_norm=True),
    LSTMCase(time=4, cifg=True, layer_norm=True, projection=True, n_output=3, cell_clip=0.3),
    LSTMCase(time=4, diagonal=True, peephole=True, cell_clip=0.3, time_major=True),
]


def _lstm_params(case: LSTMCase, rng, n_aux: int = 0):
    weights = _f64(lstm_weights(case, rng, n_aux))
    params = {
        "input": normal(rng, *case.input_shape, scale=1.0).astype(np.float64),
        "state": dict(zip(("h", "c"), _f64(lstm_state(case, rng)))),
        "weights": {
            f.name: getattr(weights, f.name)
            for f in dataclasses.fields(weights)
            if getattr(weights, f.name) is not None
        },
    }
    return weights, params


@pytest.mark.parametrize("case", USEQ_CASES, ids=str)
def test_unidirectional_sequence_lstm_gradients(case: LSTMCase):
    rng = np.random.default_rng(30)
    weights, params = _lstm_params(case, rng)

    def loss(p):
        w = weights.replace(**p["weights"])
        return _weighted_sum(
            unidirectional_sequence_lstm(
                p["input"], w, LSTMState(p["state"]["h"], p["state"]["c"]), options=case.options
            )
        )

    groups = {"input": ("input",), "state": ("state",), **_weight_groups(weights, LSTM_WEIGHT_NAMES)}
    check_gradients(loss, params, groups, rng)


def test_lstm_step_gradients():
    case = LSTMCase(peephole=True, projection=True, projection_bias=True, n_output=3, layer_norm=True, cell_clip=0.3)
    rng = np.random.default_rng(31)
    weights, params = _lstm_params(case, rng)
    params["input"] = params["input"][:, 0]

    def loss(p):
        w = weights.replace(**p["weights"])
        return _weighted_sum(lstm(p["input"], w, LSTMState(p["state"]["h"], p["state"]["c"]), options=case.options))

    groups = {"input": ("input",), "state": ("state",), **_weight_groups(weights, LSTM_WEIGHT_NAMES)}
    check_gradients(loss, params, groups, rng)


@pytest.mark.parametrize(
    "case",
    [
        LSTMCase(time=4, time_major=True, aux="cross", n_aux=2, peephole=True, merge_outputs=True),
        LSTMCase(time=4, aux="bw_input", projection=True, n_output=3, cifg=True),
    ],
    ids=str,
)
def test_bidirectional_sequence_lstm_gradients(case: LSTMCase):
    rng = np.random.default_rng(32)
    n_aux = case.n_aux if case.aux == "cross" else 0
    fw, fw_params = _lstm_params(case, rng, n_aux)
    bw, bw_params = _lstm_params(case, rng, n_aux)
    aux_shape = (*case.input_shape[:2], case.n_aux) if case.aux == "cross" else case.input_shape
    params = {
        "input": fw_params["input"],
        "aux": normal(rng, *aux_shape, scale=1.0).astype(np.float64),
        "fw_state": fw_params["state"],
        "bw_state": bw_params["state"],
        "fw": fw_params["weights"],
        "bw": bw_params["weights"],
    }

    def loss(p):
        return _weighted_sum(
            bidirectional_sequence_lstm(
                p["input"],
                fw.replace(**p["fw"]),
                bw.replace(**p["bw"]),
                LSTMState(p["fw_state"]["h"], p["fw_state"]["c"]),
                LSTMState(p["bw_state"]["h"], p["bw_state"]["c"]),
                p["aux"],
                options=case.options,
                merge_outputs=case.merge_outputs,
            )
        )

    groups = {
        "input": ("input",),
        "aux_input": ("aux",),
        "fw_state": ("fw_state",),
        "bw_state": ("bw_state",),
        "fw_weights": ("fw",),
        "bw_weights": ("bw",),
    }
    if case.aux == "cross":
        groups["bw_aux_input_to_forget_weights"] = ("bw", "aux_input_to_forget_weights")
    check_gradients(loss, params, groups, rng)


def test_basic_lstm_cell_gradients():
    rng = np.random.default_rng(33)
    names = ("input", "prev_activation", "weights", "bias", "prev_state")
    shapes = ((2, 3), (2, 4), (16, 7), (16,), (2, 4))
    params = {n: normal(rng, *s).astype(np.float64) for n, s in zip(names, shapes)}
    check_gradients(
        lambda p: _weighted_sum(basic_lstm_cell(*(p[n] for n in names))), params, {n: (n,) for n in names}, rng
    )


def _rnn_params(case: RNNCase, rng, units: int, n_aux: int = 0):
    w = _f64(rnn_weights(case.n_input, units, rng, n_aux))
    return w, {f.name: getattr(w, f.name) for f in dataclasses.fields(w) if getattr(w, f.name) is not None}


@pytest.mark.parametrize("case", [RNNCase(activation="TANH"), RNNCase(activation="TANH", time_major=True)], ids=str)
def test_unidirectional_sequence_rnn_and_rnn_gradients(case: RNNCase):
    rng = np.random.default_rng(34)
    weights, weight_params = _rnn_params(case, rng, case.n_units)
    params = {
        "input": normal(rng, *case.input_shape, scale=1.0).astype(np.float64),
        "h": normal(rng, case.batch, case.n_units).astype(np.float64),
        "weights": weight_params,
    }

    def sequence_loss(p):
        return _weighted_sum(
            unidirectional_sequence_rnn(p["input"], weights.replace(**p["weights"]), p["h"], options=case.options)
        )

    def step_loss(p):
        x = p["input"][0] if case.time_major else p["input"][:, 0]
        return _weighted_sum(rnn(x, weights.replace(**p["weights"]), p["h"], options=case.options))

    groups = {"input": ("input",), "hidden_state": ("h",), **{name: ("weights", name) for name in weight_params}}
    check_gradients(sequence_loss, params, groups, rng)
    check_gradients(step_loss, params, groups, rng)


@pytest.mark.parametrize(
    "case",
    [
        RNNCase(activation="TANH", aux="cross", n_aux=2, merge_outputs=True),
        RNNCase(activation="TANH", aux="bw_input", time_major=True),
    ],
    ids=str,
)
def test_bidirectional_sequence_rnn_gradients(case: RNNCase):
    rng = np.random.default_rng(35)
    n_aux = case.n_aux if case.aux == "cross" else 0
    fw, fw_params = _rnn_params(case, rng, case.n_units, n_aux)
    bw, bw_params = _rnn_params(case, rng, case.n_units + 1, n_aux)
    aux_shape = (*case.input_shape[:2], case.n_aux) if case.aux == "cross" else case.input_shape
    params = {
        "input": normal(rng, *case.input_shape, scale=1.0).astype(np.float64),
        "aux": normal(rng, *aux_shape, scale=1.0).astype(np.float64),
        "fw_h": normal(rng, case.batch, case.n_units).astype(np.float64),
        "bw_h": normal(rng, case.batch, case.n_units + 1).astype(np.float64),
        "fw": fw_params,
        "bw": bw_params,
    }

    def loss(p):
        return _weighted_sum(
            bidirectional_sequence_rnn(
                p["input"],
                fw.replace(**p["fw"]),
                bw.replace(**p["bw"]),
                p["fw_h"],
                p["bw_h"],
                p["aux"],
                options=case.options,
                merge_outputs=case.merge_outputs,
            )
        )

    groups = {name: (name,) for name in params}
    check_gradients(loss, params, groups, rng)
