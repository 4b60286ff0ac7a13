"""Case lists, random weights and tolerances shared by the op tests (the case types: tests/cases.py)."""

from __future__ import annotations

import dataclasses
import itertools

import jax
import numpy as np

from jaxlstm.ops import GATES, LSTMState, LSTMWeights, RNNWeights, quantize_symmetric
from tests.cases import LSTMCase

# float32 op vs float64 reference: a few float32 ulps of O(1) activations over <= 7 steps
# (the upstream kernel tests use the same 1e-5 for float).
FLOAT_ATOL = 1e-5
# Hybrid op vs hybrid reference, both float32 with identical int8 products: only the order of
# float sums and the transcendental functions differ (ulps).
HYBRID_ATOL = 1e-5
# Hybrid vs float on random LSTM cases: the loosest upstream hybrid-vs-float tolerance
# (unidirectional_sequence_lstm_test.cc / lstm_test.cc, CifgPeephole: 0.03573).
LSTM_HYBRID_VS_FLOAT_ATOL = 0.03573
# jit vs eager: XLA may fuse and reorder float32 arithmetic.
JIT_EAGER_ATOL = 1e-6


def structural_lstm_cases(**fixed) -> list[LSTMCase]:
    """All 16 combinations of CIFG x peephole x projection x layer norm.

    Orthogonal options are spread over them so that each appears with every feature on and
    off: time-major on odd feature parity, cell clip when peephole == layer norm, projection
    bias without layer norm, proj clip with CIFG.
    """
    cases = []
    for cifg, peephole, projection, layer_norm in itertools.product((False, True), repeat=4):
        settings = dict(
            cifg=cifg,
            peephole=peephole,
            projection=projection,
            layer_norm=layer_norm,
            n_output=3 if projection else 4,
            projection_bias=projection and not layer_norm,
            proj_clip=0.1 if projection and cifg else 0.0,
            cell_clip=0.3 if peephole == layer_norm else 0.0,
            time_major=(cifg + peephole + projection + layer_norm) % 2 == 1,
        )
        cases.append(LSTMCase(**{**settings, **fixed}))
    return cases


def normal(rng: np.random.Generator, *shape: int, scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def lstm_weights(case: LSTMCase, rng: np.random.Generator, n_aux: int = 0) -> LSTMWeights:
    """Random float32 weights with the tensors `case` asks for (aux weights if n_aux > 0)."""
    fields = {}
    for gate in GATES[1:] if case.cifg else GATES:
        fields[f"input_to_{gate}_weights"] = normal(rng, case.n_cell, case.n_input)
        recurrent_shape = (case.n_cell,) if case.diagonal else (case.n_cell, case.n_output)
        fields[f"recurrent_to_{gate}_weights"] = normal(rng, *recurrent_shape)
        fields[f"{gate}_gate_bias"] = normal(rng, case.n_cell, scale=0.2)
        if case.peephole and gate != "cell":
            fields[f"cell_to_{gate}_weights"] = normal(rng, case.n_cell)
        if case.layer_norm:
            fields[f"{gate}_layer_norm_coefficients"] = rng.uniform(0.5, 1.5, case.n_cell).astype(np.float32)
        if n_aux:
            fields[f"aux_input_to_{gate}_weights"] = normal(rng, case.n_cell, n_aux)
    if case.projection:
        fields["projection_weights"] = normal(rng, case.n_output, case.n_cell)
    if case.projection_bias:
        fields["projection_bias"] = normal(rng, case.n_output, scale=0.1)
    return LSTMWeights(**fields)


def lstm_state(case: LSTMCase, rng: np.random.Generator) -> LSTMState:
    """A random non-zero initial state (the op's variable tensors)."""
    return LSTMState(normal(rng, case.batch, case.n_output), normal(rng, case.batch, case.n_cell))


def rnn_weights(n_input: int, n_units: int, rng: np.random.Generator, n_aux: int = 0) -> RNNWeights:
    return RNNWeights(
        input_weights=normal(rng, n_units, n_input),
        recurrent_weights=normal(rng, n_units, n_units),
        bias=normal(rng, n_units, scale=0.2),
        aux_input_weights=normal(rng, n_units, n_aux) if n_aux else None,
    )


def quantize_weights(weights):
    """Dynamic-range quantization as the converter does it: every weight matrix and peephole
    vector to per-tensor symmetric int8; biases, layer-norm coefficients and diagonal
    recurrent vectors stay float."""

    def stays_float(name, value):
        return (
            value is None
            or name.endswith(("bias", "coefficients"))
            or (name.startswith("recurrent_to") and np.ndim(value) == 1)
        )

    return weights.replace(
        **{
            field.name: quantize_symmetric(getattr(weights, field.name))
            for field in dataclasses.fields(weights)
            if not stays_float(field.name, getattr(weights, field.name))
        }
    )


def dot_generals(jaxpr) -> list:
    """Every dot_general equation of `jaxpr` and of its sub-jaxprs (loops, calls)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += dot_generals(sub)
    return found


def dot_operand_dtypes(jaxpr) -> set[tuple[str, ...]]:
    """The operand dtypes of every dot_general in `jaxpr` and in its sub-jaxprs."""
    return {tuple(str(v.aval.dtype) for v in eqn.invars) for eqn in dot_generals(jaxpr)}
