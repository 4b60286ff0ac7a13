"""Loop-based NumPy reference for TFLite's LSTM family (no JAX): one batch row, one step at a time.

Written from TFLite's kernels (lstm_eval.cc LstmStepFloat and LstmStepHybrid,
bidirectional_sequence_lstm.cc, reference/lstm_cell.h), not from jaxlstm's ops.

Precision: float weights run in float64, an oracle free of float32 rounding. Int8 weights
(objects with `values` and `scale`, such as `jaxlstm.ops.QuantizedTensor`) run the hybrid path
in float32 like the kernel, because the per-step re-quantization of x, h and m depends on the
float32 bits of those vectors.

Weights are looked up by TFLite tensor name (`input_to_forget_weights`, `cell_to_output_weights`,
...) on any object or dict (e.g. `jaxlstm.ops.LSTMWeights`); a missing name is an absent
optional tensor: no `input_to_input_weights` = CIFG, `cell_to_*` = peephole,
`projection_weights` = projection, `forget_layer_norm_coefficients` = layer norm.
"""

from __future__ import annotations

import numpy as np

from jaxlstm.reference.np_common import ACTIVATIONS, as_float, is_int8, matvec, shape_of, sigmoid, tensor

GATES = ("input", "forget", "cell", "output")
LAYER_NORM_EPSILON = 1e-8


def _dtype(weights):
    return np.float32 if is_int8(tensor(weights, "input_to_forget_weights")) else np.float64


def _n_output(weights) -> int:
    shape = shape_of(tensor(weights, "recurrent_to_output_weights"))
    return shape[0] if len(shape) == 1 else shape[1]  # rank 1: diagonal, n_output = n_cell


def _layer_norm(v: np.ndarray) -> np.ndarray:
    """MeanStddevNormalization: population variance, epsilon inside the square root."""
    n = v.shape[0]
    mean = v.sum() / n
    variance = np.square(v - mean).sum() / n
    return (v - mean) / np.sqrt(variance + v.dtype.type(LAYER_NORM_EPSILON))


def _gate(name, peephole_cell, weights, x, aux, h, asymmetric, dtype):
    """Pre-activation of one gate (CalculateLstmGateFloat / CalculateLstmGateHybrid).

    acc = bias (0 with layer norm) + W_x·x + W_aux·aux + W_h·h (or w_h * h when diagonal)
    + p * c (peephole); with layer norm, acc = LN(acc) * gamma + bias.
    """
    bias = np.asarray(tensor(weights, f"{name}_gate_bias"), dtype)
    layer_norm = tensor(weights, f"{name}_layer_norm_coefficients")
    acc = np.zeros_like(bias) if layer_norm is not None else bias.copy()
    acc = acc + matvec(tensor(weights, f"input_to_{name}_weights"), x, asymmetric, dtype)
    aux_weights = tensor(weights, f"aux_input_to_{name}_weights")
    if aux is not None and aux_weights is not None:
        acc = acc + matvec(aux_weights, aux, asymmetric, dtype)
    recurrent = tensor(weights, f"recurrent_to_{name}_weights")
    if len(shape_of(recurrent)) == 1:  # diagonal ("IndyLSTM"): read as float even in hybrid
        acc = acc + as_float(recurrent, dtype) * h
    else:
        acc = acc + matvec(recurrent, h, asymmetric, dtype)
    peephole = tensor(weights, f"cell_to_{name}_weights")
    if peephole is not None:  # the cell gate has no peephole tensor
        acc = acc + as_float(peephole, dtype) * peephole_cell
    if layer_norm is not None:
        acc = _layer_norm(acc) * np.asarray(layer_norm, dtype) + bias
    return acc


def lstm_step(
    x,
    aux,
    h,
    c,
    weights,
    *,
    activation="TANH",
    cell_clip=0.0,
    proj_clip=0.0,
    asymmetric_quantize_inputs=False,
):
    """One step for one batch row: x [n_input], aux [n_aux] or None, h [n_output], c [n_cell].

    Returns (h_new [n_output], c_new [n_cell]). Order as in LstmStepFloat: input and forget
    gates (peephole on the old c), cell candidate, cell update and clip, output gate (peephole
    on the new, clipped c), m = o * act(c), projection and its clip.
    """
    dtype = _dtype(weights)
    x, h, c = (np.asarray(v, dtype) for v in (x, h, c))
    aux = None if aux is None else np.asarray(aux, dtype)
    act = ACTIVATIONS[activation]

    def gate(name, peephole_cell=None):
        return _gate(name, peephole_cell, weights, x, aux, h, asymmetric_quantize_inputs, dtype)

    forget = sigmoid(gate("forget", c))
    candidate = act(gate("cell"))
    c_new = forget * c
    if tensor(weights, "input_to_input_weights") is None:  # CIFG: input gate = 1 - f
        c_new = c_new + candidate * (1 - forget)
    else:
        c_new = c_new + candidate * sigmoid(gate("input", c))
    if cell_clip > 0:
        c_new = np.clip(c_new, dtype(-cell_clip), dtype(cell_clip))
    output = sigmoid(gate("output", c_new))
    m = output * act(c_new)

    projection = tensor(weights, "projection_weights")
    if projection is None:
        return m, c_new
    bias = tensor(weights, "projection_bias")
    h_new = np.zeros(shape_of(projection)[0], dtype) if bias is None else np.asarray(bias, dtype)
    h_new = h_new + matvec(projection, m, asymmetric_quantize_inputs, dtype)  # m re-quantized
    if proj_clip > 0:
        h_new = np.clip(h_new, dtype(-proj_clip), dtype(proj_clip))
    return h_new, c_new


