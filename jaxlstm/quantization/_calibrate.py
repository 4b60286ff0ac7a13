"""Calibration: the float ranges of the tensors a fully integer model quantizes.

`calibrate` runs a float `Model` in JAX over calibration batches and records min and max
of every activation tensor of the graph (inputs, the recurrent ops' outputs, Dense heads,
softmax, concatenations, ...) and, per LSTM operator, of the values inside the op that its
integer kernel quantizes: the cell state (for its power-of-two scale), the hidden
``o * tanh(c)`` (the projection's input) and the gates' pre-activations before layer norm
(the layer-norm intermediates). Ranges are plain min/max over every batch, time step and
element, as TensorFlow Lite's calibrator records them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlstm.model.graph import Model, Operator
from jaxlstm.model.operators import INTEGER_LSTM, OPERATORS
from jaxlstm.model.rewrite import split_bidirectional_lstm
from jaxlstm.ops.lstm import (
    GATES,
    GateVectors,
    LSTMOptions,
    LSTMWeights,
    lstm_gate,
    lstm_output,
    lstm_projection,
    update_cell,
)
from jaxlstm.quantization._lstm import LSTMRanges, Range

# Rows per batch when calibration data comes as one array.
CALIBRATION_BATCH = 256
_WEIGHT_NAMES = frozenset(f.name for f in dataclasses.fields(LSTMWeights))


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibrated ranges of a model; `jaxlstm.quantize` takes one in place of calibration
    data (to quantize one model several ways from one calibration run).

    Attributes:
      model: the float model the ranges describe: the calibrated model with each
        BIDIRECTIONAL_SEQUENCE_LSTM split into two unidirectional ones (as `quantize`
        writes it; `jaxlstm.model.rewrite.split_bidirectional_lstm`).
      tensors: {tensor index in `model`: (min, max)} of every activation tensor (not
        constant, not variable), the model inputs included.
      lstms: {operator position in `model`: `LSTMRanges`} of each LSTM operator.
      batches: how many batches were run.
    """

    model: Model
    tensors: dict[int, Range]
    lstms: dict[int, LSTMRanges]
    batches: int


def as_model(model: Any, caller: str) -> Model:
    """`model` itself, or the `Model` of an object with ``to_model()`` (a `jaxlstm.nn` module)."""
    if isinstance(model, Model):
        return model
    to_model = getattr(model, "to_model", None)
    if to_model is None:
        raise TypeError(f"{caller} takes a Model or an object with to_model(), got {type(model).__name__}")
    return to_model()


