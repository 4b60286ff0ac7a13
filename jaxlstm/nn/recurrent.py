"""Flax NNX recurrent layers whose parameters are the weights of TFLite's fused ops.

Each layer keeps `nnx.Param`s named exactly like the fields of `LSTMWeights` / `RNNWeights`
/ `GRUWeights` (TFLite's tensor names) and its ``__call__`` runs the `jaxlstm.ops` function of the operator
it exports to, so a trained layer *is* the reference for its exported model::

    layer = LSTM(8, 64, rngs=nnx.Rngs(0))
    y = layer(x)                           # x: [B, T, 8] -> y: [B, T, 64]
    layer.weights()                        # LSTMWeights
    model = layer.to_model()               # one UNIDIRECTIONAL_SEQUENCE_LSTM, any batch and length
    jaxlstm.export_tflite(layer)           # .tflite: every invoke starts from zero state, any batch

How a layer runs: without ``seq_lengths`` it calls the fused sequence op
(`unidirectional_sequence_lstm`, `unidirectional_sequence_rnn`, `gru`), exactly what its
exported model computes; with them it scans the op's one-step cell (`lstm_cell_fused`, `rnn_cell`,
`gru_cell`) with `lax.scan`, as flax's ``nnx.RNN`` scans a cell, masked per row. A
bidirectional layer holds two such direction layers, ``fw`` and ``bw`` (as flax's
``nnx.Bidirectional`` holds two ``RNN``s), and runs the bidirectional op, or each direction
(the backward one over `flip_sequences` of its input).

Initialization follows Keras: the packed input kernel [n_input, G * n_cell] is glorot-uniform,
the packed recurrent kernel [n_output, G * n_cell] orthogonal, biases are zero except the
forget gate's, which is one with ``unit_forget_bias`` (G = 4 gates, 3 under CIFG); the
packed matrices are then split per gate as a Keras layer's are (`jaxlstm.convert`).
GRU layers (a GRU operator in the model; TFLite has none, so the export unrolls it into
builtin operators over ``export_tflite(..., time_steps=T)`` steps) initialize like Keras
``GRU``: glorot-uniform / orthogonal kernels, zero biases.
Projection weights are glorot-uniform, peephole weights glorot-uniform over [n_cell] (as TF1
``LSTMCell``, limit sqrt(3 / n_cell)), layer-norm coefficients one.

Variable-length sequences (``seq_lengths`` [B], right padding):
  * In JAX, steps ``t >= seq_lengths[b]`` leave row b's state unchanged and output zeros;
    the final state is the state after the last valid step. The backward direction of a
    bidirectional layer starts at each row's last valid step.
  * The exported fused ops have no length input: they run all T steps on every row. A
    unidirectional layer's exported outputs at valid steps equal the module's (padding
    only comes after them); its outputs at padded steps and its final variable state do
    not, so read ``output[b, seq_lengths[b] - 1]`` rather than the last step. A
    bidirectional layer's backward direction reads the padding first, so its exported
    outputs match only on full-length rows: run shorter sequences unpadded (in a batch
    of their own length).

Long sequences (``remat=True``): the time axis is cut into chunks of ``remat_chunk_size``
steps (default ceil(sqrt(T))) and each chunk (the fused op, or the masked scan) runs under
`jax.checkpoint`, so the gradient keeps one state per chunk plus one chunk's activations
instead of every step's: about 2 sqrt(T) states instead of T. The outputs are the same.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm.convert import gru_weights_from_fused, lstm_weights_from_fused
from jaxlstm.model import Model, ModelBuilder, Ref
from jaxlstm.ops.gru import GRU_ACTIVATIONS, GRUOptions, GRUWeights, gru, gru_cell
from jaxlstm.ops.lstm import (
    GATES,
    LSTM_ACTIVATIONS,
    LSTMOptions,
    LSTMState,
    LSTMWeights,
    _check_matmul_dtype,
    bidirectional_sequence_lstm,
    lstm_cell_fused,
    unidirectional_sequence_lstm,
    zero_state,
)
from jaxlstm.ops.rnn import (
    RNN_ACTIVATIONS,
    RNNOptions,
    RNNWeights,
    bidirectional_sequence_rnn,
    rnn_cell,
    unidirectional_sequence_rnn,
)

State = Any  # LSTMState, or the RNN / GRU hidden state [B, n_units]
Cell = Callable[[State, jax.Array], tuple[State, jax.Array]]  # (state, x_t [B, I]) -> (state, y_t)
# Steps t0, t0 + 1, ... of a direction: (x [T, B, I], state, t0) -> (y [T, B, O], state).
Run = Callable[[jax.Array, State, jax.Array], tuple[jax.Array, State]]

# The tensors of one LSTM direction, in TFLite input order (weights and layer norm).
LSTM_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(LSTMWeights) if not f.name.startswith("aux_"))
RNN_PARAM_NAMES = ("input_weights", "recurrent_weights", "bias")
GRU_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(GRUWeights))


# ----------------------------------------------------------------------------- the loop


def flip_sequences(x: jax.Array, seq_lengths: jax.Array | None) -> jax.Array:
    """Reverses each row's first ``seq_lengths[b]`` steps of time-major `x` [T, B, ...].

    Padded steps stay in place; without lengths the whole time axis is reversed.
    """
    if seq_lengths is None:
        return jnp.flip(x, axis=0)
    t = jnp.arange(x.shape[0])[:, None]
    source = jnp.where(t < seq_lengths[None, :], seq_lengths[None, :] - 1 - t, t)  # [T, B]
    source = source.reshape(source.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, source, axis=0)


def _masked_scan(cell: Cell, seq_lengths: jax.Array) -> Run:
    """A `Run` that scans `cell` and stops updating row b's state from step ``seq_lengths[b]``
    on, where its outputs are zeros."""

    def step(state: State, inputs: tuple[jax.Array, jax.Array]):
        x_t, t = inputs
        new_state, y_t = cell(state, x_t)
        valid = (t < seq_lengths)[:, None]
        new_state = jax.tree.map(lambda new, old: jnp.where(valid, new, old), new_state, state)
        return new_state, jnp.where(valid, y_t, 0.0)

    def run(x: jax.Array, state: State, t0: jax.Array):
        state, y = jax.lax.scan(step, state, (x, t0 + jnp.arange(x.shape[0], dtype=jnp.int32)))
        return y, state

    return run


def _run_in_chunks(run: Run, x: jax.Array, state: State, chunk: int) -> tuple[jax.Array, State]:
    """`run` over consecutive chunks of `chunk` steps of `x` (the last may be shorter), each
    under `jax.checkpoint`: the gradient keeps the state between chunks and recomputes a
    chunk's steps, instead of keeping every step's."""
    run = jax.checkpoint(run)
    T = x.shape[0]
    n_full = T // chunk
    ys = []
    if n_full:

        def body(state: State, inputs: tuple[jax.Array, jax.Array]):
            x_chunk, t0 = inputs
            y, state = run(x_chunk, state, t0)
            return state, y

        chunks = x[: n_full * chunk].reshape((n_full, chunk) + x.shape[1:])
        state, y = jax.lax.scan(body, state, (chunks, jnp.arange(n_full, dtype=jnp.int32) * chunk))
        ys.append(y.reshape((n_full * chunk,) + y.shape[2:]))
    if T % chunk:
        y, state = run(x[n_full * chunk :], state, jnp.int32(n_full * chunk))
        ys.append(y)
    return jnp.concatenate(ys) if len(ys) > 1 else ys[0], state


# ----------------------------------------------------------------------------- initialization


def _lstm_init(
    key: jax.Array,
    n_input: int,
    n_cell: int,
    n_output: int,
    *,
    use_cifg: bool,
    use_peephole: bool,
    use_projection: bool,
    use_projection_bias: bool,
    use_layer_norm: bool,
    unit_forget_bias: bool,
) -> LSTMWeights:
    """Keras-style initial values of one LSTM direction."""
    gates, gate_order = (GATES[1:], "fco") if use_cifg else (GATES, "ifco")
    k_in, k_rec, k_proj, k_peep = jax.random.split(key, 4)
    glorot = jax.nn.initializers.glorot_uniform()
    kernel = glorot(k_in, (n_input, len(gates) * n_cell))
    recurrent = jax.nn.initializers.orthogonal()(k_rec, (n_output, len(gates) * n_cell))
    bias = jnp.concatenate([jnp.full(n_cell, float(gate == "forget" and unit_forget_bias)) for gate in gates])
    weights = lstm_weights_from_fused(kernel, recurrent, bias, gate_order)
    extras = {}
    if use_layer_norm:
        extras.update({f"{gate}_layer_norm_coefficients": jnp.ones(n_cell) for gate in gates})
    if use_peephole:
        limit = math.sqrt(3.0 / n_cell)
        for gate, k in zip(("input", "forget", "output"), jax.random.split(k_peep, 3)):
            if gate in gates:
                extras[f"cell_to_{gate}_weights"] = jax.random.uniform(k, (n_cell,), minval=-limit, maxval=limit)
    if use_projection:
        extras["projection_weights"] = glorot(k_proj, (n_cell, n_output)).T
        if use_projection_bias:
            extras["projection_bias"] = jnp.zeros(n_output)
    return weights.replace(**extras)


def _rnn_init(key: jax.Array, n_input: int, n_units: int) -> RNNWeights:
    """Keras ``SimpleRNN`` initial values in TFLite layout."""
    k_in, k_rec = jax.random.split(key)
    return RNNWeights(
        input_weights=jax.nn.initializers.glorot_uniform()(k_in, (n_input, n_units)).T,
        recurrent_weights=jax.nn.initializers.orthogonal()(k_rec, (n_units, n_units)).T,
        bias=jnp.zeros(n_units),
    )


def _gru_init(key: jax.Array, n_input: int, units: int, reset_after: bool) -> GRUWeights:
    """Keras ``GRU`` initial values (recurrent biases only with reset_after)."""
    k_in, k_rec = jax.random.split(key)
    kernel = jax.nn.initializers.glorot_uniform()(k_in, (n_input, 3 * units))
    recurrent = jax.nn.initializers.orthogonal()(k_rec, (units, 3 * units))
    zeros = jnp.zeros(3 * units)
    return gru_weights_from_fused(kernel, recurrent, zeros, zeros if reset_after else None, gate_order="zrn")


def _set_params(module: nnx.Module, weights: Any, names: tuple[str, ...]) -> None:
    """One `nnx.Param` per present field of `weights` (absent ones: None attributes)."""
    for name in names:
        value = getattr(weights, name)
        setattr(module, name, None if value is None else nnx.Param(jnp.asarray(value, jnp.float32)))


def _get_params(module: nnx.Module, names: tuple[str, ...]) -> dict[str, jax.Array]:
    return {n: getattr(module, n)[...] for n in names if getattr(module, n) is not None}


# ----------------------------------------------------------------------------- checks


def _check_option(layer: str, ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"{layer}: {message}")


def _check_sizes(layer: str, **sizes: int | None) -> None:
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{layer}: {name}={value!r} must be a positive int")


def _check_lengths(layer: str, seq_lengths: jax.Array | None, batch: int) -> jax.Array | None:
    if seq_lengths is None:
        return None
    seq_lengths = jnp.asarray(seq_lengths)
    if seq_lengths.shape != (batch,) or not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise ValueError(
            f"{layer}: seq_lengths has shape {tuple(seq_lengths.shape)} and dtype "
            f"{seq_lengths.dtype}, expected integers of shape (n_batch={batch},)"
        )
    return seq_lengths


def _to_time_major(x: jax.Array, time_major: bool) -> jax.Array:
    return x if time_major else jnp.swapaxes(x, 0, 1)


def _time_major_input(layer, x: jax.Array, seq_lengths: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """(`x` checked against the layer and made time-major [T, B, I], checked `seq_lengths`)."""
    name = type(layer).__name__
    layout = "[T, B, in_features]" if layer.time_major else "[B, T, in_features]"
    if x.ndim != 3 or x.shape[-1] != layer.in_features:
        raise ValueError(
            f"{name}: input has shape {tuple(x.shape)}, expected {layout} with in_features={layer.in_features}"
        )
    x = _to_time_major(jnp.asarray(x), layer.time_major)
    return x, _check_lengths(name, seq_lengths, x.shape[1])


# ----------------------------------------------------------------------------- layers


class _Exportable:
    """`to_model` for layers that implement ``add_to(builder, x, name) -> Ref``."""

    in_features: int
    time_major: bool = False
    _export_name: str  # the default layer name, prefix of the tensor names

    def add_to(self, builder: ModelBuilder, x: Ref, name: str) -> Ref:
        raise NotImplementedError

    def to_model(
        self, batch_size: int | None = None, time_steps: int | None = None, *, name: str | None = None
    ) -> Model:
        """This layer as a `jaxlstm.model.Model` (what `jaxlstm.export_tflite` serializes).

        Args:
          batch_size: a fixed batch, or None (default) for a dynamic one: the model runs
            at any batch in JAX, and its .tflite file at any batch after LiteRT's
            ``resize_tensor_input`` of the input.
          time_steps: a fixed sequence length, or None (default) for a dynamic one (a GRU
            then needs ``export_tflite(..., time_steps=T)``).
          name: the layer name that prefixes the tensor names (default ``_export_name``).

        Returns:
          A `Model` with one input ``input`` ([B, T, in_features], or [T, B, ...] when
          time-major) and one output ``output``.
        """
        batch, time = batch_size or -1, time_steps or -1
        builder = ModelBuilder(batch)
        x = builder.add_input("input", ((time, batch) if self.time_major else (batch, time)) + (self.in_features,))
        y = self.add_to(builder, x, name or self._export_name)
        return builder.build([y], ["output"])


class _Direction(nnx.Module, _Exportable):
    """One direction of a recurrence. A subclass holds the op's weights as parameters and
    names its fused sequence op (`_fused`) and its one-step cell (`_cell`)."""

    in_features: int
    output_size: int
    options: Any  # the op's static options
    remat: bool = False
    remat_chunk_size: int | None = None

    def _init_layout(self, in_features: int, time_major: bool, remat: bool, remat_chunk_size: int | None) -> None:
        self.in_features = in_features
        self.time_major = time_major
        self.remat = remat
        self.remat_chunk_size = remat_chunk_size

    def weights(self):
        raise NotImplementedError

    def _fused(self, x: jax.Array, weights, state: State) -> tuple[jax.Array, State]:
        """The fused sequence op over time-major `x`."""
        raise NotImplementedError

    def _cell(self, weights, dtype) -> Cell:
        """The op's one-step cell with `weights` and the options bound, for inputs of `dtype`."""
        raise NotImplementedError

    def _zero_state(self, weights, batch: int, dtype) -> State:
        """The op's zero state (the hidden state [B, output_size] unless overridden)."""
        return jnp.zeros((batch, self.output_size), dtype)

    def _as_state(self, initial_state: Any) -> State:
        """A user-given initial state (e.g. a tuple (h, c)) as the op's state."""
        return jnp.asarray(initial_state)

    def _run(
        self,
        x: jax.Array,
        state: State | None = None,
        seq_lengths: jax.Array | None = None,
        *,
        reverse: bool = False,
    ) -> tuple[jax.Array, State]:
        """This direction over time-major `x` [T, B, I] -> (y [T, B, O], final state).

        The fused op without `seq_lengths`; with them, a `lax.scan` of the cell that keeps
        each row's state from its last valid step on. ``remat`` runs either in checkpointed
        chunks. `reverse` runs from each row's last valid step back to step 0, each output
        at its input's time index.
        """
        weights = self.weights()
        if state is None:
            state = self._zero_state(weights, x.shape[1], x.dtype)
        if reverse:
            x = flip_sequences(x, seq_lengths)
        if seq_lengths is None:

            def run(x: jax.Array, state: State, t0: jax.Array):
                return self._fused(x, weights, state)
        else:
            run = _masked_scan(self._cell(weights, x.dtype), seq_lengths)
        if self.remat:
            chunk = self.remat_chunk_size or math.isqrt(max(x.shape[0] - 1, 0)) + 1  # ceil(sqrt(T))
            y, state = _run_in_chunks(run, x, state, chunk)
        else:
            y, state = run(x, state, jnp.int32(0))
        if reverse:
            y = flip_sequences(y, seq_lengths)
        return y, state

    def __call__(
        self,
        x: jax.Array,
        initial_state: State | None = None,
        *,
        seq_lengths: jax.Array | None = None,
        return_state: bool = False,
    ):
        """Runs the layer over a sequence.

        Args:
          x: [B, T, in_features] ([T, B, in_features] when ``time_major``).
          initial_state: the initial state (the op's variable tensors); zeros if None.
          seq_lengths: optional int [B], valid steps per row (see the module docstring).
          return_state: also return the final state.

        Returns:
          The output sequence [B, T, n_output] (in the input's layout), and the final
          state when `return_state`.
        """
        x, seq_lengths = _time_major_input(self, x, seq_lengths)
        state = None if initial_state is None else self._as_state(initial_state)
        y, state = self._run(x, state, seq_lengths)
        y = _to_time_major(y, self.time_major)
        return (y, state) if return_state else y


