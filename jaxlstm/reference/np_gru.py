"""Loop-based NumPy reference for the GRU of `jaxlstm.ops.gru` (no JAX): one batch row, one step at a time.

Written from Keras 3's GRUCell.call (keras/src/layers/rnn/gru.py, reset_after True and False)
and the GRU formulas of torch.nn.GRU and flax's GRUCell (the reset gate applied after the
recurrent matmul, as Keras' reset_after=True), not from jaxlstm's ops. Float64.

Weights are looked up by name (`jaxlstm.ops.GRUWeights`' names) on any object or dict:
``input_to_{update,reset,candidate}_weights`` [n_units, n_input], ``recurrent_to_*_weights``
[n_units, n_units], ``*_gate_bias`` [n_units] (input side) and ``recurrent_*_gate_bias``
[n_units] (recurrent side; a missing one is zero).
"""

from __future__ import annotations

import numpy as np

from jaxlstm.reference.np_common import ACTIVATIONS, tensor


def _dense(weights, name: str, bias_name: str, v: np.ndarray) -> np.ndarray:
    """W v + b for one row, in float64 (no bias when the tensor is absent)."""
    out = np.asarray(tensor(weights, name), np.float64) @ v
    bias = tensor(weights, bias_name)
    return out if bias is None else out + np.asarray(bias, np.float64)


def gru_step(x, h, weights, *, reset_after=True, activation="TANH", recurrent_activation="SIGMOID"):
    """One step for one row: x [n_input], h [n_units] -> h' [n_units].

    z = ra(W_z x + b_z + R_z h + rb_z), r likewise (update and reset gates);
    reset_after: n = act(W_n x + b_n + r * (R_n h + rb_n)) (Keras default, PyTorch, Flax);
    otherwise:   n = act(W_n x + b_n + R_n (r * h) + rb_n) (Keras reset_after=False);
    h' = z * h + (1 - z) * n.
    """
    x, h = np.asarray(x, np.float64), np.asarray(h, np.float64)
    act, gate_act = ACTIVATIONS[activation], ACTIVATIONS[recurrent_activation]

    def sides(name, v):
        """(W x + b, R v + rb) of one gate: its input side and its recurrent side."""
        input_side = _dense(weights, f"input_to_{name}_weights", f"{name}_gate_bias", x)
        return input_side, _dense(weights, f"recurrent_to_{name}_weights", f"recurrent_{name}_gate_bias", v)

    z = gate_act(sum(sides("update", h)))
    r = gate_act(sum(sides("reset", h)))
    if reset_after:
        x_n, h_n = sides("candidate", h)
        n = act(x_n + r * h_n)
    else:
        n = act(sum(sides("candidate", r * h)))
    return z * h + (1 - z) * n


def gru(x, weights, h0=None, *, time_major=False, reverse=False, keep_order=False, **options):
    """A GRU layer: x [B, T, n_input] (or [T, B, n_input] when time_major) -> (y, h_T [B, n_units]).

    options: reset_after, activation, recurrent_activation (see `gru_step`). `reverse` runs
    t = T-1 .. 0; its outputs stay in processing order (Keras go_backwards), or with
    `keep_order` each at its input's time index (PyTorch and Flax bidirectional). y is in
    x's layout.
    """
    x = np.asarray(x, np.float64)
    if time_major:
        x = np.swapaxes(x, 0, 1)
    batch, steps = x.shape[:2]
    units = np.shape(tensor(weights, "input_to_update_weights"))[0]
    h = np.zeros((batch, units)) if h0 is None else np.array(h0, np.float64)
    y = np.zeros((batch, steps, units))
    times = range(steps - 1, -1, -1) if reverse else range(steps)
    for b in range(batch):
        for k, t in enumerate(times):
            h[b] = gru_step(x[b, t], h[b], weights, **options)
            y[b, t if keep_order or not reverse else k] = h[b]
    return (np.swapaxes(y, 0, 1) if time_major else y), h