def calibrate(model: Any, calibration_data: Any, *, progress: bool = True) -> Calibration:
    """Runs the float `model` over `calibration_data` and records the ranges of its tensors.

    Args:
      model: a float `Model` (or an object with ``to_model()``); LSTM options and weights
        as the float kernels read them.
      calibration_data: an array (one input; split into batches of `CALIBRATION_BATCH`
        rows along its batch axis, or of the input's batch where the model fixes it), or an iterable of batches, each an array or (for a
        model with several inputs) a sequence of arrays, one per model input.
      progress: show a tqdm progress bar over the batches (on stderr).

    Returns:
      The `Calibration`.

    Raises:
      ValueError: no batches, a batch that does not fit the model's inputs (the message
        names the input), or a non-finite value in a recorded tensor.
      NotImplementedError: a bidirectional LSTM that reads its aux input through aux
        weights (it cannot be split).
    """
    from tqdm.auto import tqdm

    model, _ = split_bidirectional_lstm(as_model(model, "calibrate"))
    activations = [
        i
        for i, t in enumerate(model.tensors)
        if i not in model.constants and not t.is_variable and t.dtype.startswith("float")
    ]
    lstms = [(k, op) for k, op in enumerate(model.operators) if op.opcode in INTEGER_LSTM]
    probe = model.replace(outputs=activations, signature_names=None)
    run = jax.jit(functools.partial(_batch_ranges, probe, activations, lstms))
    batches = _batches(model, calibration_data)
    total = len(batches) if isinstance(batches, list) else None
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("calibration_data holds no batches")
    model.check_inputs(*first)  # before the progress bar: a wrong shape is reported alone
    lows = highs = None
    count = 0
    bar = tqdm(
        itertools.chain([first], batches),
        desc="calibrating",
        unit="batch",
        total=total,
        disable=not progress,
        file=sys.stderr,
    )
    for batch in bar:
        model.check_inputs(*batch)
        low, high = (np.asarray(v, np.float64) for v in run(model.params, batch))
        lows = low if lows is None else np.minimum(lows, low)
        highs = high if highs is None else np.maximum(highs, high)
        count += 1
    names = [model.tensors[i].name for i in activations] + [
        f"{model.tensors[op.outputs[0]].name} ({what})" for _, op in lstms for what in _LSTM_VALUES
    ]
    bad = [n for n, lo, hi in zip(names, lows, highs) if not (np.isfinite(lo) and np.isfinite(hi))]
    if bad:
        raise ValueError(f"calibration gave non-finite values in {bad[:5]}; check the calibration data and weights")
    pairs = [(float(lo), float(hi)) for lo, hi in zip(lows, highs)]
    tensors = dict(zip(activations, pairs))
    internal = pairs[len(activations) :]
    per_lstm = len(_LSTM_VALUES)
    return Calibration(
        model=model,
        tensors=tensors,
        lstms={
            k: _lstm_ranges(op, tensors, internal[n * per_lstm : (n + 1) * per_lstm]) for n, (k, op) in enumerate(lstms)
        },
        batches=count,
    )


def _batches(model: Model, data: Any) -> list | Iterator:
    """The calibration batches, each a tuple of float32 arrays (one per model input)."""
    if isinstance(data, (np.ndarray, jax.Array)):
        if len(model.inputs) != 1:
            raise ValueError(
                f"the model takes {len(model.inputs)} inputs {model.input_names}: pass calibration_data as "
                "an iterable of batches, each a sequence of one array per input"
            )
        data = np.asarray(data, np.float32)
        axis = model.batch_axes().get(model.inputs[0], 0)
        shape = model.tensors[model.inputs[0]].shape
        rows = data.shape[axis] if data.ndim > axis else 0
        fixed = shape[axis] if len(shape) > axis and shape[axis] > 0 else None  # a static batch
        size = fixed or CALIBRATION_BATCH
        if rows == 0 or (fixed and rows % fixed):
            raise ValueError(
                f"calibration_data has shape {data.shape}: {rows} rows along the batch axis {axis}; the model's "
                f"input {model.input_names[0]!r} has shape {list(shape)}, so give a positive multiple of {size} rows"
            )
        return [(np.take(data, range(s, min(s + size, rows)), axis=axis),) for s in range(0, rows, size)]
    if not isinstance(data, Iterable):
        raise TypeError(f"calibration_data must be an array or an iterable of batches, got {type(data).__name__}")
    return (_as_batch(batch) for batch in data)


def _as_batch(batch: Any) -> tuple[np.ndarray, ...]:
    if isinstance(batch, (np.ndarray, jax.Array)):
        return (np.asarray(batch, np.float32),)
    return tuple(np.asarray(x, np.float32) for x in batch)


# ----------------------------------------------------------------------------- one batch

# What `_lstm_internals` records per LSTM operator, in order.
_LSTM_VALUES = (*(f"{g} gate pre-activation" for g in GATES), "cell state", "hidden o * tanh(c)")