class _Bidirectional(nnx.Module, _Exportable):
    """Two direction layers ``fw`` and ``bw`` of one kind over the same input; outputs
    concatenated [fw | bw]. A subclass names the bidirectional op (`_fused`) and its export."""

    fw: _Direction
    bw: _Direction
    merge_outputs: bool = True

    def __init__(
        self,
        direction: type[_Direction],
        in_features: int,
        size: int,
        /,
        *,
        merge_outputs: bool,
        rngs: nnx.Rngs,
        **options: Any,
    ):
        self.fw = direction(in_features, size, rngs=rngs, **options)
        self.bw = direction(in_features, size, rngs=rngs, **options)
        self.merge_outputs = merge_outputs

    # The layout, options and remat settings are the directions' (they share them).
    in_features = property(lambda self: self.fw.in_features)
    time_major = property(lambda self: self.fw.time_major)
    remat = property(lambda self: self.fw.remat)
    remat_chunk_size = property(lambda self: self.fw.remat_chunk_size)
    options = property(lambda self: self.fw.options)
    output_size = property(lambda self: self.fw.output_size + self.bw.output_size)

    def weights(self) -> tuple[Any, Any]:
        """(fw, bw) weights."""
        return self.fw.weights(), self.bw.weights()

    def _fused(self, x: jax.Array, fw_state: State | None, bw_state: State | None):
        """The bidirectional op over time-major `x`: ((fw_y, bw_y), (fw_final, bw_final))."""
        raise NotImplementedError

    def __call__(
        self,
        x: jax.Array,
        initial_state: tuple[State, State] | None = None,
        *,
        seq_lengths: jax.Array | None = None,
        return_state: bool = False,
    ):
        """Runs both directions.

        Args:
          x: [B, T, in_features] ([T, B, in_features] when ``time_major``).
          initial_state: (fw_state, bw_state), zeros if None.
          seq_lengths: optional int [B] (see the module docstring).
          return_state: also return (fw_final, bw_final).

        Returns:
          [B, T, n_fw_output + n_bw_output] with ``merge_outputs``, else (fw, bw) outputs;
          and the final states when `return_state`.
        """
        x, seq_lengths = _time_major_input(self, x, seq_lengths)
        fw_state, bw_state = (None, None) if initial_state is None else initial_state
        fw_state = None if fw_state is None else self.fw._as_state(fw_state)
        bw_state = None if bw_state is None else self.bw._as_state(bw_state)
        if seq_lengths is None and not self.remat:  # exactly the exported op
            (fw_y, bw_y), states = self._fused(x, fw_state, bw_state)
        else:
            fw_y, fw_final = self.fw._run(x, fw_state, seq_lengths)
            bw_y, bw_final = self.bw._run(x, bw_state, seq_lengths, reverse=True)
            states = (fw_final, bw_final)
        outputs = tuple(_to_time_major(y, self.time_major) for y in (fw_y, bw_y))
        y = jnp.concatenate(outputs, axis=-1) if self.merge_outputs else outputs
        return (y, states) if return_state else y

    def _add_merged(self, builder: ModelBuilder, outputs: list[Ref], name: str):
        """The layer's output from the op's outputs ([merged] or [fw, bw])."""
        if self.merge_outputs:
            return outputs[0] if len(outputs) == 1 else builder.add_concatenation(outputs, name=f"{name}/concat")
        raise NotImplementedError(
            f"{type(self).__name__}(merge_outputs=False) has two outputs; export needs one: use merge_outputs=True"
        )


