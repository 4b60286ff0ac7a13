"""Flax NNX recurrent layers whose parameters are the weights of TFLite's fused ops.

Each layer keeps `nnx.Param`s named exactly like the fields of `LSTMWeights` / `RNNWeights`
/ `GRUWeights` (TFLite's tensor names) and its ``__call__`` runs the `jaxlstm.ops` function of the operator
it exports to, so a trained layer *is* the reference for its exported model::

    layer = LSTM(8, 64, rngs=nnx.Rngs(0))
    y = layer(x)                           # x: [B, T, 8] -> y: [B, T, 64]
    layer.weights()                        # LSTMWeights
    model = layer.to_model()               # one UNIDIRECTIONAL_SEQUENCE_LSTM, any batch and length
    jaxlstm.export_tflite(layer)           # .tflite: every invoke starts from zero state, any batch

Initialization follows Keras: the packed input kernel [n_input, G * n_cell] is glorot-uniform,
the packed recurrent kernel [n_output, G * n_cell] orthogonal, biases are zero except the
forget gate's, which is one with ``unit_forget_bias`` (G = 4 gates, 3 under CIFG); the
packed matrices are then split per gate and transposed to TFLite's [n_cell, k] layout.
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
steps (default ceil(sqrt(T))) and each chunk runs under `jax.checkpoint`, so training keeps
one state per chunk plus one chunk's activations instead of every step's (see
``experiments/remat_memory.py``). The outputs are the same.
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

from jaxlstm.model import Model, ModelBuilder, Ref
from jaxlstm.ops._activations import ACTIVATION_CODES
from jaxlstm.ops.gru import GRU_ACTIVATIONS, GRU_GATES, GRUOptions, GRUWeights, gru
from jaxlstm.ops.lstm import (
    GATES,
    LSTM_ACTIVATIONS,
    LSTMOptions,
    LSTMState,
    LSTMWeights,
    _check_matmul_dtype,
    bidirectional_sequence_lstm,
    lstm,
    unidirectional_sequence_lstm,
    zero_state,
)
from jaxlstm.ops.rnn import (
    RNNOptions,
    RNNWeights,
    bidirectional_sequence_rnn,
    rnn,
    unidirectional_sequence_rnn,
)

State = Any  # LSTMState, or the RNN hidden state [B, n_units]

# The tensors of one LSTM direction, in TFLite input order (weights and layer norm).
LSTM_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(LSTMWeights) if not f.name.startswith("aux_"))
RNN_PARAM_NAMES = ("input_weights", "recurrent_weights", "bias")
GRU_PARAM_NAMES = tuple(f.name for f in dataclasses.fields(GRUWeights))


# ----------------------------------------------------------------------------- running


@dataclasses.dataclass(frozen=True)
class _Family:
    """The ops of one recurrent family, all ``op(x, weights, state, *, options)``."""

    sequence_op: Callable  # [T, B, I] time-major -> ([T, B, O], state)
    step_op: Callable  # [B, I] -> ([B, O], state)
    zero_state: Callable[[Any, int], State]
    as_state: Callable[[Any], State]  # a user-given state (e.g. a tuple (h, c))

    def state(self, initial_state: Any) -> State | None:
        return None if initial_state is None else self.as_state(initial_state)

    def with_matmul_dtype(self, matmul_dtype) -> _Family:
        """The family with ``matmul_dtype`` passed to its sequence and step ops (LSTM)."""
        if matmul_dtype is None:
            return self
        return dataclasses.replace(
            self,
            sequence_op=functools.partial(self.sequence_op, matmul_dtype=matmul_dtype),
            step_op=functools.partial(self.step_op, matmul_dtype=matmul_dtype),
        )


_LSTM = _Family(unidirectional_sequence_lstm, lstm, zero_state, lambda s: LSTMState(*map(jnp.asarray, s)))
_RNN = _Family(
    unidirectional_sequence_rnn, rnn, lambda w, batch: jnp.zeros((batch, w.n_units), jnp.float32), jnp.asarray
)


def _gru_step(x_t: jax.Array, weights: GRUWeights, h: jax.Array, *, options: GRUOptions):
    """One GRU step [B, I] -> ([B, n_units], h'); `options` are time-major."""
    y, h = gru(x_t[None], weights, h, options=options)
    return y[0], h


_GRU = _Family(gru, _gru_step, _RNN.zero_state, jnp.asarray)


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


def _masked_sequence(family: _Family, weights, options, lengths: jax.Array):
    """A chunk runner that stops updating row b's state from step ``lengths[b]`` on."""

    def run(x: jax.Array, state: State, t0: jax.Array):
        def step(state, inputs):
            x_t, t = inputs
            y_t, new_state = family.step_op(x_t, weights, state, options=options)
            valid = (t < lengths)[:, None]
            new_state = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_state, state)
            return new_state, jnp.where(valid, y_t, 0.0)

        state, y = jax.lax.scan(step, state, (x, t0 + jnp.arange(x.shape[0])))
        return y, state

    return run


