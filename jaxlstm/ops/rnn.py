"""TFLite's basic RNN family: RNN, UNIDIRECTIONAL_SEQUENCE_RNN and BIDIRECTIONAL_SEQUENCE_RNN.

One step (tflite/kernels/internal/kernel_utils.cc, RnnBatchStep), per batch row:

.. math::

    h' = \\mathrm{act}(b + W x + W_{aux} a + R h)

accumulated in that order (`rnn_cell`; the sequence ops compute the terms without h for all
steps before their loop). Weights given as `QuantizedTensor`s select the hybrid path (per-row
int8 re-quantization of x, a and h at every step). The NumPy loop the ops are checked against
is `jaxlstm.reference.np_rnn`.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from jaxlstm.ops import _checks
from jaxlstm.ops._activations import ACTIVATION_CODES, activation
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._quant import QuantizedTensor, hybrid_matmul
from jaxlstm.ops._shard_map import vary_like

# The RNN kernels apply any schema fused activation (kernel_utils.cc RnnBatchStep).
RNN_ACTIVATIONS = tuple(ACTIVATION_CODES)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RNNWeights:
    """The constant tensors of one RNN direction (TFLite names).

    Shapes: ``input_weights`` [n_units, n_input]; ``recurrent_weights`` [n_units, n_units];
    ``bias`` [n_units]; ``aux_input_weights`` [n_units, n_aux] (bidirectional op only).
    Matrices may be `QuantizedTensor`s (hybrid path).
    """

    input_weights: jax.Array
    recurrent_weights: jax.Array
    bias: jax.Array
    aux_input_weights: jax.Array | None = None

    replace = dataclasses.replace

    @property
    def n_units(self) -> int:
        return int(self.input_weights.shape[0])

    @property
    def is_hybrid(self) -> bool:
        return isinstance(self.input_weights, QuantizedTensor)


@dataclasses.dataclass(frozen=True)
class RNNOptions:
    """Static options (schema `SequenceRNNOptions` names).

    Attributes:
      fused_activation_function: schema activation name; the upstream tests use "RELU".
      time_major: input is [T, B, I] instead of [B, T, I] (sequence ops only).
      asymmetric_quantize_inputs: hybrid path only.
    """

    fused_activation_function: str = "TANH"
    time_major: bool = False
    asymmetric_quantize_inputs: bool = False

    replace = dataclasses.replace


def check_weights(op: str, prefix: str, w: RNNWeights, options: RNNOptions, n_input: int) -> None:
    """Validates one direction's weights (basic_rnn.cc Prepare)."""
    _checks.check_activation(op, options.fused_activation_function, RNN_ACTIVATIONS)
    missing = [prefix + name for name in ("input_weights", "recurrent_weights", "bias") if getattr(w, name) is None]
    _checks.require(op, not missing, f"required weights {missing} are None")
    units = w.n_units
    if units == 0:
        raise ValueError(f"{op}: {prefix}input_weights has n_units=0 rows; n_units must be > 0")
    _checks.check_shape(
        op, f"{prefix}input_weights", w.input_weights, (units, n_input), f"(n_units={units}, n_input={n_input})"
    )
    _checks.check_shape(
        op, f"{prefix}recurrent_weights", w.recurrent_weights, (units, units), f"(n_units={units}, n_units={units})"
    )
    _checks.check_shape(op, f"{prefix}bias", w.bias, (units,), f"(n_units={units},)")
    _checks.check_float(op, f"{prefix}bias", w.bias)
    for name in ("input_weights", "recurrent_weights"):
        if not isinstance(getattr(w, name), QuantizedTensor):
            _checks.check_float(op, prefix + name, getattr(w, name))
    if isinstance(w.recurrent_weights, QuantizedTensor) != w.is_hybrid:
        raise TypeError(f"{op}: {prefix}input_weights and {prefix}recurrent_weights must both be int8 or both float")


def _matmul(w):
    """``x [N, k] -> x @ w.T`` for a float or `QuantizedTensor` matrix (hybrid)."""
    if isinstance(w, QuantizedTensor):
        scales = jnp.broadcast_to(jnp.asarray(w.scale, jnp.float32), w.shape[:1])
        return lambda x, asym: hybrid_matmul(x, w.values, scales, asym)
    return lambda x, asym: jnp.matmul(x, w.T.astype(x.dtype), precision=FLOAT32)


