"""Lingvo LSTMCellSimple / LayerNormalizedLSTMCellSimple variables -> fused ops.

Lingvo cannot be imported here (its x_ops.so needs GLIBC 2.38), so the
oracle is `lingvo_fprop` below: a NumPy transcription of the cell's eval-mode FProp,
written from tensorflow/lingvo lingvo/core/rnn_cell.py (LSTMCellSimple._GetBias, _Mix,
_Gates; LayerNormalizedLSTMCellSimple._Gates), not from jaxlstm's code.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from jaxlstm.convert import from_lingvo, lstm_weights_from_lingvo
from tests.cases import Case, flag, setting, size

from ._helpers import assert_converted_matches

BATCH, TIME, N_INPUT = 2, 6, 3


@dataclasses.dataclass(frozen=True)
class LingvoCase(Case):
    """The cell's Params of the same names (`kwargs`), e.g. ``o3_hidden5_cifg_ln``."""

    num_output_nodes: int = size("o", 4)
    num_hidden_nodes: int = setting(0, prefix="hidden")
    cell_value_cap: float | None = setting(10.0, prefix="cap")
    forget_gate_bias: float = setting(0.0, prefix="forgetbias")
    couple_input_forget_gates: bool = flag("cifg")
    layer_norm: bool = flag("ln")
    enable_lstm_bias: bool = flag("nobias", True)

    @property
    def kwargs(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def cell(self) -> int:
        return self.num_hidden_nodes or self.num_output_nodes

    @property
    def gates(self) -> int:
        return 3 if self.couple_input_forget_gates else 4


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lingvo_fprop(theta: dict, x: np.ndarray, case: LingvoCase) -> np.ndarray:
    """Outputs m [B, T, P] of the cell run over `x` [B, T, D] from zero state (float64)."""
    n, g = case.cell, case.gates
    b = theta["b"].astype(np.float64) if case.enable_lstm_bias else np.zeros(g * n)
    if case.forget_gate_bias:  # _GetBias: (i_i, i_g, f_g, o_g) or (i_i, f_g, o_g)
        adjustment = (
            [0.0, case.forget_gate_bias, 0.0]
            if case.couple_input_forget_gates
            else [0.0, 0.0, case.forget_gate_bias, 0.0]
        )
        b = b + np.repeat(adjustment, n)
    m = np.zeros((x.shape[0], case.num_output_nodes))
    c = np.zeros((x.shape[0], n))
    outputs = []
    for t in range(x.shape[1]):
        xmw = np.concatenate([x[:, t], m], axis=1) @ theta["wm"]  # _Mix
        if case.layer_norm:  # per gate block: LN(xmw) * ln_scale + b
            blocks = []
            for gate, scale, bias in zip(np.split(xmw, g, axis=1), np.split(theta["ln_scale"], g), np.split(b, g)):
                mean = gate.mean(axis=-1, keepdims=True)
                variance = np.square(gate - mean).mean(axis=-1, keepdims=True)
                blocks.append((gate - mean) / np.sqrt(variance + 1e-8) * scale + bias)
            gates = blocks
        else:
            gates = np.split(xmw + b, g, axis=1)
        if case.couple_input_forget_gates:
            i_i, f_g, o_g = gates
            tanh_i_i = np.tanh(i_i)
            c = _sigmoid(f_g) * c + (tanh_i_i - tanh_i_i * _sigmoid(f_g))
        else:
            i_i, i_g, f_g, o_g = gates
            c = _sigmoid(f_g) * c + _sigmoid(i_g) * np.tanh(i_i)
        if case.cell_value_cap is not None:
            c = np.clip(c, -case.cell_value_cap, case.cell_value_cap)
        m = _sigmoid(o_g) * np.tanh(c)
        if case.num_hidden_nodes:
            m = m @ theta["w_proj"]
        outputs.append(m)
    return np.stack(outputs, axis=1)


def _theta(case: LingvoCase, rng: np.random.Generator) -> dict:
    width = case.gates * case.cell
    theta = {"wm": rng.normal(scale=0.7, size=(N_INPUT + case.num_output_nodes, width))}
    if case.enable_lstm_bias:
        theta["b"] = rng.normal(scale=0.5, size=width)
    if case.num_hidden_nodes:
        theta["w_proj"] = rng.normal(scale=0.7, size=(case.cell, case.num_output_nodes))
    if case.layer_norm:
        theta["ln_scale"] = 1.0 + rng.normal(scale=0.2, size=width)
    return {k: v.astype(np.float32) for k, v in theta.items()}


CASES = [
    LingvoCase(),
    LingvoCase(num_output_nodes=3, num_hidden_nodes=5),
    LingvoCase(couple_input_forget_gates=True, forget_gate_bias=1.0),
    LingvoCase(layer_norm=True, forget_gate_bias=0.5),
    LingvoCase(layer_norm=True, couple_input_forget_gates=True, num_output_nodes=3, num_hidden_nodes=5),
    LingvoCase(enable_lstm_bias=False, forget_gate_bias=1.0, cell_value_cap=None),
    LingvoCase(cell_value_cap=0.2),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_lingvo_cell_matches_numpy_fprop(case):
    rng = np.random.default_rng(7)
    theta = _theta(case, rng)
    x = rng.normal(scale=2.0, size=(BATCH, TIME, N_INPUT)).astype(np.float32)
    expected = lingvo_fprop(theta, x, case)
    if case.cell_value_cap is not None and case.cell_value_cap < 1:  # the cap must actually bind
        assert not np.allclose(
            expected, lingvo_fprop(theta, x, dataclasses.replace(case, cell_value_cap=None)), atol=1e-3
        )
    model = from_lingvo(theta, num_input_nodes=N_INPUT, batch_size=BATCH, time_steps=TIME, **case.kwargs)
    assert_converted_matches(model, [x], [expected])


def test_lingvo_weights_layout():
    case = LingvoCase(layer_norm=True, couple_input_forget_gates=True, num_output_nodes=3, num_hidden_nodes=5)
    theta = {f"encoder/lstm/{k}/var:0": v for k, v in _theta(case, np.random.default_rng(0)).items()}
    weights, options = lstm_weights_from_lingvo(theta, num_input_nodes=N_INPUT, **case.kwargs)
    assert weights.use_cifg and weights.use_layer_norm and weights.use_projection
    assert weights.projection_bias is None
    assert (weights.n_input, weights.n_cell, weights.n_output) == (N_INPUT, 5, 3)
    assert options.cell_clip == 10.0 and options.fused_activation_function == "TANH"


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        pytest.param(dict(output_nonlinearity=False), NotImplementedError, "output_nonlinearity", id="no_output_tanh"),
        pytest.param(dict(zo_prob=0.1), NotImplementedError, "zoneout", id="zoneout"),
        pytest.param(dict(cell_value_cap=0.0), ValueError, "cell_value_cap", id="zero_cap"),
        pytest.param(dict(num_hidden_nodes=4), ValueError, "w_proj", id="missing_projection"),
        pytest.param(dict(layer_norm=True), ValueError, "ln_scale", id="missing_ln_scale"),
        pytest.param(dict(enable_lstm_bias=False), ValueError, "not used", id="unused_bias"),
    ],
)
def test_lingvo_invalid_or_unsupported_raises(kwargs, error, match):
    theta = _theta(LingvoCase(), np.random.default_rng(0))
    with pytest.raises(error, match=match):
        lstm_weights_from_lingvo(theta, num_input_nodes=N_INPUT, num_output_nodes=4, **kwargs)


def test_lingvo_pruning_mask_is_not_silently_ignored():
    theta = {**_theta(LingvoCase(), np.random.default_rng(0)), "mask": np.ones((7, 16), np.float32)}
    with pytest.raises(ValueError, match="wm \\* mask"):
        lstm_weights_from_lingvo(theta, num_input_nodes=N_INPUT, num_output_nodes=4)