def run_direction(
    family: _Family,
    x: jax.Array,
    weights: Any,
    state: State | None,
    options: LSTMOptions | RNNOptions,
    *,
    seq_lengths: jax.Array | None = None,
    reverse: bool = False,
    remat_chunk_size: int | None = None,
) -> tuple[jax.Array, State]:
    """One direction over time-major `x` [T, B, I] -> (y [T, B, O], final state).

    Runs `family.sequence_op` (the fused op itself) when there are no lengths, otherwise
    a masked scan of `family.step_op`; `remat_chunk_size` checkpoints chunks of that many
    steps; `reverse` runs from each row's last valid step back to step 0.
    """
    options = options.replace(time_major=True)
    if state is None:
        state = family.zero_state(weights, x.shape[1])
    if reverse:
        x = flip_sequences(x, seq_lengths)
    if seq_lengths is None:

        def run(x_chunk, s, t0):
            return family.sequence_op(x_chunk, weights, s, options=options)
    else:
        run = _masked_sequence(family, weights, options, seq_lengths)

    if remat_chunk_size is None:
        y, state = run(x, state, jnp.int32(0))
    else:
        y, state = _run_in_chunks(jax.checkpoint(run), x, state, remat_chunk_size)
    if reverse:
        y = flip_sequences(y, seq_lengths)
    return y, state


def _run_in_chunks(run: Callable, x: jax.Array, state: State, chunk: int):
    """``run(x_chunk, state, t0)`` over consecutive chunks of `x` (the last may be shorter)."""
    T = x.shape[0]
    n_full = T // chunk
    ys = []
    if n_full:
        chunks = x[: n_full * chunk].reshape((n_full, chunk) + x.shape[1:])

        def body(s, inputs):
            x_chunk, t0 = inputs
            y, s = run(x_chunk, s, t0)
            return s, y

        state, y = jax.lax.scan(body, state, (chunks, jnp.arange(n_full, dtype=jnp.int32) * chunk))
        ys.append(y.reshape((n_full * chunk,) + y.shape[2:]))
    if T % chunk:
        y, state = run(x[n_full * chunk :], state, jnp.int32(n_full * chunk))
        ys.append(y)
    return jnp.concatenate(ys) if len(ys) > 1 else ys[0], state


# ----------------------------------------------------------------------------- initialization


