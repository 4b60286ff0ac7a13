"""Loop-based NumPy reference for TFLite's basic RNN family (no JAX): one row, one step at a time.

Written from TFLite's kernels (kernel_utils.cc RnnBatchStep, unidirectional_sequence_rnn.cc,
bidirectional_sequence_rnn.cc), not from jaxlstm's ops.
Float weights run in float64; int8 weights (`values` + `scale`) run the hybrid path in float32,
as in `np_lstm`. Weights are looked up by name: `input_weights`, `recurrent_weights`, `bias`,
`aux_input_weights`.
"""

from __future__ import annotations

import numpy as np

from jaxlstm.reference.np_common import ACTIVATIONS, is_int8, matvec, shape_of, tensor


def _dtype(weights):
    return np.float32 if is_int8(tensor(weights, "input_weights")) else np.float64


def rnn_step(x, aux, h, weights, *, activation="TANH", asymmetric_quantize_inputs=False):
    """h' = act(bias + W·x + W_aux·aux + R·h) for one batch row, accumulated in that order."""
    dtype = _dtype(weights)
    acc = np.array(tensor(weights, "bias"), dtype)
    acc = acc + matvec(tensor(weights, "input_weights"), x, asymmetric_quantize_inputs, dtype)
    if aux is not None:
        acc = acc + matvec(tensor(weights, "aux_input_weights"), aux, asymmetric_quantize_inputs, dtype)
    acc = acc + matvec(tensor(weights, "recurrent_weights"), h, asymmetric_quantize_inputs, dtype)
    return ACTIVATIONS[activation](acc)


def _direction(x, aux_row, weights, h0, time_major, reverse, options):
    """The kernel's loops over one direction: time-major steps all rows at each t; batch-major
    runs each row's whole sequence. `aux_row(t, b)` gives the aux vector read at (t, b) or None.
    reverse: t runs T-1 .. 0, outputs stay at their own t. Returns (y, h [B, n_units])."""
    dtype = _dtype(weights)
    x = np.asarray(x, dtype)
    batch, steps = (x.shape[1], x.shape[0]) if time_major else (x.shape[0], x.shape[1])
    units = shape_of(tensor(weights, "input_weights"))[0]
    h = np.zeros((batch, units), dtype) if h0 is None else np.array(h0, dtype)
    y = np.zeros(x.shape[:2] + (units,), dtype)
    times = range(steps - 1, -1, -1) if reverse else range(steps)
    if time_major:
        for t in times:
            for b in range(batch):
                h[b] = rnn_step(x[t, b], aux_row(t, b), h[b], weights, **options)
                y[t, b] = h[b]
    else:
        for b in range(batch):
            for t in times:
                h[b] = rnn_step(x[b, t], aux_row(t, b), h[b], weights, **options)
                y[b, t] = h[b]
    return y, h


def _no_aux(t, b):
    return None


def rnn(x, weights, h0=None, **options):
    """RNN: one step, x [B, n_input] -> (y [B, n_units], h [B, n_units]); y and h are equal."""
    y, h = _direction(np.asarray(x)[None], _no_aux, weights, h0, True, False, options)
    return y[0], h


def unidirectional_sequence_rnn(x, weights, h0=None, *, time_major=False, **options):
    """UNIDIRECTIONAL_SEQUENCE_RNN: x [B, T, I] (or [T, B, I]) -> (y [B, T, U] (or [T, B, U]), h_T).

    options: activation, asymmetric_quantize_inputs.
    """
    return _direction(x, _no_aux, weights, h0, time_major, False, options)


def bidirectional_sequence_rnn(
    x,
    fw_weights,
    bw_weights,
    fw_h0=None,
    bw_h0=None,
    aux_input=None,
    *,
    time_major=False,
    merge_outputs=False,
    **options,
):
    """BIDIRECTIONAL_SEQUENCE_RNN with the kernel's three quirks (bidirectional_sequence_rnn.cc).

    Aux modes as in BIDIRECTIONAL_SEQUENCE_LSTM: cross-linking when `aux_input_weights` are
    given, otherwise (with aux_input) bw reads aux_input as its input ("non-stacking").
    Returns ((fw_y, bw_y) or (merged,), (fw_h, bw_h)).
    """
    x = np.asarray(x)
    hybrid = is_int8(tensor(fw_weights, "input_weights"))
    cross_linking = tensor(fw_weights, "aux_input_weights") is not None
    batch, steps, n_input = (x.shape[1], x.shape[0], x.shape[2]) if time_major else x.shape

    # Quirk (b), EvalFloat and EvalHybrid, batch-major branch: the backward steps read
    # `input`, not `bw_input`, so the non-stacking mode only takes effect time-major.
    bw_x = aux_input if (aux_input is not None and not cross_linking and time_major) else x

    # Quirk (a): the aux pointer advances with the *input* size as stride: time-major
    # `aux + s * input_size * batch_size` (then rows `b * aux_input_size`), in both EvalFloat
    # and EvalHybrid; batch-major only in EvalHybrid: `aux + b * input_size * max_time +
    # s * input_size`. Right only when n_aux == n_input. Reads past the end of aux_input are
    # undefined in the kernel; here (as in jaxlstm) they read zeros.
    def aux_row(t, b):
        if not cross_linking:
            return None
        n_aux = aux_input.shape[-1]
        if time_major:
            start = t * n_input * batch + b * n_aux
        elif hybrid:
            start = b * n_input * steps + t * n_input
        else:
            start = b * n_aux * steps + t * n_aux
        values = np.asarray(aux_input).reshape(-1)[start : start + n_aux]
        return np.concatenate([values, np.zeros(n_aux - values.size, values.dtype)])

    # Quirk (c), EvalHybrid, time-major branch: both passes sit inside an extra
    # `for (int t = 0; t < max_time; t++)` loop, so each direction runs its whole sequence
    # max_time times, carrying the hidden state; what remains is the last repetition.
    repeats = steps if (hybrid and time_major) else 1
    fw_h, bw_h = fw_h0, bw_h0
    for _ in range(repeats):
        fw_y, fw_h = _direction(x, aux_row, fw_weights, fw_h, time_major, False, options)
        bw_y, bw_h = _direction(bw_x, aux_row, bw_weights, bw_h, time_major, True, options)
    outputs = (np.concatenate([fw_y, bw_y], axis=-1),) if merge_outputs else (fw_y, bw_y)
    return outputs, (fw_h, bw_h)