def _batch_ranges(
    probe: Model, activations: list[int], lstms: list[tuple[int, Operator]], params: dict, inputs: tuple
) -> tuple[jax.Array, jax.Array]:
    """(mins, maxs) of the activation tensors, then of each LSTM's `_LSTM_VALUES`."""
    values, _ = probe.apply(params, None, *inputs)
    by_index = dict(zip(activations, values))
    extremes = [(jnp.min(v), jnp.max(v)) for v in values]
    for _, op in lstms:
        weights = _lstm_weights(probe, op, params)
        options = LSTMOptions(
            fused_activation_function=op.option("fused_activation_function", "TANH"),
            cell_clip=float(op.option("cell_clip", 0.0)),
            proj_clip=float(op.option("proj_clip", 0.0)),
            time_major=bool(op.option("time_major", False)),
        )
        x = by_index[op.inputs[0]]
        xs = x[None] if op.opcode == "LSTM" else (x if options.time_major else jnp.swapaxes(x, 0, 1))
        extremes += _lstm_internals(xs, weights, options)
    return jnp.stack([lo for lo, _ in extremes]), jnp.stack([hi for _, hi in extremes])


def _lstm_weights(model: Model, op: Operator, params: dict) -> LSTMWeights:
    inputs = OPERATORS[op.opcode].named_inputs(op)
    return LSTMWeights(**{n: params[model.tensors[i].name] for n, i in inputs.items() if n in _WEIGHT_NAMES})


def _lstm_internals(xs: jax.Array, w: LSTMWeights, options: LSTMOptions) -> list[tuple[jax.Array, jax.Array]]:
    """(min, max) of `_LSTM_VALUES` over a float LSTM run from zero state on xs [T, B, I],
    with the float kernel's step (the spec functions of `jaxlstm.ops.lstm`); an absent
    gate (CIFG's input gate) records (0, 0)."""
    batch = xs.shape[1]
    activation = options.fused_activation_function

    def matmul(a: jax.Array, weight: jax.Array) -> jax.Array:
        return jnp.dot(a, jnp.asarray(weight).T, precision=lax.Precision.HIGHEST)

    def step(carry, x_t):
        h, c = carry
        pre = {}

        def gate(g: str, c_read: jax.Array, act: str) -> jax.Array:
            z = matmul(x_t, getattr(w, f"input_to_{g}_weights")) + matmul(h, getattr(w, f"recurrent_to_{g}_weights"))
            peephole = None if g == "cell" else getattr(w, f"cell_to_{g}_weights")
            pre[g] = z if peephole is None else z + peephole * c_read  # what layer norm reads
            vectors = GateVectors(getattr(w, f"{g}_gate_bias"), None, getattr(w, f"{g}_layer_norm_coefficients"))
            return lstm_gate(pre[g], c_read, vectors, act)

        f = gate("forget", c, "SIGMOID")
        g = gate("cell", c, activation)
        i = gate("input", c, "SIGMOID") if "input" in w.gates else None
        c = update_cell(c, f, g, i, options.cell_clip)
        o = gate("output", c, "SIGMOID")
        m = lstm_output(o, c, activation)
        h = m
        if w.use_projection:
            h = lstm_projection(matmul(m, w.projection_weights), w.projection_bias, options.proj_clip)
        recorded = [pre.get(name, jnp.zeros(())) for name in GATES] + [c, m]
        return (h, c), (jnp.stack([jnp.min(v) for v in recorded]), jnp.stack([jnp.max(v) for v in recorded]))

    state = (jnp.zeros((batch, w.n_output), xs.dtype), jnp.zeros((batch, w.n_cell), xs.dtype))
    _, (lows, highs) = lax.scan(step, state, xs)
    return list(zip(jnp.min(lows, axis=0), jnp.max(highs, axis=0)))


def _lstm_ranges(op: Operator, tensors: dict[int, Range], internal: list[Range]) -> LSTMRanges:
    """The `LSTMRanges` of one LSTM operator from the recorded ranges."""
    gates = internal[: len(GATES)]
    cell_state, hidden = internal[len(GATES) :]
    return LSTMRanges(
        input=tensors[op.inputs[0]],
        output=tensors[op.outputs[0]],
        cell_state=cell_state,
        hidden=hidden,
        gates=tuple(gates),
    )