def _split_gates(packed: jax.Array, n_gates: int) -> list[jax.Array]:
    """[k, G * n] (Keras layout) -> G matrices [n, k] (TFLite layout)."""
    return [block.T for block in jnp.split(packed, n_gates, axis=1)]


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
) -> dict[str, jax.Array | None]:
    """Keras-style initial values of one LSTM direction, by `LSTMWeights` field (None = absent)."""
    gates = GATES[1:] if use_cifg else GATES
    k_in, k_rec, k_proj, k_peep = jax.random.split(key, 4)
    glorot = jax.nn.initializers.glorot_uniform()
    kernel = glorot(k_in, (n_input, len(gates) * n_cell))
    recurrent = jax.nn.initializers.orthogonal()(k_rec, (n_output, len(gates) * n_cell))
    values: dict[str, jax.Array | None] = dict.fromkeys(LSTM_PARAM_NAMES)
    for gate, w, r in zip(gates, _split_gates(kernel, len(gates)), _split_gates(recurrent, len(gates))):
        values[f"input_to_{gate}_weights"] = w
        values[f"recurrent_to_{gate}_weights"] = r
        forget_one = gate == "forget" and unit_forget_bias
        values[f"{gate}_gate_bias"] = jnp.ones(n_cell) if forget_one else jnp.zeros(n_cell)
        if use_layer_norm:
            values[f"{gate}_layer_norm_coefficients"] = jnp.ones(n_cell)
    if use_peephole:
        limit = math.sqrt(3.0 / n_cell)
        for gate, k in zip(("input", "forget", "output"), jax.random.split(k_peep, 3)):
            if gate in gates:
                values[f"cell_to_{gate}_weights"] = jax.random.uniform(k, (n_cell,), minval=-limit, maxval=limit)
    if use_projection:
        values["projection_weights"] = glorot(k_proj, (n_cell, n_output)).T
        if use_projection_bias:
            values["projection_bias"] = jnp.zeros(n_output)
    return values


def _rnn_init(key: jax.Array, n_input: int, n_units: int) -> dict[str, jax.Array]:
    """Keras ``SimpleRNN`` initial values in TFLite layout."""
    k_in, k_rec = jax.random.split(key)
    return {
        "input_weights": jax.nn.initializers.glorot_uniform()(k_in, (n_input, n_units)).T,
        "recurrent_weights": jax.nn.initializers.orthogonal()(k_rec, (n_units, n_units)).T,
        "bias": jnp.zeros(n_units),
    }


def _gru_init(key: jax.Array, n_input: int, units: int, reset_after: bool) -> dict[str, jax.Array | None]:
    """Keras ``GRU`` initial values in TFLite layout (recurrent biases only with reset_after)."""
    k_in, k_rec = jax.random.split(key)
    kernel = jax.nn.initializers.glorot_uniform()(k_in, (n_input, 3 * units))
    recurrent = jax.nn.initializers.orthogonal()(k_rec, (units, 3 * units))
    values: dict[str, jax.Array | None] = dict.fromkeys(GRU_PARAM_NAMES)
    for gate, w, r in zip(GRU_GATES, _split_gates(kernel, 3), _split_gates(recurrent, 3)):
        values[f"input_to_{gate}_weights"] = w
        values[f"recurrent_to_{gate}_weights"] = r
        values[f"{gate}_gate_bias"] = jnp.zeros(units)
        if reset_after:
            values[f"recurrent_{gate}_gate_bias"] = jnp.zeros(units)
    return values


def _set_params(module: nnx.Module, values: dict[str, jax.Array | None]) -> None:
    for name, value in values.items():
        setattr(module, name, None if value is None else nnx.Param(jnp.asarray(value, jnp.float32)))


def _get_params(module: nnx.Module, names: tuple[str, ...]) -> dict[str, jax.Array]:
    return {n: getattr(module, n)[...] for n in names if getattr(module, n) is not None}


# ----------------------------------------------------------------------------- checks


def _check_option(layer: str, ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"{layer}: {message}")


def _check_input(layer: str, x: jax.Array, in_features: int, time_major: bool) -> None:
    layout = "[T, B, in_features]" if time_major else "[B, T, in_features]"
    if x.ndim != 3 or x.shape[-1] != in_features:
        raise ValueError(f"{layer}: input has shape {tuple(x.shape)}, expected {layout} with in_features={in_features}")


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