# What `Sequential` accepts first and passes ``seq_lengths`` to.
RECURRENT_LAYERS = (_Direction, _Bidirectional)


class LSTM(_Direction):
    """TFLite UNIDIRECTIONAL_SEQUENCE_LSTM as a Flax NNX layer.

    ``x: [B, T, in_features] -> y: [B, T, n_output]`` with n_output = `projection_size` or
    `hidden_size`. Parameters are named like the `LSTMWeights` fields (absent optional
    tensors are None attributes); ``__call__`` runs `jaxlstm.ops.unidirectional_sequence_lstm`
    (with ``seq_lengths``, `lax.scan` of `jaxlstm.ops.lstm_cell_fused`, the same step as
    `jaxlstm.ops.lstm_cell`).

    Args:
      in_features: n_input.
      hidden_size: n_cell.
      use_cifg: couple input and forget gate (no input-gate tensors; i = 1 - f).
      use_peephole: peephole weights ``cell_to_*_weights``.
      projection_size: n_output; adds ``projection_weights`` [n_output, n_cell].
      use_projection_bias: adds ``projection_bias`` (needs `projection_size`).
      use_layer_norm: layer-norm coefficients per gate (bias added after normalization).
      cell_clip: clip the cell state to [-cell_clip, cell_clip]; 0 disables.
      proj_clip: clip the projection output (needs `projection_size`); 0 disables.
      time_major: inputs and outputs are [T, B, ...].
      activation: the cell and output activation, a schema name ("TANH").
      unit_forget_bias: initialize the forget-gate bias to one (Keras default).
      remat: checkpoint chunks of the time loop (long sequences, see the module docstring).
      remat_chunk_size: steps per checkpointed chunk (default ceil(sqrt(T))).
      matmul_dtype: None, or e.g. ``jnp.bfloat16`` for faster training: the operand dtype of
        the weight matmuls in JAX, forward and backward (`unidirectional_sequence_lstm`).
        The exported op is float32 either way.
      rngs: the `nnx.Rngs` to draw the initial parameters from.

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = LSTM(3, 4, projection_size=2, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((1, 5, 3))).shape
      (1, 5, 2)
      >>> layer.projection_weights.shape
      (2, 4)
    """

    _export_name = "lstm"

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        *,
        use_cifg: bool = False,
        use_peephole: bool = False,
        projection_size: int | None = None,
        use_projection_bias: bool = False,
        use_layer_norm: bool = False,
        cell_clip: float = 0.0,
        proj_clip: float = 0.0,
        time_major: bool = False,
        activation: str = "TANH",
        unit_forget_bias: bool = True,
        remat: bool = False,
        remat_chunk_size: int | None = None,
        matmul_dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        layer = type(self).__name__
        _check_sizes(
            layer,
            in_features=in_features,
            hidden_size=hidden_size,
            projection_size=projection_size,
            remat_chunk_size=remat_chunk_size,
        )
        _check_option(
            layer,
            activation in LSTM_ACTIVATIONS,
            f"activation={activation!r} is not supported by the LSTM ops; use one of {LSTM_ACTIVATIONS}",
        )
        for name, clip in (("cell_clip", cell_clip), ("proj_clip", proj_clip)):
            _check_option(layer, clip >= 0, f"{name}={clip} must be >= 0 (0 disables clipping)")
        if projection_size is None:
            _check_option(layer, not use_projection_bias, "use_projection_bias=True needs projection_size")
            _check_option(
                layer, proj_clip == 0, f"proj_clip={proj_clip} needs projection_size (it clips the projection)"
            )
        _check_matmul_dtype(layer, matmul_dtype, ())
        self._init_layout(in_features, time_major, remat, remat_chunk_size)
        self.matmul_dtype = None if matmul_dtype is None else jnp.dtype(matmul_dtype)
        self.hidden_size = hidden_size
        self.output_size = projection_size or hidden_size
        self.options = LSTMOptions(
            fused_activation_function=activation,
            cell_clip=float(cell_clip),
            proj_clip=float(proj_clip),
            time_major=time_major,
        )
        initial = _lstm_init(
            rngs.params(),
            in_features,
            hidden_size,
            self.output_size,
            use_cifg=use_cifg,
            use_peephole=use_peephole,
            use_projection=projection_size is not None,
            use_projection_bias=use_projection_bias,
            use_layer_norm=use_layer_norm,
            unit_forget_bias=unit_forget_bias,
        )
        _set_params(self, initial, LSTM_PARAM_NAMES)

    def weights(self) -> LSTMWeights:
        """The parameters as `LSTMWeights` (the op's constant tensors)."""
        return LSTMWeights(**_get_params(self, LSTM_PARAM_NAMES))

    def _fused(self, x, weights, state):
        options = self.options.replace(time_major=True)
        return unidirectional_sequence_lstm(x, weights, state, options=options, matmul_dtype=self.matmul_dtype)

    def _cell(self, weights, dtype) -> Cell:
        return lstm_cell_fused(weights, options=self.options, dtype=dtype, matmul_dtype=self.matmul_dtype)

    def _zero_state(self, weights, batch, dtype) -> LSTMState:
        return zero_state(weights, batch, dtype)

    def _as_state(self, initial_state) -> LSTMState:
        return LSTMState(*map(jnp.asarray, initial_state))

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "lstm") -> Ref:
        """Adds one UNIDIRECTIONAL_SEQUENCE_LSTM over `x` to `builder`."""
        return builder.add_lstm(x, self.weights(), self.options, name=name)


