"""Extreme inputs match LiteRT as closely as normal ones: 1e4 magnitudes, saturated gates,
cell states far beyond the clip values, zero-variance layer norm, RELU RNNs that overflow."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxlstm import export_tflite, load_tflite
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import LSTMOptions, LSTMWeights, RNNOptions, RNNWeights
from jaxlstm.parity.litert import run_litert

# float32 kernels: LiteRT's GEMMs sum in another order and Eigen's tanh/sigmoid differ from
# XLA's in the last bits; relative, since RNN outputs here reach 1e8 (LiteRT's own tests use 1e-5).
RTOL = ATOL = 1e-5
N_INPUT, N_CELL, BATCH, TIME = 3, 4, 2, 12


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    scale: float  # input magnitude
    options: LSTMOptions = LSTMOptions()
    features: tuple[str, ...] = ()  # "peephole", "projection", "layer_norm", "cifg"
    quantize: bool = False

    def __str__(self) -> str:
        return self.name


def _weights(features: tuple[str, ...], rng: np.random.Generator) -> LSTMWeights:
    def mat(*shape):
        return rng.normal(size=shape).astype(np.float32)

    n_output = 2 if "projection" in features else N_CELL
    w = lstm_weights_from_fused(mat(N_INPUT, 4 * N_CELL), mat(n_output, 4 * N_CELL), mat(4 * N_CELL))
    gates = ("forget", "cell", "output") if "cifg" in features else ("input", "forget", "cell", "output")
    if "cifg" in features:
        w = w.replace(input_to_input_weights=None, recurrent_to_input_weights=None, input_gate_bias=None)
    if "peephole" in features:
        w = w.replace(**{f"cell_to_{g}_weights": mat(N_CELL) for g in gates if g != "cell"})
    if "projection" in features:
        w = w.replace(projection_weights=mat(n_output, N_CELL), projection_bias=mat(n_output))
    if "layer_norm" in features:
        w = w.replace(**{f"{g}_layer_norm_coefficients": mat(N_CELL) for g in gates})
    return w


CASES = [
    Case("normal", 1.0),
    Case("inputs_1e4", 1e4),
    Case("inputs_1e4_cell_clip", 1e4, LSTMOptions(cell_clip=0.5)),
    # Saturated input and forget gates add ~1 per step: the cell ends ~12, 100x the clip.
    Case(
        "cell_far_beyond_clip_peephole_projection",
        1e3,
        LSTMOptions(cell_clip=0.1, proj_clip=0.05),
        ("peephole", "projection"),
    ),
    Case("inputs_1e4_layer_norm", 1e4, LSTMOptions(cell_clip=3.0), ("layer_norm", "peephole")),
    Case(
        "inputs_1e4_cifg_layer_norm_projection", 1e4, LSTMOptions(proj_clip=1.0), ("cifg", "layer_norm", "projection")
    ),
    Case("inputs_1e4_hybrid", 1e4, LSTMOptions(cell_clip=0.5), ("peephole",), quantize=True),
    Case(
        "inputs_1e4_hybrid_asymmetric",
        1e4,
        LSTMOptions(cell_clip=0.5, asymmetric_quantize_inputs=True),
        ("projection",),
        quantize=True,
    ),
]


def _compare(model, x: np.ndarray, quantize: bool) -> None:
    # Streaming, two invokes: the second starts from the (extreme) state the first left.
    data = export_tflite(model, quantize="dynamic" if quantize else None, quantize_min_elements=0, stateful=True)
    lite = run_litert(data, [x], invocations=2, reset=False, state_batch=x.shape[0], xnnpack=False)
    model = load_tflite(data)  # with the int8 weights when quantized
    state = model.init_state(x.shape[0])
    for run in lite:
        outputs, state = model.apply(model.params, state, x)
        np.testing.assert_allclose(np.asarray(outputs[0]), run[0], rtol=RTOL, atol=ATOL, equal_nan=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_lstm_matches_litert(case):
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, N_INPUT))
    model = b.build([b.add_lstm(x, _weights(case.features, rng), case.options)], ["output"])
    inputs = rng.normal(size=(BATCH, TIME, N_INPUT)).astype(np.float32) * case.scale
    _compare(model, inputs, case.quantize)


def test_layer_norm_of_a_constant_row_matches_litert():
    """All gate pre-activations equal: zero variance, where the epsilon alone decides."""
    w = _weights(("layer_norm",), np.random.default_rng(1))
    w = w.replace(**{k: np.zeros_like(v) for k, v in vars(w).items() if k.startswith(("input_to", "recurrent_to"))})
    b = ModelBuilder()
    model = b.build([b.add_lstm(b.add_input("input", (-1, -1, N_INPUT)), w, LSTMOptions())], ["output"])
    _compare(model, np.full((BATCH, 3, N_INPUT), 1e4, np.float32), quantize=False)


@pytest.mark.parametrize("activation", ["RELU", "TANH", "RELU6"])
@pytest.mark.parametrize("quantize", [False, True], ids=["float", "hybrid"])
def test_rnn_1e4_inputs_match_litert(activation, quantize):
    """RELU RNN outputs grow to ~1e8 within a few steps; compared relatively."""
    rng = np.random.default_rng(2)
    w = RNNWeights(*(rng.normal(size=s).astype(np.float32) for s in ((N_CELL, N_INPUT), (N_CELL, N_CELL), (N_CELL,))))
    b = ModelBuilder()
    model = b.build([b.add_rnn(b.add_input("input", (-1, -1, N_INPUT)), w, RNNOptions(activation))], ["output"])
    x = rng.normal(size=(BATCH, 4, N_INPUT)).astype(np.float32) * 1e4
    _compare(model, x, quantize)