class _RecurrentLayer(nnx.Module, _Exportable):
    """Shared ``__call__`` of the recurrent layers; subclasses set the family and directions."""

    _family: _Family
    remat: bool = False
    remat_chunk_size: int | None = None

    def _init_common(self, in_features: int, time_major: bool, remat: bool, remat_chunk_size: int | None) -> None:
        """Sets the attributes shared by every layer."""
        self.in_features = in_features
        self.time_major = time_major
        self.remat = remat
        self.remat_chunk_size = remat_chunk_size

    def _chunk(self, T: int) -> int | None:
        if not self.remat:
            return None
        return self.remat_chunk_size or math.isqrt(max(T - 1, 0)) + 1  # ceil(sqrt(T))

    def _prepare(self, x: jax.Array, seq_lengths: jax.Array | None):
        layer = type(self).__name__
        _check_input(layer, x, self.in_features, self.time_major)
        x = _to_time_major(jnp.asarray(x), self.time_major)
        return x, _check_lengths(layer, seq_lengths, x.shape[1])

    def _direction(self, x, weights, state, seq_lengths, reverse=False):
        return run_direction(
            self._family,
            x,
            weights,
            state,
            self.options,
            seq_lengths=seq_lengths,
            reverse=reverse,
            remat_chunk_size=self._chunk(x.shape[0]),
        )


class _Unidirectional(_RecurrentLayer):
    """One direction: ``__call__`` runs the family's sequence op."""

    def weights(self):
        raise NotImplementedError

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
        x, seq_lengths = self._prepare(x, seq_lengths)
        weights = self.weights()
        initial_state = self._family.state(initial_state)
        if seq_lengths is None and not self.remat:  # exactly the exported op
            y, state = self._family.sequence_op(
                x, weights, initial_state, options=self.options.replace(time_major=True)
            )
        else:
            y, state = self._direction(x, weights, initial_state, seq_lengths)
        y = _to_time_major(y, self.time_major)
        return (y, state) if return_state else y


class _Bidirectional(_RecurrentLayer):
    """Forward and backward sub-layers ``fw`` and ``bw``; outputs concatenated [fw | bw]."""

    fw: _Unidirectional
    bw: _Unidirectional
    merge_outputs: bool = True

    def _init_directions(
        self,
        direction: type[_Unidirectional],
        in_features: int,
        size: int,
        /,
        *,
        merge_outputs: bool,
        time_major: bool,
        remat: bool,
        remat_chunk_size: int | None,
        rngs: nnx.Rngs,
        **options: Any,
    ) -> None:
        """Sets the shared attributes and builds the ``fw`` and ``bw`` sub-layers alike."""
        self._init_common(in_features, time_major, remat, remat_chunk_size)
        self.merge_outputs = merge_outputs
        kwargs = dict(time_major=time_major, remat=remat, remat_chunk_size=remat_chunk_size, rngs=rngs, **options)
        self.fw = direction(in_features, size, **kwargs)
        self.bw = direction(in_features, size, **kwargs)
        self.output_size = 2 * self.fw.output_size

    def weights(self) -> tuple[Any, Any]:
        """(fw, bw) weights."""
        return self.fw.weights(), self.bw.weights()

    @property
    def options(self):
        return self.fw.options

    def _bidirectional_op(self, x, fw_w, bw_w, fw_state, bw_state, options):
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
        x, seq_lengths = self._prepare(x, seq_lengths)
        fw_w, bw_w = self.weights()
        fw_s, bw_s = map(self._family.state, initial_state or (None, None))
        if seq_lengths is None and not self.remat:  # exactly the exported op
            (fw_y, bw_y), states = self._bidirectional_op(
                x, fw_w, bw_w, fw_s, bw_s, self.options.replace(time_major=True)
            )
        else:
            fw_y, fw_final = self._direction(x, fw_w, fw_s, seq_lengths)
            bw_y, bw_final = self._direction(x, bw_w, bw_s, seq_lengths, reverse=True)
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