class BidirectionalLSTM(_Bidirectional):
    """TFLite BIDIRECTIONAL_SEQUENCE_LSTM as a Flax NNX layer (exports to that one op).

    ``x: [B, T, in_features] -> [B, T, 2 * n_output]`` ([fw | bw]). Two `LSTM` sub-layers
    ``fw`` and ``bw`` hold the parameters (``fw.input_to_forget_weights`` is TFLite's
    ``fw_input_to_forget_weights``); ``__call__`` runs
    `jaxlstm.ops.bidirectional_sequence_lstm` (with ``seq_lengths`` or ``remat``, each
    direction as `LSTM` runs it). Arguments as `LSTM`, shared by both directions; layer norm
    is not available (the op has no layer-norm inputs).

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = BidirectionalLSTM(3, 4, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5, 3))).shape
      (2, 5, 8)
    """

    _export_name = "bidirectional_lstm"

    def __init__(
        self,
        in_features: int,
        hidden_size: int,
        *,
        merge_outputs: bool = True,
        use_layer_norm: bool = False,
        time_major: bool = False,
        remat: bool = False,
        remat_chunk_size: int | None = None,
        rngs: nnx.Rngs,
        **lstm_options: Any,
    ):
        if use_layer_norm:
            raise NotImplementedError(
                "BidirectionalLSTM(use_layer_norm=True): BIDIRECTIONAL_SEQUENCE_LSTM has no "
                "layer-norm inputs; use LSTM(..., use_layer_norm=True) for each direction "
                "(the backward one on a reversed input) and concatenate"
            )
        super().__init__(
            LSTM,
            in_features,
            hidden_size,
            merge_outputs=merge_outputs,
            time_major=time_major,
            remat=remat,
            remat_chunk_size=remat_chunk_size,
            rngs=rngs,
            **lstm_options,
        )

    def _fused(self, x, fw_state, bw_state):
        fw, bw = self.weights()
        options = self.options.replace(time_major=True)
        return bidirectional_sequence_lstm(
            x, fw, bw, fw_state, bw_state, options=options, matmul_dtype=self.fw.matmul_dtype
        )

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "bidirectional_lstm") -> Ref:
        """Adds one BIDIRECTIONAL_SEQUENCE_LSTM over `x` to `builder`."""
        fw, bw = self.weights()
        # LiteRT offsets row b's state of a batch-major merged output by b * (n_fw_output +
        # n_bw_output) (lstm_eval.cc EvalFloat): merge in the op only when time-major.
        outputs = builder.add_bidirectional_lstm(x, fw, bw, self.options, merge_outputs=self.time_major, name=name)
        return self._add_merged(builder, outputs, name)


