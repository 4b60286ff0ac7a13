"""TF1 ``tf.compat.v1.nn.rnn_cell.LSTMCell`` / ``BasicLSTMCell`` variables -> fused-op weights.

Layout (tf_keras/src/layers/rnn/legacy_cells.py, once tensorflow/python/ops/rnn_cell_impl.py):
``kernel`` [n_input + P, 4H], rows input first then the recurrent m (P = num_proj, else H),
used as ``[x, m] @ kernel``; ``bias`` [4H]; column blocks i, j, f, o (j = candidate). ``forget_bias`` is added to f at run time, not stored:
it is folded into forget_gate_bias here. LSTMCell extras: peepholes ``w_i_diag``,
``w_f_diag``, ``w_o_diag`` [H] (i and f see c_{t-1}, o sees the new clipped c, as TFLite)
and ``projection/kernel`` [H, P] (no bias). State tuple order (c, m); output m.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm.convert import _gates, _graph
from jaxlstm.model import Model
from jaxlstm.ops.lstm import LSTMOptions, LSTMWeights

# Variable name suffix -> role. "projection/kernel" is matched before "kernel".
_ROLES = (
    ("projection/kernel", "projection"),
    ("kernel", "kernel"),
    ("bias", "bias"),
    ("w_i_diag", "cell_to_input_weights"),
    ("w_f_diag", "cell_to_forget_weights"),
    ("w_o_diag", "cell_to_output_weights"),
)


def lstm_weights_from_tf_v1_cell(
    variables: dict[str, Any],
    *,
    num_units: int,
    use_peepholes: bool = False,
    num_proj: int | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    forget_bias: float = 1.0,
    basic: bool = False,
) -> tuple[LSTMWeights, LSTMOptions]:
    """`LSTMWeights` and `LSTMOptions` of a TF1 ``LSTMCell`` (or ``BasicLSTMCell``).

    Args:
      variables: {name: array}; names may carry scopes and ``:0`` (``rnn/lstm_cell/kernel:0``)
        and are matched by suffix: kernel, bias, w_i_diag, w_f_diag, w_o_diag,
        projection/kernel.
      num_units, use_peepholes, num_proj, cell_clip, proj_clip, forget_bias: the cell's
        constructor arguments (activation tanh).
      basic: a ``BasicLSTMCell`` (no peephole, projection or clipping).

    Returns:
      (weights, options) with forget_bias folded into forget_gate_bias and the clips as
      cell_clip / proj_clip.

    Raises:
      ValueError: missing, unknown or mis-shaped variables; a clip of 0 (TF clamps the
        value to 0, while 0 means "no clipping" in TFLite) or below.
    """
    if basic and (use_peepholes or num_proj or cell_clip is not None or proj_clip is not None):
        raise ValueError("BasicLSTMCell has no peepholes, projection or clipping; pass basic=False")
    found = _by_role(variables)
    n_output = num_proj or num_units
    kernel = _require(found, "kernel", None)
    n_input = kernel.shape[0] - n_output
    if kernel.ndim != 2 or n_input < 1 or kernel.shape[1] != 4 * num_units:
        raise ValueError(
            f"variable 'kernel' has shape {kernel.shape}, expected (n_input + "
            f"{n_output}, {4 * num_units}) from num_units={num_units}, num_proj={num_proj}"
        )
    bias = _require(found, "bias", (4 * num_units,)).copy()
    bias[2 * num_units : 3 * num_units] += np.float32(forget_bias)  # f is the third block of i, j, f, o
    optional = {}
    if use_peepholes:
        for role in ("cell_to_input_weights", "cell_to_forget_weights", "cell_to_output_weights"):
            optional[role] = _require(found, role, (num_units,))
    if num_proj:
        optional["projection_weights"] = _require(found, "projection", (num_units, num_proj)).T
    unused = set(found) - {"kernel", "bias", "projection", *optional}
    if unused:
        raise ValueError(
            f"variables {sorted(unused)} are not used by this cell configuration "
            f"(use_peepholes={use_peepholes}, num_proj={num_proj}); check the arguments"
        )
    weights = _gates.lstm_weights_from_fused(kernel[:n_input], kernel[n_input:], bias, "icfo").replace(**optional)
    options = LSTMOptions("TANH", cell_clip=_clip("cell_clip", cell_clip), proj_clip=_clip("proj_clip", proj_clip))
    return weights, options


def from_tf_v1_lstm_cell(
    variables: dict[str, Any],
    *,
    num_units: int,
    use_peepholes: bool = False,
    num_proj: int | None = None,
    cell_clip: float | None = None,
    proj_clip: float | None = None,
    forget_bias: float = 1.0,
    basic: bool = False,
    batch_size: int | None = None,
    time_steps: int | None = None,
) -> Model:
    """A `Model` running the TF1 cell over a sequence (``tf.compat.v1.nn.dynamic_rnn``).

    One UNIDIRECTIONAL_SEQUENCE_LSTM from ``input`` [B, T, n_input] to ``output``
    [B, T, num_proj or num_units], starting from zero state. Arguments as
    `lstm_weights_from_tf_v1_cell`, plus `batch_size` and `time_steps`: None (default)
    keeps that dimension dynamic, an int fixes it.
    """
    weights, options = lstm_weights_from_tf_v1_cell(
        variables,
        num_units=num_units,
        use_peepholes=use_peepholes,
        num_proj=num_proj,
        cell_clip=cell_clip,
        proj_clip=proj_clip,
        forget_bias=forget_bias,
        basic=basic,
    )
    return _graph.single_layer_model(weights, options, batch_size=batch_size, time_steps=time_steps, name="lstm_cell")


def _by_role(variables: dict[str, Any]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        stem = name.split(":")[0]
        role = next((r for suffix, r in _ROLES if stem == suffix or stem.endswith("/" + suffix)), None)
        if role is None:
            raise ValueError(
                f"variable {name!r} is not an LSTMCell variable; expected names ending in {[s for s, _ in _ROLES]}"
            )
        if role in found:
            raise ValueError(f"two variables map to {role!r} (second: {name!r}); pass one cell's variables")
        found[role] = _gates.as_float32(value)
    return found


def _require(found: dict[str, np.ndarray], role: str, shape: tuple[int, ...] | None) -> np.ndarray:
    if role not in found:
        raise ValueError(f"missing the cell's {role!r} variable (have {sorted(found)})")
    value = found[role]
    if shape is not None and value.shape != shape:
        raise ValueError(f"variable {role!r} has shape {value.shape}, expected {shape} from num_units / num_proj")
    return value


def _clip(name: str, value: float | None) -> float:
    if value is None:
        return 0.0
    if not value > 0:
        raise ValueError(
            f"{name}={value}: TF clamps to [-{name}, {name}], which for 0 zeroes the "
            "value, but 0 means 'no clipping' in TFLite; use None for no clipping"
        )
    return float(value)