def _initial_state(weights, batch, h0, c0, dtype):
    n_cell = shape_of(tensor(weights, "input_to_output_weights"))[0]
    h = np.zeros((batch, _n_output(weights)), dtype) if h0 is None else np.array(h0, dtype)
    c = np.zeros((batch, n_cell), dtype) if c0 is None else np.array(c0, dtype)
    return h, c


def _direction(x, aux, weights, h0, c0, time_major, reverse, options):
    """The kernel's loops over one direction (lstm_eval.cc EvalFloat / EvalHybrid).

    Time-major: for each t, every batch row. Batch-major: for each row, its whole sequence.
    reverse (the backward direction): t runs T-1 .. 0 and each output stays at its own t.
    Returns (y in the layout of x with n_output features, h [B, n_output], c [B, n_cell]).
    """
    dtype = _dtype(weights)
    x = np.asarray(x, dtype)
    batch, steps = (x.shape[1], x.shape[0]) if time_major else (x.shape[0], x.shape[1])
    h, c = _initial_state(weights, batch, h0, c0, dtype)
    y = np.zeros(x.shape[:2] + (h.shape[1],), dtype)
    times = range(steps - 1, -1, -1) if reverse else range(steps)
    if time_major:
        for t in times:
            for b in range(batch):
                a = None if aux is None else aux[t, b]
                h[b], c[b] = lstm_step(x[t, b], a, h[b], c[b], weights, **options)
                y[t, b] = h[b]
    else:
        for b in range(batch):
            for t in times:
                a = None if aux is None else aux[b, t]
                h[b], c[b] = lstm_step(x[b, t], a, h[b], c[b], weights, **options)
                y[b, t] = h[b]
    return y, h, c


def unidirectional_sequence_lstm(x, weights, h0=None, c0=None, *, time_major=False, **options):
    """UNIDIRECTIONAL_SEQUENCE_LSTM: x [B, T, n_input] (or [T, B, n_input] when time_major).

    options: activation, cell_clip, proj_clip, asymmetric_quantize_inputs (see `lstm_step`).
    Returns (y [B, T, n_output] (or time-major), h_T [B, n_output], c_T [B, n_cell]).
    """
    return _direction(x, None, weights, h0, c0, time_major, False, options)


def lstm(x, weights, h0=None, c0=None, **options):
    """LSTM op, FULL kernel: one step, x [B, n_input] -> (y [B, n_output], h, c)."""
    y, h, c = _direction(np.asarray(x)[None], None, weights, h0, c0, True, False, options)
    return y[0], h, c


def bidirectional_sequence_lstm(
    x,
    fw_weights,
    bw_weights,
    fw_state=(None, None),
    bw_state=(None, None),
    aux_input=None,
    *,
    time_major=True,
    merge_outputs=False,
    **options,
):
    """BIDIRECTIONAL_SEQUENCE_LSTM: both directions share `options`.

    Aux modes (bidirectional_sequence_lstm.cc): no aux_input: both read x; aux_input and aux
    weights (cross-linking): both read x plus aux_input through their own aux weights;
    aux_input without aux weights: fw reads x, bw reads aux_input as its input.
    Returns ((fw_y, bw_y) or (merged [.., n_fw_output + n_bw_output],), (fw_h, fw_c), (bw_h, bw_c)).
    """
    cross_linking = aux_input is not None and tensor(fw_weights, "aux_input_to_forget_weights") is not None
    aux = np.asarray(aux_input) if cross_linking else None
    bw_x = aux_input if (aux_input is not None and not cross_linking) else x
    fw_y, fw_h, fw_c = _direction(x, aux, fw_weights, *fw_state, time_major, False, options)
    bw_y, bw_h, bw_c = _direction(bw_x, aux, bw_weights, *bw_state, time_major, True, options)
    outputs = (np.concatenate([fw_y, bw_y], axis=-1),) if merge_outputs else (fw_y, bw_y)
    return outputs, (fw_h, fw_c), (bw_h, bw_c)


def basic_lstm_cell(x, prev_activation, weights, bias, prev_state):
    """LSTM op, BASIC kernel (reference/lstm_cell.h LstmCell), float64, row by row.

    weights [4D, I + D] act on concat(x, prev_activation); blocks are input gate, candidate,
    forget gate, output gate. Returns (activation [B, D], state [B, D]).
    """
    x, h, c = (np.asarray(v, np.float64) for v in (x, prev_activation, prev_state))
    weights, bias = np.asarray(weights, np.float64), np.asarray(bias, np.float64)
    h_new, c_new = np.zeros_like(h), np.zeros_like(c)
    for b in range(x.shape[0]):
        z = weights @ np.concatenate([x[b], h[b]]) + bias
        input_gate, candidate, forget_gate, output_gate = np.split(z, 4)
        c_new[b] = sigmoid(input_gate) * np.tanh(candidate) + sigmoid(forget_gate) * c[b]
        h_new[b] = sigmoid(output_gate) * np.tanh(c_new[b])
    return h_new, c_new