class SimpleRNN(_Direction):
    """TFLite UNIDIRECTIONAL_SEQUENCE_RNN as a Flax NNX layer.

    ``x: [B, T, in_features] -> [B, T, units]``, ``h' = act(W x + R h + b)``. Parameters
    ``input_weights`` [units, in_features], ``recurrent_weights`` [units, units] and
    ``bias`` [units] (`RNNWeights` fields); ``__call__`` runs
    `jaxlstm.ops.unidirectional_sequence_rnn` (with ``seq_lengths``, `lax.scan` of
    `jaxlstm.ops.rnn_cell`).

    Args:
      in_features: n_input.
      units: n_units.
      activation: schema activation name ("TANH", as Keras ``SimpleRNN``).
      time_major, remat, remat_chunk_size, rngs: as `LSTM`.

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> SimpleRNN(3, 4, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
    """

    _export_name = "simple_rnn"

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        activation: str = "TANH",
        time_major: bool = False,
        remat: bool = False,
        remat_chunk_size: int | None = None,
        rngs: nnx.Rngs,
    ):
        layer = type(self).__name__
        _check_sizes(layer, in_features=in_features, units=units)
        _check_option(
            layer,
            activation in RNN_ACTIVATIONS,
            f"activation={activation!r} is not a schema activation; use one of {RNN_ACTIVATIONS}",
        )
        _check_sizes(layer, remat_chunk_size=remat_chunk_size)
        self._init_layout(in_features, time_major, remat, remat_chunk_size)
        self.units = units
        self.output_size = units
        self.options = RNNOptions(fused_activation_function=activation, time_major=time_major)
        _set_params(self, _rnn_init(rngs.params(), in_features, units), RNN_PARAM_NAMES)

    def weights(self) -> RNNWeights:
        """The parameters as `RNNWeights`."""
        return RNNWeights(**_get_params(self, RNN_PARAM_NAMES))

    def _fused(self, x, weights, state):
        return unidirectional_sequence_rnn(x, weights, state, options=self.options.replace(time_major=True))

    def _cell(self, weights, dtype) -> Cell:
        return functools.partial(rnn_cell, weights=weights, options=self.options)

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "simple_rnn") -> Ref:
        """Adds one UNIDIRECTIONAL_SEQUENCE_RNN over `x` to `builder`."""
        return builder.add_rnn(x, self.weights(), self.options, name=name)


