"""Lingvo ``LSTMCellSimple`` / ``LayerNormalizedLSTMCellSimple`` variables -> fused-op weights.

Layout (lingvo/core/rnn_cell.py): ``wm`` [D + P, G*H] used as
``[x, m] @ wm`` (rows: inputs, then the previous output m), ``b`` [G*H], ``w_proj`` [H, P]
(when num_hidden_nodes > 0: H = num_hidden_nodes, else H = P = num_output_nodes) and,
for the layer-normalized cell, ``ln_scale`` [G*H] (used as is, not 1 + scale). Packed
blocks are c, i, f, o (G = 4), or c, f, o (G = 3) with coupled input/forget gates, which
is TFLite's CIFG. ``forget_gate_bias`` is added to the f bias (as ``_GetBias`` does), the
layer norm normalises each gate's ``[x, m] @ wm`` block (epsilon 1e-8), scales it and
then adds the bias, exactly as TFLite's layer-norm LSTM. ``cell_value_cap`` becomes
cell_clip (TensorFlow's converter writes 10 whatever the cap; we keep the cell's value).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm.convert import _gates, _graph
from jaxlstm.model import Model
from jaxlstm.ops.lstm import LSTMOptions, LSTMWeights


def lstm_weights_from_lingvo(
    params: dict[str, Any],
    *,
    num_input_nodes: int,
    num_output_nodes: int,
    num_hidden_nodes: int = 0,
    cell_value_cap: float | None = 10.0,
    forget_gate_bias: float = 0.0,
    couple_input_forget_gates: bool = False,
    layer_norm: bool = False,
    enable_lstm_bias: bool = True,
    output_nonlinearity: bool = True,
    zo_prob: float = 0.0,
) -> tuple[LSTMWeights, LSTMOptions]:
    """`LSTMWeights` and `LSTMOptions` of a Lingvo ``LSTMCellSimple`` in eval mode.

    Args:
      params: the cell's variables by name: ``wm``, ``b`` (if enable_lstm_bias),
        ``w_proj`` (if num_hidden_nodes), ``ln_scale`` (if layer_norm); scoped names such
        as ``lstm/wm/var`` are matched by their last known component.
      num_input_nodes, num_output_nodes, num_hidden_nodes, cell_value_cap,
        forget_gate_bias, couple_input_forget_gates, enable_lstm_bias,
        output_nonlinearity, zo_prob: the cell's Params of the same names.
      layer_norm: the cell is a ``LayerNormalizedLSTMCellSimple``.

    Returns:
      (weights, options): CIFG when coupled, projection when num_hidden_nodes > 0 (no
      projection bias), layer norm when `layer_norm`; cell_clip = cell_value_cap (0 for None).

    Raises:
      NotImplementedError: output_nonlinearity=False (h = o * c) or zo_prob > 0 (eval
        zoneout mixes old and new state), neither expressible by the fused op.
      ValueError: missing or mis-shaped variables; cell_value_cap <= 0.
    """
    if not output_nonlinearity:
        raise NotImplementedError(
            "Lingvo output_nonlinearity=False (m = o * c) has no fused-op equivalent: TFLite "
            "applies tanh to the cell. Workaround: retrain with output_nonlinearity=True."
        )
    if zo_prob > 0:
        raise NotImplementedError(
            f"Lingvo zo_prob={zo_prob}: eval-mode zoneout mixes zo_prob * old + (1 - zo_prob) * new "
            "state, which the fused op cannot. Workaround: retrain with zo_prob=0."
        )
    n_cell = num_hidden_nodes or num_output_nodes
    order = "cfo" if couple_input_forget_gates else "cifo"
    width = len(order) * n_cell
    found = _by_role(params)
    wm = _require(found, "wm", (num_input_nodes + num_output_nodes, width))
    bias = _require(found, "b", (width,)).copy() if enable_lstm_bias else np.zeros(width, np.float32)
    f = order.index("f")
    bias[f * n_cell : (f + 1) * n_cell] += np.float32(forget_gate_bias)
    optional = {}
    if num_hidden_nodes:
        optional["projection_weights"] = _require(found, "w_proj", (n_cell, num_output_nodes)).T
    if layer_norm:
        scales = _gates.split_gates(_require(found, "ln_scale", (width,)), order)
        optional.update({f"{g}_layer_norm_coefficients": s for g, s in scales.items()})
    used = {
        name
        for name, on in (("wm", True), ("b", enable_lstm_bias), ("w_proj", num_hidden_nodes), ("ln_scale", layer_norm))
        if on
    }
    if set(found) - used:
        raise ValueError(
            f"variables {sorted(set(found) - used)} are not used with enable_lstm_bias="
            f"{enable_lstm_bias}, num_hidden_nodes={num_hidden_nodes}, layer_norm="
            f"{layer_norm}; check the arguments"
        )
    weights = _gates.lstm_weights_from_fused(wm[:num_input_nodes], wm[num_input_nodes:], bias, order)
    weights = weights.replace(**optional)
    if cell_value_cap is not None and not cell_value_cap > 0:
        raise ValueError(
            f"cell_value_cap={cell_value_cap}: Lingvo clamps the cell to "
            f"[-{cell_value_cap}, {cell_value_cap}], but 0 means 'no clipping' in "
            "TFLite; use None for no clipping"
        )
    return weights, LSTMOptions("TANH", cell_clip=float(cell_value_cap or 0.0))


def from_lingvo(
    params: dict[str, Any],
    *,
    num_input_nodes: int,
    num_output_nodes: int,
    num_hidden_nodes: int = 0,
    cell_value_cap: float | None = 10.0,
    forget_gate_bias: float = 0.0,
    couple_input_forget_gates: bool = False,
    layer_norm: bool = False,
    enable_lstm_bias: bool = True,
    output_nonlinearity: bool = True,
    zo_prob: float = 0.0,
    batch_size: int | None = None,
    time_steps: int | None = None,
) -> Model:
    """A `Model` running the Lingvo cell over a sequence (its FProp at every step, no padding).

    One UNIDIRECTIONAL_SEQUENCE_LSTM from ``input`` [B, T, num_input_nodes] to ``output``
    [B, T, num_output_nodes], from zero state. Arguments as `lstm_weights_from_lingvo`,
    plus `batch_size` and `time_steps`: None (default) keeps that dimension dynamic, an int
    fixes it.
    """
    weights, options = lstm_weights_from_lingvo(
        params,
        num_input_nodes=num_input_nodes,
        num_output_nodes=num_output_nodes,
        num_hidden_nodes=num_hidden_nodes,
        cell_value_cap=cell_value_cap,
        forget_gate_bias=forget_gate_bias,
        couple_input_forget_gates=couple_input_forget_gates,
        layer_norm=layer_norm,
        enable_lstm_bias=enable_lstm_bias,
        output_nonlinearity=output_nonlinearity,
        zo_prob=zo_prob,
    )
    return _graph.single_layer_model(weights, options, batch_size=batch_size, time_steps=time_steps, name="lstm")


_NAMES = ("wm", "b", "w_proj", "ln_scale")


def _by_role(params: dict[str, Any]) -> dict[str, np.ndarray]:
    """{wm | b | w_proj | ln_scale: array} from possibly scoped names (``fwd/lstm/wm/var:0``)."""
    found: dict[str, np.ndarray] = {}
    for name, value in params.items():
        parts = name.split(":")[0].split("/")
        role = next((p for p in reversed(parts) if p in _NAMES), None)
        if role is None:
            raise ValueError(
                f"variable {name!r} is not a Lingvo LSTM variable; expected one of "
                f"{_NAMES} (with pruning, pass wm * mask as wm)"
            )
        if role in found:
            raise ValueError(f"two variables map to {role!r} (second: {name!r}); pass one cell's variables")
        found[role] = _gates.as_float32(value)
    return found


def _require(found: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in found:
        raise ValueError(
            f"missing Lingvo variable {name!r} (have {sorted(found)}); check "
            "enable_lstm_bias / num_hidden_nodes / layer_norm"
        )
    if found[name].shape != shape:
        raise ValueError(
            f"Lingvo variable {name!r} has shape {found[name].shape}, expected {shape} "
            "from num_input_nodes / num_output_nodes / num_hidden_nodes / gates"
        )
    return found[name]