class LSTM(_Unidirectional):
    """TFLite UNIDIRECTIONAL_SEQUENCE_LSTM as a Flax NNX layer.

    ``x: [B, T, in_features] -> y: [B, T, n_output]`` with n_output = `projection_size` or
    `hidden_size`. Parameters are named like the `LSTMWeights` fields (absent optional
    tensors are None attributes); ``__call__`` runs `jaxlstm.ops.unidirectional_sequence_lstm`.

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

    @property
    def _family(self) -> _Family:
        return _LSTM.with_matmul_dtype(self.matmul_dtype)

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
        _check_lstm_options(
            layer,
            in_features,
            hidden_size,
            projection_size,
            use_projection_bias,
            cell_clip,
            proj_clip,
            activation,
            remat_chunk_size,
        )
        _check_matmul_dtype(layer, matmul_dtype, ())
        self._init_common(in_features, time_major, remat, remat_chunk_size)
        self.matmul_dtype = None if matmul_dtype is None else jnp.dtype(matmul_dtype)
        self.hidden_size = hidden_size
        self.output_size = projection_size or hidden_size
        self.options = LSTMOptions(
            fused_activation_function=activation,
            cell_clip=float(cell_clip),
            proj_clip=float(proj_clip),
            time_major=time_major,
        )
        _set_params(
            self,
            _lstm_init(
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
            ),
        )

    def weights(self) -> LSTMWeights:
        """The parameters as `LSTMWeights` (the op's constant tensors)."""
        return LSTMWeights(**_get_params(self, LSTM_PARAM_NAMES))

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "lstm") -> Ref:
        """Adds one UNIDIRECTIONAL_SEQUENCE_LSTM over `x` to `builder`."""
        return builder.add_lstm(x, self.weights(), self.options, name=name)


class BidirectionalLSTM(_Bidirectional):
    """TFLite BIDIRECTIONAL_SEQUENCE_LSTM as a Flax NNX layer (exports to that one op).

    ``x: [B, T, in_features] -> [B, T, 2 * n_output]`` ([fw | bw]). Two `LSTM` sub-layers
    ``fw`` and ``bw`` hold the parameters (``fw.input_to_forget_weights`` is TFLite's
    ``fw_input_to_forget_weights``); ``__call__`` runs
    `jaxlstm.ops.bidirectional_sequence_lstm`. Arguments as `LSTM`, shared by both
    directions; layer norm is not available (the op has no layer-norm inputs).

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = BidirectionalLSTM(3, 4, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((2, 5, 3))).shape
      (2, 5, 8)
    """

    _export_name = "bidirectional_lstm"

    @property
    def _family(self) -> _Family:
        return self.fw._family

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
        self._init_directions(
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

    def _bidirectional_op(self, x, fw_w, bw_w, fw_state, bw_state, options):
        return bidirectional_sequence_lstm(
            x, fw_w, bw_w, fw_state, bw_state, options=options, matmul_dtype=self.fw.matmul_dtype
        )

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "bidirectional_lstm") -> Ref:
        """Adds one BIDIRECTIONAL_SEQUENCE_LSTM over `x` to `builder`."""
        fw, bw = self.weights()
        # LiteRT mis-addresses the state of batch-major merged outputs (SPEC_TFLITE_OPS §4):
        # merge in the op only when time-major.
        outputs = builder.add_bidirectional_lstm(x, fw, bw, self.options, merge_outputs=self.time_major, name=name)
        return self._add_merged(builder, outputs, name)