class BidirectionalRNN(_Bidirectional):
    """TFLite BIDIRECTIONAL_SEQUENCE_RNN as a Flax NNX layer (sub-layers ``fw``, ``bw``).

    ``x: [B, T, in_features] -> [B, T, 2 * units]``; arguments as `SimpleRNN`.

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> BidirectionalRNN(3, 4, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 3))).shape
      (2, 5, 8)
    """

    _export_name = "bidirectional_rnn"

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        merge_outputs: bool = True,
        activation: str = "TANH",
        time_major: bool = False,
        remat: bool = False,
        remat_chunk_size: int | None = None,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            SimpleRNN,
            in_features,
            units,
            merge_outputs=merge_outputs,
            time_major=time_major,
            remat=remat,
            remat_chunk_size=remat_chunk_size,
            rngs=rngs,
            activation=activation,
        )

    def _fused(self, x, fw_state, bw_state):
        fw, bw = self.weights()
        return bidirectional_sequence_rnn(x, fw, bw, fw_state, bw_state, options=self.options.replace(time_major=True))

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "bidirectional_rnn") -> Ref:
        """Adds one BIDIRECTIONAL_SEQUENCE_RNN over `x` to `builder`."""
        fw, bw = self.weights()
        outputs = builder.add_bidirectional_rnn(x, fw, bw, self.options, merge_outputs=True, name=name)
        return self._add_merged(builder, outputs, name)