def _input_terms(x: jax.Array, w: RNNWeights, aux: jax.Array | None, asymmetric: bool) -> jax.Array:
    """``b + W x (+ W_aux a)`` for rows x [N, n_input] (aux [N, n_aux]): a step's terms without h."""
    z = w.bias.astype(x.dtype) + _matmul(w.input_weights)(x, asymmetric)
    if aux is not None:
        z = z + _matmul(w.aux_input_weights)(aux, asymmetric)
    return z


def _step(h: jax.Array, z_t: jax.Array, recurrent, options: RNNOptions) -> jax.Array:
    """h' = act(z_t + R h), from the terms without h (`_input_terms`) and R's matmul."""
    return activation(options.fused_activation_function)(z_t + recurrent(h, options.asymmetric_quantize_inputs))


def _cell(h: jax.Array, x_t: jax.Array, w: RNNWeights, options: RNNOptions, aux_t: jax.Array | None = None):
    h_new = _step(
        h, _input_terms(x_t, w, aux_t, options.asymmetric_quantize_inputs), _matmul(w.recurrent_weights), options
    )
    return h_new, h_new


def _rnn_scan(
    x: jax.Array,
    w: RNNWeights,
    h0: jax.Array,
    options: RNNOptions,
    aux: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """One direction over time-major `x` [T, B, I]: the steps of `rnn_cell`, with the input
    terms of all steps computed before the loop. Returns ([T, B, n_units], h_T)."""
    T, B = x.shape[:2]
    flat_aux = None if aux is None else aux.reshape(T * B, aux.shape[-1])
    z_in = _input_terms(x.reshape(T * B, x.shape[-1]), w, flat_aux, options.asymmetric_quantize_inputs)
    z_in = z_in.reshape(T, B, z_in.shape[-1])
    recurrent = _matmul(w.recurrent_weights)

    def step(h, z_t):
        h_new = _step(h, z_t, recurrent, options)
        return h_new, h_new

    h0 = vary_like(h0, z_in, w)
    h_final, y = jax.lax.scan(step, h0, z_in, reverse=reverse, unroll=unroll)
    return y, h_final


def _to_time_major(x: jax.Array, time_major: bool) -> jax.Array:
    return x if time_major else jnp.swapaxes(x, 0, 1)


def _check_aux_weights(op: str, prefix: str, w: RNNWeights, aux_input: jax.Array) -> None:
    n_aux = aux_input.shape[-1]
    meaning = f"(n_units={w.n_units}, n_aux={n_aux})"
    _checks.check_shape(op, f"{prefix}aux_input_weights", w.aux_input_weights, (w.n_units, n_aux), meaning)


def _check_state(op: str, name: str, h: jax.Array, batch: int, units: int) -> None:
    _checks.check_shape(op, name, h, (batch, units), f"(n_batch={batch}, n_units={units})")


def rnn_cell(
    state: jax.Array,
    x_t: jax.Array,
    weights: RNNWeights,
    *,
    options: RNNOptions = RNNOptions(),
    aux_input: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """One basic RNN step, ``h' = act(b + W x + W_aux a + R h)`` (this module's docstring).

    ``(h: [B, n_units], x_t: [B, n_input]) -> (h', h')``, the carry and output of a `lax.scan`
    step: ``lax.scan(functools.partial(rnn_cell, weights=w, options=o), h, x)`` runs a
    time-major sequence, as the sequence ops do (they compute the terms without h for all
    steps before their loop).

    Args:
      state: h [B, n_units].
      x_t: float [B, n_input].
      weights: `RNNWeights`; int8 `QuantizedTensor` matrices take TFLite's hybrid matmul.
      options: static `RNNOptions` (``time_major`` does not apply).
      aux_input: [B, n_aux] read through ``aux_input_weights`` (which it needs).

    Returns:
      (h', h'), both [B, n_units].

    References:
      tflite/kernels/internal/kernel_utils.cc (RnnBatchStep).
    """
    op = "rnn_cell"
    _checks.check_input(op, x_t, (2,), "[n_batch, n_input]", {"input_weights": weights.input_weights})
    check_weights(op, "", weights, options, x_t.shape[-1])
    _checks.require(
        op,
        (weights.aux_input_weights is None) == (aux_input is None),
        "aux_input and aux_input_weights go together: give both or neither",
    )
    if aux_input is not None:
        _check_aux_weights(op, "", weights, aux_input)
    _check_state(op, "state", state, x_t.shape[0], weights.n_units)
    return _cell(state, x_t, weights, options, aux_input)


@functools.partial(jax.jit, static_argnames=("options",))
def rnn(
    input: jax.Array,
    weights: RNNWeights,
    state: jax.Array | None = None,
    *,
    options: RNNOptions = RNNOptions(),
) -> tuple[jax.Array, jax.Array]:
    """TFLite RNN: one step, `rnn_cell`. ``input: [B, I] -> (output: [B, U], state: [B, U])``.

    The output and the new state are the same values (the kernel copies one into the
    other); `state` is the op's variable tensor hidden_state (zeros if None).
    References: tflite/kernels/basic_rnn.cc.
    """
    op = "rnn"
    _checks.check_input(op, input, (2,), "[n_batch, n_input]", {"input_weights": weights.input_weights})
    check_weights(op, "", weights, options, input.shape[-1])
    _checks.require(op, weights.aux_input_weights is None, "aux_input_weights belong to the bidirectional op")
    if state is None:
        state = jnp.zeros((input.shape[0], weights.n_units), input.dtype)
    _check_state(op, "state", state, input.shape[0], weights.n_units)
    with jax.named_scope(f"jaxlstm.{op}"):
        y, h = _rnn_scan(input[None], weights, state, options)
        return y[0], h


@functools.partial(jax.jit, static_argnames=("options", "unroll"))
def unidirectional_sequence_rnn(
    input: jax.Array,
    weights: RNNWeights,
    state: jax.Array | None = None,
    *,
    options: RNNOptions = RNNOptions(),
    unroll: int = 1,
) -> tuple[jax.Array, jax.Array]:
    """TFLite UNIDIRECTIONAL_SEQUENCE_RNN: `rnn_cell` over the time steps.

    ``input: [B, T, I] (or [T, B, I] if time_major) -> (output: [B, T, U] (or [T, B, U]),
    h_T: [B, U])``. `state` is the op's variable tensor hidden_state (zeros if None).
    Semantics are the NumPy loop `jaxlstm.reference.np_rnn.unidirectional_sequence_rnn`.

    References: tflite/kernels/unidirectional_sequence_rnn.cc.
    """
    op = "unidirectional_sequence_rnn"
    _checks.check_input(
        op,
        input,
        (3,),
        "[B, T, n_input] (or [T, B, n_input] when time_major)",
        {"input_weights": weights.input_weights},
    )
    check_weights(op, "", weights, options, input.shape[-1])
    _checks.require(op, weights.aux_input_weights is None, "aux_input_weights belong to the bidirectional op")
    x = _to_time_major(input, options.time_major)
    if state is None:
        state = jnp.zeros((x.shape[1], weights.n_units), input.dtype)
    _check_state(op, "state", state, x.shape[1], weights.n_units)
    with jax.named_scope(f"jaxlstm.{op}"):
        y, h = _rnn_scan(x, weights, state, options, unroll=unroll)
        return _to_time_major(y, options.time_major), h


def _aux_as_read(aux: jax.Array, n_input: int, time_major: bool, hybrid: bool) -> jax.Array:
    """The aux rows the TFLite kernel actually reads, time-major [T, B, n_aux].

    bidirectional_sequence_rnn.cc steps through the aux buffer with the *input* size as
    stride (time-major always; batch-major on the hybrid path), which is right only when
    n_aux == n_input. We reproduce the same addresses (reads past the end give zeros).
    """
    n_aux = aux.shape[-1]
    strided = time_major or hybrid
    if n_aux == n_input or not strided:
        return _to_time_major(aux, time_major)
    flat = aux.reshape(-1)
    flat = jnp.concatenate([flat, jnp.zeros(aux.size, aux.dtype)])
    if time_major:
        T, B = aux.shape[:2]
        starts = jnp.arange(T)[:, None] * (n_input * B) + jnp.arange(B)[None, :] * n_aux
    else:
        B, T = aux.shape[:2]
        starts = jnp.arange(B)[None, :] * (n_input * T) + jnp.arange(T)[:, None] * n_input
    return flat[starts[..., None] + jnp.arange(n_aux)]


@functools.partial(jax.jit, static_argnames=("options", "merge_outputs", "unroll"))
def bidirectional_sequence_rnn(
    input: jax.Array,
    fw_weights: RNNWeights,
    bw_weights: RNNWeights,
    fw_state: jax.Array | None = None,
    bw_state: jax.Array | None = None,
    aux_input: jax.Array | None = None,
    *,
    options: RNNOptions = RNNOptions(),
    merge_outputs: bool = False,
    unroll: int = 1,
) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, jax.Array]]:
    """TFLite BIDIRECTIONAL_SEQUENCE_RNN.

    ``input: [B, T, I] (or [T, B, I]) -> ((fw_output, bw_output) or (merged,), (fw_h, bw_h))``;
    `fw_state` and `bw_state` [B, U] are the op's variable tensors fw_hidden_state and
    bw_hidden_state (zeros if None). Aux modes as in `bidirectional_sequence_lstm`. The
    kernel's quirks are reproduced, as the acceptance is parity with LiteRT:

    * aux rows are addressed with the input size as stride (time-major, and batch-major
      hybrid), see `_aux_as_read`;
    * batch-major: the backward direction reads `input` even when it should read aux_input;
    * hybrid time-major: the kernel runs the whole sequence max_time times, carrying the
      state, so outputs and final states are those of the last repetition.

    Semantics are the NumPy loop `jaxlstm.reference.np_rnn.bidirectional_sequence_rnn`.

    References: tflite/kernels/bidirectional_sequence_rnn.cc (EvalFloat, EvalHybrid, Eval).
    """
    op = "bidirectional_sequence_rnn"
    meaning = "[B, T, n_input] (or [T, B, n_input] when time_major)"
    _checks.check_input(
        op,
        input,
        (3,),
        meaning,
        {"fw_input_weights": fw_weights.input_weights, "bw_input_weights": bw_weights.input_weights},
    )
    n_input = input.shape[-1]
    check_weights(op, "fw_", fw_weights, options, n_input)
    check_weights(op, "bw_", bw_weights, options, n_input)
    _checks.require(
        op,
        (fw_weights.aux_input_weights is None) == (bw_weights.aux_input_weights is None),
        "aux_input_weights must be given for both directions or for neither",
    )
    cross_link = fw_weights.aux_input_weights is not None
    if cross_link:
        _checks.require(op, aux_input is not None, "aux_input_weights are given but aux_input is None")
    if aux_input is not None:
        _checks.check_rank(op, "aux_input", aux_input, (3,), "the input's layout")
        _checks.check_shape(
            op, "aux_input", aux_input, input.shape[:2] + aux_input.shape[2:], f"{tuple(input.shape[:2])} + (n_aux,)"
        )
        if not cross_link:
            _checks.check_shape(
                op,
                "aux_input",
                aux_input,
                input.shape,
                f"{tuple(input.shape)} (the input's shape: bw reads it as its input)",
            )
        if cross_link:
            for prefix, w in (("fw_", fw_weights), ("bw_", bw_weights)):
                _check_aux_weights(op, prefix, w, aux_input)
    time_major = options.time_major
    hybrid = fw_weights.is_hybrid
    x = _to_time_major(input, time_major)
    B = x.shape[1]
    h_fw = jnp.zeros((B, fw_weights.n_units), input.dtype) if fw_state is None else fw_state
    h_bw = jnp.zeros((B, bw_weights.n_units), input.dtype) if bw_state is None else bw_state
    _check_state(op, "fw_state", h_fw, B, fw_weights.n_units)
    _check_state(op, "bw_state", h_bw, B, bw_weights.n_units)

    with jax.named_scope(f"jaxlstm.{op}"):
        aux = _aux_as_read(aux_input, n_input, time_major, hybrid) if cross_link else None
        bw_x = _to_time_major(aux_input, time_major) if (aux_input is not None and not cross_link and time_major) else x
        repeats = x.shape[0] if (hybrid and time_major) else 1

        def run(w, h, inputs, reverse):
            def once(h, _):
                y, h = _rnn_scan(inputs, w, h, options, aux, reverse=reverse, unroll=unroll)
                return h, y

            h, ys = jax.lax.scan(once, vary_like(h, inputs, aux, w), None, length=repeats)
            return ys[-1], h

        fw_y, h_fw = run(fw_weights, h_fw, x, False)
        bw_y, h_bw = run(bw_weights, h_bw, bw_x, True)
        fw_y = _to_time_major(fw_y, time_major)
        bw_y = _to_time_major(bw_y, time_major)
        outputs = (jnp.concatenate([fw_y, bw_y], axis=-1),) if merge_outputs else (fw_y, bw_y)
        return outputs, (h_fw, h_bw)