class SimpleRNN(_Unidirectional):
    """TFLite UNIDIRECTIONAL_SEQUENCE_RNN as a Flax NNX layer.

    ``x: [B, T, in_features] -> [B, T, units]``, ``h' = act(W x + R h + b)``. Parameters
    ``input_weights`` [units, in_features], ``recurrent_weights`` [units, units] and
    ``bias`` [units] (`RNNWeights` fields); ``__call__`` runs
    `jaxlstm.ops.unidirectional_sequence_rnn`.

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

    _family = _RNN
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
            activation in ACTIVATION_CODES,
            f"activation={activation!r} is not a schema activation; use one of {tuple(ACTIVATION_CODES)}",
        )
        _check_sizes(layer, remat_chunk_size=remat_chunk_size)
        self._init_common(in_features, time_major, remat, remat_chunk_size)
        self.units = units
        self.output_size = units
        self.options = RNNOptions(fused_activation_function=activation, time_major=time_major)
        _set_params(self, _rnn_init(rngs.params(), in_features, units))

    def weights(self) -> RNNWeights:
        """The parameters as `RNNWeights`."""
        return RNNWeights(**_get_params(self, RNN_PARAM_NAMES))

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

    _family = _RNN
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
        self._init_directions(
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

    def _bidirectional_op(self, x, fw_w, bw_w, fw_state, bw_state, options):
        return bidirectional_sequence_rnn(x, fw_w, bw_w, fw_state, bw_state, options=options)

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "bidirectional_rnn") -> Ref:
        """Adds one BIDIRECTIONAL_SEQUENCE_RNN over `x` to `builder`."""
        fw, bw = self.weights()
        outputs = builder.add_bidirectional_rnn(x, fw, bw, self.options, merge_outputs=True, name=name)
        return self._add_merged(builder, outputs, name)


class GRU(_Unidirectional):
    """A GRU layer (Keras / PyTorch / Flax semantics) over `jaxlstm.ops.gru`.

    ``x: [B, T, in_features] -> [B, T, units]``. Parameters are named like the
    `GRUWeights` fields: ``input_to_{update,reset,candidate}_weights`` [units, in_features],
    ``recurrent_to_*_weights`` [units, units], ``*_gate_bias`` [units] and, with
    ``reset_after``, ``recurrent_*_gate_bias`` [units] (Keras' second bias row). `to_model`
    gives the model's GRU operator (`ModelBuilder.add_gru`, any length in JAX); TFLite has
    no GRU operator, so ``export_tflite(layer, time_steps=T)`` unrolls it over T steps.

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

    _family = _GRU
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
        self._init_common(in_features, time_major, remat, remat_chunk_size)
        self.units = units
        self.output_size = units
        self.options = GRUOptions(
            reset_after=reset_after,
            activation=activation,
            recurrent_activation=recurrent_activation,
            time_major=time_major,
        )
        _set_params(self, _gru_init(rngs.params(), in_features, units, reset_after))

    def weights(self) -> GRUWeights:
        """The parameters as `GRUWeights`."""
        return GRUWeights(**_get_params(self, GRU_PARAM_NAMES))

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

    _family = _GRU
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
        self._init_directions(
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

    def _bidirectional_op(self, x, fw_w, bw_w, fw_state, bw_state, options):
        fw_y, fw_h = gru(x, fw_w, fw_state, options=options)
        bw_y, bw_h = gru(x, bw_w, bw_state, options=options, reverse=True, keep_order=True)
        return (fw_y, bw_y), (fw_h, bw_h)

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "bidirectional_gru") -> Ref:
        """Adds both directions (two GRU operators) and their concatenation over `x` to `builder`."""
        fw, bw = self.weights()
        outputs = [
            builder.add_gru(x, fw, self.options, name=f"{name}/fw"),
            builder.add_gru(x, bw, self.options, reverse=True, keep_order=True, name=f"{name}/bw"),
        ]
        return self._add_merged(builder, outputs, name)


# ----------------------------------------------------------------------------- option checks


def _check_sizes(layer: str, **sizes: int | None) -> None:
    for name, value in sizes.items():
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"{layer}: {name}={value!r} must be a positive int")


def _check_lstm_options(
    layer,
    in_features,
    hidden_size,
    projection_size,
    use_projection_bias,
    cell_clip,
    proj_clip,
    activation,
    remat_chunk_size,
) -> None:
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
        _check_option(layer, proj_clip == 0, f"proj_clip={proj_clip} needs projection_size (it clips the projection)")