class GRU(_Direction):
    """A GRU layer (Keras / PyTorch / Flax semantics) over `jaxlstm.ops.gru`.

    ``x: [B, T, in_features] -> [B, T, units]``. Parameters are named like the
    `GRUWeights` fields: ``input_to_{update,reset,candidate}_weights`` [units, in_features],
    ``recurrent_to_*_weights`` [units, units], ``*_gate_bias`` [units] and, with
    ``reset_after``, ``recurrent_*_gate_bias`` [units] (Keras' second bias row). With
    ``seq_lengths`` it scans `jaxlstm.ops.gru_cell`. `to_model` gives the
    model's GRU operator (`ModelBuilder.add_gru`, any length in JAX); TFLite has no GRU
    operator, so ``export_tflite(layer, time_steps=T)`` unrolls it over T steps.

    Args:
      in_features: n_input.
      units: n_units.
      reset_after: apply the reset gate after the recurrent matmul (Keras default,
        PyTorch, Flax) or before it (Keras ``reset_after=False``).
      activation: the candidate activation, one of `GRU_ACTIVATIONS` ("TANH").
      recurrent_activation: the gate activation, one of `GRU_ACTIVATIONS` ("SIGMOID").
      time_major, remat, remat_chunk_size, rngs: as `LSTM`.

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = GRU(3, 4, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5, 3))).shape
      (2, 5, 4)
      >>> layer.to_model().opcodes
      ['GRU']
    """

    _export_name = "gru"

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        reset_after: bool = True,
        activation: str = "TANH",
        recurrent_activation: str = "SIGMOID",
        time_major: bool = False,
        remat: bool = False,
        remat_chunk_size: int | None = None,
        rngs: nnx.Rngs,
    ):
        layer = type(self).__name__
        _check_sizes(layer, in_features=in_features, units=units, remat_chunk_size=remat_chunk_size)
        for name, value in (("activation", activation), ("recurrent_activation", recurrent_activation)):
            _check_option(
                layer, value in GRU_ACTIVATIONS, f"{name}={value!r} is not supported; use one of {GRU_ACTIVATIONS}"
            )
        self._init_layout(in_features, time_major, remat, remat_chunk_size)
        self.units = units
        self.output_size = units
        self.options = GRUOptions(
            reset_after=reset_after,
            activation=activation,
            recurrent_activation=recurrent_activation,
            time_major=time_major,
        )
        _set_params(self, _gru_init(rngs.params(), in_features, units, reset_after), GRU_PARAM_NAMES)

    def weights(self) -> GRUWeights:
        """The parameters as `GRUWeights`."""
        return GRUWeights(**_get_params(self, GRU_PARAM_NAMES))

    def _fused(self, x, weights, state):
        return gru(x, weights, state, options=self.options.replace(time_major=True))

    def _cell(self, weights, dtype) -> Cell:
        return functools.partial(gru_cell, weights=weights, options=self.options)

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "gru") -> Ref:
        """Adds one GRU operator over `x` to `builder`."""
        return builder.add_gru(x, self.weights(), self.options, name=name)


class BidirectionalGRU(_Bidirectional):
    """Two `GRU` sub-layers ``fw`` and ``bw``: ``x: [B, T, in_features] -> [B, T, 2 * units]``.

    The backward outputs are time-aligned with the input ([fw | bw], as PyTorch's
    ``bidirectional=True`` and Keras' ``Bidirectional`` with merge_mode "concat"); arguments
    as `GRU`, shared by both directions; exported as `GRU` is.

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> BidirectionalGRU(3, 4, rngs=nnx.Rngs(0))(jnp.ones((2, 5, 3))).shape
      (2, 5, 8)
    """

    _export_name = "bidirectional_gru"

    def __init__(
        self,
        in_features: int,
        units: int,
        *,
        merge_outputs: bool = True,
        time_major: bool = False,
        remat: bool = False,
        remat_chunk_size: int | None = None,
        rngs: nnx.Rngs,
        **gru_options: Any,
    ):
        super().__init__(
            GRU,
            in_features,
            units,
            merge_outputs=merge_outputs,
            time_major=time_major,
            remat=remat,
            remat_chunk_size=remat_chunk_size,
            rngs=rngs,
            **gru_options,
        )

    def _fused(self, x, fw_state, bw_state):
        fw, bw = self.weights()
        options = self.options.replace(time_major=True)
        fw_y, fw_final = gru(x, fw, fw_state, options=options)
        bw_y, bw_final = gru(x, bw, bw_state, options=options, reverse=True, keep_order=True)
        return (fw_y, bw_y), (fw_final, bw_final)

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "bidirectional_gru") -> Ref:
        """Adds both directions (two GRU operators) and their concatenation over `x` to `builder`."""
        fw, bw = self.weights()
        outputs = [
            builder.add_gru(x, fw, self.options, name=f"{name}/fw"),
            builder.add_gru(x, bw, self.options, reverse=True, keep_order=True, name=f"{name}/bw"),
        ]
        return self._add_merged(builder, outputs, name)
