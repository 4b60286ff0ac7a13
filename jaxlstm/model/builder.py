"""`ModelBuilder`: assemble a `Model` from op weights, layer by layer.

Converters and Flax modules use it to describe a network as TFLite fused ops:

    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, 8))               # [batch, time, features]
    h = b.add_lstm(x, weights, LSTMOptions(), name="lstm")
    h = b.add_last_time_step(h)
    y = b.add_fully_connected(h, kernel, bias, name="dense")
    y = b.add_softmax(y)
    model = b.build([y])

Tensor names are ``<layer name>/<TFLite tensor name>`` (e.g. ``lstm/input_to_forget_weights``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxlstm.model.graph import Model, Operator, Subgraph, Tensor, options_tuple
from jaxlstm.model.kernels import gru_options
from jaxlstm.model.operators import (
    GRU,
    GRU_WEIGHT_INPUTS,
    LSTM_DIRECTION_INPUTS,
    LSTM_LAYER_NORM_INPUTS,
    NO_TENSOR,
    OPERATORS,
    RNN_WEIGHT_INPUTS,
)
from jaxlstm.model.rewrite import prune_unused_tensors
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.gru import GRUOptions, GRUWeights
from jaxlstm.ops.gru import check_weights as check_gru_weights
from jaxlstm.ops.lstm import GATES, LSTMOptions, LSTMWeights
from jaxlstm.ops.lstm_integer import LSTMQuantization, QuantParams
from jaxlstm.ops.rnn import RNNOptions, RNNWeights


@dataclasses.dataclass(frozen=True)
class Ref:
    """A tensor handle inside a `ModelBuilder`: its index and shape (-1 = dynamic)."""

    index: int
    shape: tuple[int, ...]


class ModelBuilder:
    """Builds a `Model` one operator at a time (see the module docstring).

    Args:
      batch_size: the batch of the state (variable) tensors when the input batch is
        dynamic (-1); None (default) keeps them dynamic too, so the exporter writes
        shape_signature [-1, n] and `Model.init_state(batch)` sizes them.
    """

    def __init__(self, batch_size: int | None = None):
        self.batch_size = batch_size
        self._tensors: list[Tensor] = []
        self._operators: list[Operator] = []
        self._constants: dict[int, Any] = {}
        self._inputs: list[int] = []

    @classmethod
    def extending(cls, model: Model) -> ModelBuilder:
        """A builder that holds `model`'s tensors, constants and inputs (not its operators), for
        rewrites that add operators over the model's own tensors; `rebuild` returns the result."""
        b = cls()
        b._tensors, b._constants, b._inputs = list(model.tensors), model.constants, list(model.inputs)
        return b

    def pop_operators(self) -> list[Operator]:
        """The operators added so far, removed from the builder (a rewrite places them itself)."""
        operators, self._operators = self._operators, []
        return operators

    def rebuild(self, model: Model, operators: list[Operator]) -> Model:
        """`model` with this builder's tensors and constants and the main subgraph's
        `operators` (tensor indices unchanged: unused tensors stay until `prune_unused_tensors`)."""
        return model.replace(tensors=self._tensors, operators=operators, constants=self._constants)

    # -- tensors -------------------------------------------------------------------------

    def _unique(self, name: str) -> str:
        taken = {t.name for t in self._tensors}
        candidate, k = name, 1
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        return candidate

    def _add_tensor(self, tensor: Tensor, value: Any = None) -> Ref:
        tensor = dataclasses.replace(tensor, name=self._unique(tensor.name))
        self._tensors.append(tensor)
        index = len(self._tensors) - 1
        if value is not None:
            self._constants[index] = value
        return Ref(index, tensor.shape)

    def add_input(
        self, name: str, shape: tuple[int, ...], dtype: str = "float32", quantization: QuantParams | None = None
    ) -> Ref:
        """A subgraph input; -1 marks a dynamic dimension. Integer inputs take their
        `quantization` (scale, zero point)."""
        scale, zero_point = (None, 0) if quantization is None else quantization
        ref = self._add_tensor(Tensor(name, tuple(shape), dtype, scale, zero_point))
        self._inputs.append(ref.index)
        return ref

    def add_constant(self, name: str, value: Any) -> Ref:
        """A constant tensor: a float/int array or a `QuantizedTensor` (integer weights or
        biases; a per-channel scale broadcasts against the values, e.g. [n_out, 1])."""
        if isinstance(value, QuantizedTensor):
            scale = np.asarray(value.scale, np.float32)
            scale = float(scale.ravel()[0]) if scale.size == 1 else tuple(scale.ravel().tolist())
            dtype = np.asarray(value.values).dtype.name
            return self._add_tensor(Tensor(name, value.shape, dtype, scale=scale), value)
        value = np.asarray(value)
        return self._add_tensor(Tensor(name, value.shape, value.dtype.name), value)

    def add_variable(
        self, name: str, shape: tuple[int, ...], dtype: str = "float32", quantization: QuantParams | None = None
    ) -> Ref:
        """A variable tensor (LSTM/RNN state), initially real zero."""
        scale, zero_point = (None, 0) if quantization is None else quantization
        return self._add_tensor(Tensor(name, tuple(shape), dtype, scale, zero_point, is_variable=True))

    def add_intermediate(
        self, name: str, shape: tuple[int, ...], dtype: str = "float32", quantization: QuantParams | None = None
    ) -> Ref:
        scale, zero_point = (None, 0) if quantization is None else quantization
        return self._add_tensor(Tensor(name, tuple(shape), dtype, scale, zero_point))

    def add_operator(
        self,
        opcode: str,
        inputs: list[Ref | None],
        outputs: list[Ref],
        intermediates: tuple[Ref, ...] = (),
        **options,
    ) -> None:
        self._operators.append(
            Operator(
                opcode,
                tuple(NO_TENSOR if r is None else r.index for r in inputs),
                tuple(r.index for r in outputs),
                options_tuple(options),
                tuple(r.index for r in intermediates),
            )
        )

    def _weights(self, prefix: str, weights: Any, names: tuple[str, ...]) -> list[Ref | None]:
        return [
            None if getattr(weights, n, None) is None else self.add_constant(f"{prefix}/{n}", getattr(weights, n))
            for n in names
        ]

    def _batch_time(self, x: Ref, time_major: bool) -> tuple[int, int]:
        b, t = x.shape[0], x.shape[1]
        return (t, b) if time_major else (b, t)

    def _state_batch(self, batch: int) -> int:
        return self.batch_size if batch < 0 and self.batch_size is not None else batch

    # -- recurrent layers ----------------------------------------------------------------

    def add_lstm(
        self,
        x: Ref,
        weights: LSTMWeights,
        options: LSTMOptions,
        name: str = "lstm",
        quantization: LSTMQuantization | None = None,
    ) -> Ref:
        """UNIDIRECTIONAL_SEQUENCE_LSTM over `x` [B, T, I] (or [T, B, I]); returns the sequence.

        With `quantization`, a fully integer LSTM: `weights` integer (see
        `jaxlstm.ops.lstm_integer`), `x` an integer input quantized as
        ``quantization.input``; states, output and intermediates take their quantization.
        """
        batch, _ = self._batch_time(x, options.time_major)
        return self._lstm_op(
            "UNIDIRECTIONAL_SEQUENCE_LSTM",
            x,
            batch,
            weights,
            name,
            quantization,
            **_lstm_option_dict(options),
            time_major=options.time_major,
            diagonal_recurrent_tensors=len(weights.recurrent_to_output_weights.shape) == 1,
        )

    def add_lstm_cell(
        self,
        x: Ref,
        weights: LSTMWeights,
        options: LSTMOptions,
        name: str = "lstm_cell",
        quantization: LSTMQuantization | None = None,
    ) -> Ref:
        """LSTM (FULL kernel): one step over `x` [B, I]; returns h [B, n_output]. See
        `add_lstm` for `quantization`."""
        return self._lstm_op("LSTM", x, x.shape[0], weights, name, quantization, **_lstm_option_dict(options))

    def _lstm_op(
        self,
        opcode: str,
        x: Ref,
        batch: int,
        weights: LSTMWeights,
        name: str,
        quantization: LSTMQuantization | None,
        **options,
    ) -> Ref:
        sb = self._state_batch(batch)
        w = self._weights(name, weights, LSTM_DIRECTION_INPUTS)
        q = quantization
        activations = "float32" if q is None else self._tensors[x.index].dtype
        h = self.add_variable(
            f"{name}/output_state", (sb, weights.n_output), activations, None if q is None else q.output_state
        )
        c = self.add_variable(
            f"{name}/cell_state", (sb, weights.n_cell), "float32" if q is None else "int16", _cell_quantization(q)
        )
        ln = self._weights(name, weights, LSTM_LAYER_NORM_INPUTS)
        y = self.add_intermediate(
            f"{name}/output", x.shape[:-1] + (weights.n_output,), activations, None if q is None else q.output
        )
        intermediates = () if q is None else tuple(self._lstm_intermediates(name, q))
        self.add_operator(opcode, [x, *w, h, c, *ln], [y], intermediates, **options)
        return y

    def _lstm_intermediates(self, name: str, q: LSTMQuantization) -> list[Ref]:
        """An integer LSTM's intermediate tensors: shape [0], no buffer (TFLite Micro refuses
        others). The gates' are int16 when quantized, else unquantized float32 placeholders
        (as the converter writes them); the hidden's int8."""
        refs = []
        for k, params in enumerate(q.intermediates):
            dtype = "int8" if k == 4 else "int16" if params is not None else "float32"
            refs.append(self.add_intermediate(f"{name}/intermediate_{k}", (0,), dtype, params))
        return refs

    def add_basic_lstm_cell(self, x: Ref, weights: Any, bias: Any, name: str = "basic_lstm_cell") -> Ref:
        """LSTM with kernel_type BASIC over `x` [B, I]: `weights` [4D, I + D], `bias` [4D]
        (blocks: input gate, candidate, forget gate, output gate); returns h [B, D]."""
        depth = int(np.shape(bias)[0]) // 4
        sb = self._state_batch(x.shape[0])
        h = self.add_variable(f"{name}/prev_activation", (sb, depth))
        w = self.add_constant(f"{name}/weights", weights)
        b = self.add_constant(f"{name}/bias", bias)
        c = self.add_variable(f"{name}/prev_state", (sb, depth))
        outs = [
            self.add_intermediate(f"{name}/{n}", (x.shape[0], d))
            for n, d in (
                ("activation", depth),
                ("state", depth),
                ("concat_temp", x.shape[-1] + depth),
                ("activation_temp", 4 * depth),
            )
        ]
        self.add_operator(
            "LSTM",
            [x, h, w, b, c],
            outs,
            fused_activation_function="TANH",
            cell_clip=0.0,
            proj_clip=0.0,
            kernel_type="BASIC",
        )
        return outs[0]

    def add_bidirectional_lstm(
        self,
        x: Ref,
        fw: LSTMWeights,
        bw: LSTMWeights,
        options: LSTMOptions,
        merge_outputs: bool = True,
        name: str = "bidirectional_lstm",
        aux_input: Ref | None = None,
    ) -> list[Ref]:
        """One BIDIRECTIONAL_SEQUENCE_LSTM; returns [merged] or [fw, bw] sequences.

        `aux_input` (same layout as `x`) is read through the ``aux_input_to_*`` weights of
        `fw`/`bw` when they have them (cross-linking), else it is the backward input.
        """
        batch, _ = self._batch_time(x, options.time_major)
        sb = self._state_batch(batch)
        direction = LSTM_DIRECTION_INPUTS
        w_fw = self._weights(f"{name}/fw", fw, direction)
        w_bw = self._weights(f"{name}/bw", bw, direction)
        aux_names = tuple(f"aux_input_to_{g}_weights" for g in GATES)
        aux = [aux_input, *self._weights(f"{name}/fw", fw, aux_names), *self._weights(f"{name}/bw", bw, aux_names)]
        states = [
            self.add_variable(f"{name}/{d}_{s}", (sb, n))
            for d, w in (("fw", fw), ("bw", bw))
            for s, n in (("output_state", w.n_output), ("cell_state", w.n_cell))
        ]
        if merge_outputs:
            outs = [self.add_intermediate(f"{name}/output", x.shape[:2] + (fw.n_output + bw.n_output,))]
        else:
            outs = [
                self.add_intermediate(f"{name}/{d}_output", x.shape[:2] + (w.n_output,))
                for d, w in (("fw", fw), ("bw", bw))
            ]
        self.add_operator(
            "BIDIRECTIONAL_SEQUENCE_LSTM",
            [x, *w_fw, *w_bw, *states, *aux],
            outs,
            **_lstm_option_dict(options),
            merge_outputs=merge_outputs,
            time_major=options.time_major,
        )
        return outs

    def add_rnn(self, x: Ref, weights: RNNWeights, options: RNNOptions, name: str = "rnn") -> Ref:
        """UNIDIRECTIONAL_SEQUENCE_RNN over `x`; returns the sequence."""
        batch, _ = self._batch_time(x, options.time_major)
        return self._rnn_op("UNIDIRECTIONAL_SEQUENCE_RNN", x, batch, weights, name, **_rnn_option_dict(options))

    def add_rnn_cell(self, x: Ref, weights: RNNWeights, options: RNNOptions, name: str = "rnn_cell") -> Ref:
        """RNN: one step over `x` [B, I]; returns h [B, n_units]."""
        return self._rnn_op(
            "RNN",
            x,
            x.shape[0],
            weights,
            name,
            fused_activation_function=options.fused_activation_function,
            asymmetric_quantize_inputs=options.asymmetric_quantize_inputs,
        )

    def _rnn_op(self, opcode: str, x: Ref, batch: int, weights: RNNWeights, name: str, **options) -> Ref:
        w = self._weights(name, weights, RNN_WEIGHT_INPUTS)
        h = self.add_variable(f"{name}/hidden_state", (self._state_batch(batch), weights.n_units))
        y = self.add_intermediate(f"{name}/output", x.shape[:-1] + (weights.n_units,))
        self.add_operator(opcode, [x, *w, h], [y], **options)
        return y

    def add_bidirectional_rnn(
        self,
        x: Ref,
        fw: RNNWeights,
        bw: RNNWeights,
        options: RNNOptions,
        merge_outputs: bool = True,
        name: str = "bidirectional_rnn",
        aux_input: Ref | None = None,
    ) -> list[Ref]:
        """One BIDIRECTIONAL_SEQUENCE_RNN; returns [merged] or [fw, bw] sequences.

        `aux_input` is used as in `add_bidirectional_lstm` (``aux_input_weights``).
        """
        batch, _ = self._batch_time(x, options.time_major)
        sb = self._state_batch(batch)
        refs = []
        for d, w in (("fw", fw), ("bw", bw)):
            refs += self._weights(f"{name}/{d}", w, RNN_WEIGHT_INPUTS)
            refs.append(self.add_variable(f"{name}/{d}_hidden_state", (sb, w.n_units)))
        if merge_outputs:
            outs = [self.add_intermediate(f"{name}/output", x.shape[:2] + (fw.n_units + bw.n_units,))]
        else:
            outs = [
                self.add_intermediate(f"{name}/{d}_output", x.shape[:2] + (w.n_units,))
                for d, w in (("fw", fw), ("bw", bw))
            ]
        aux = [
            aux_input,
            *(self._weights(f"{name}/{d}", w, ("aux_input_weights",))[0] for d, w in (("fw", fw), ("bw", bw))),
        ]
        self.add_operator(
            "BIDIRECTIONAL_SEQUENCE_RNN",
            [x, *refs, *aux],
            outs,
            **_rnn_option_dict(options),
            merge_outputs=merge_outputs,
        )
        return outs

    # -- glue ----------------------------------------------------------------------------

    def add_last_time_step(self, x: Ref, time_major: bool = False, name: str = "last_step") -> Ref:
        """STRIDED_SLICE taking the last time step: [B, T, F] -> [B, F]."""
        return self.add_time_step(x, -1, time_major, name)

    def add_time_step(self, x: Ref, index: int, time_major: bool = False, name: str = "time_step") -> Ref:
        """STRIDED_SLICE taking time step `index` (negative counts from the end): [B, T, F] -> [B, F]."""
        rank = len(x.shape)
        t_axis = 0 if time_major else 1
        begin = np.zeros(rank, np.int32)
        begin[t_axis] = index
        end = np.zeros(rank, np.int32)
        end[t_axis] = index + 1  # ignored under shrink_axis_mask; kept consistent
        strides = np.ones(rank, np.int32)
        refs = [self.add_constant(f"{name}/{n}", v) for n, v in (("begin", begin), ("end", end), ("strides", strides))]
        all_bits = (1 << rank) - 1
        out_shape = tuple(d for a, d in enumerate(x.shape) if a != t_axis)
        y = self.add_intermediate(f"{name}/output", out_shape)
        self.add_operator(
            "STRIDED_SLICE",
            [x, *refs],
            [y],
            begin_mask=all_bits & ~(1 << t_axis),
            end_mask=all_bits & ~(1 << t_axis),
            shrink_axis_mask=1 << t_axis,
            ellipsis_mask=0,
            new_axis_mask=0,
            offset=False,
        )
        return y

    def add_reverse(self, x: Ref, axis: int, name: str = "reverse") -> Ref:
        """REVERSE_V2 along `axis`."""
        a = self.add_constant(f"{name}/axis", np.asarray([axis], np.int32))
        y = self.add_intermediate(f"{name}/output", x.shape)
        self.add_operator("REVERSE_V2", [x, a], [y])
        return y

    def add_concatenation(self, xs: list[Ref], axis: int = -1, name: str = "concat") -> Ref:
        """CONCATENATION of `xs` along `axis`."""
        rank = len(xs[0].shape)
        axis = axis % rank
        size = sum(r.shape[axis] for r in xs) if all(r.shape[axis] >= 0 for r in xs) else -1
        shape = xs[0].shape[:axis] + (size,) + xs[0].shape[axis + 1 :]
        y = self.add_intermediate(f"{name}/output", shape)
        self.add_operator("CONCATENATION", list(xs), [y], axis=axis, fused_activation_function="NONE")
        return y

    def add_binary(self, opcode: str, a: Ref, b: Ref, name: str) -> Ref:
        """ADD / MUL / SUB of two tensors of one shape."""
        y = self.add_intermediate(f"{name}/output", a.shape)
        self.add_operator(opcode, [a, b], [y], fused_activation_function="NONE")
        return y

    def add_fully_connected(
        self,
        x: Ref,
        kernel: Any,
        bias: Any | None,
        activation: str = "NONE",
        name: str = "dense",
    ) -> Ref:
        """FULLY_CONNECTED on the last axis; `kernel` is [n_out, n_in] (TFLite layout)."""
        w = self.add_constant(f"{name}/weights", kernel)
        b = None if bias is None else self.add_constant(f"{name}/bias", bias)
        return self._fully_connected(x, w, b, activation, name)

    def add_softmax(self, x: Ref, beta: float = 1.0, name: str = "softmax") -> Ref:
        y = self.add_intermediate(f"{name}/output", x.shape)
        self.add_operator("SOFTMAX", [x], [y], beta=beta)
        return y

    def build(
        self, outputs: list[Ref], output_names: list[str] | None = None, subgraphs: list[Subgraph] | tuple = ()
    ) -> Model:
        """The finished `Model`; `output_names` renames the output tensors. `subgraphs` are
        the subgraphs 1, 2, ... that operators call by index (`build_subgraph`)."""
        tensors = list(self._tensors)
        for ref, new in zip(outputs, output_names or []):
            tensors[ref.index] = dataclasses.replace(tensors[ref.index], name=new)
        return Model(
            tensors, self._operators, self._inputs, [r.index for r in outputs], self._constants, subgraphs=subgraphs
        )

    def build_subgraph(self, outputs: list[Ref], name: str = "") -> Subgraph:
        """The built operators as a `Subgraph` that another operator calls (e.g. a WHILE's
        cond or body, whose inputs are the `add_input` tensors and outputs `outputs`)."""
        return Subgraph(self._tensors, self._operators, self._inputs, [r.index for r in outputs], self._constants, name)

    # -- GRU ---------------------------------------------------------------------------

    def add_gru(
        self,
        x: Ref,
        weights: GRUWeights,
        options: GRUOptions,
        *,
        reverse: bool = False,
        keep_order: bool = False,
        return_sequences: bool = True,
        runtime_recurrent_weights: bool = False,
        name: str = "gru",
    ) -> Ref:
        """A GRU layer (`jaxlstm.ops.gru`): one ``GRU`` operator, which runs at any length in JAX.

        TFLite has no GRU operator: `export_tflite` unrolls it into builtin operators over
        a fixed number of steps (`unroll_gru`), the input's static time length or the
        export's ``time_steps``. The state h is the variable tensor ``<name>/hidden_state``.

        Args:
          x: [B, T, I] (or [T, B, I] if ``options.time_major``).
          weights: `GRUWeights` (one direction); tensors ``<name>/<field>``.
          options: `GRUOptions`.
          reverse, keep_order: as in `jaxlstm.ops.gru` (a bidirectional layer is
            ``add_gru(x, fw)``, ``add_gru(x, bw, reverse=True, keep_order=True)`` and
            `add_concatenation`).
          return_sequences: return the sequence [B, T, H]; else h_T [B, H].
          runtime_recurrent_weights: for the export: feed the T recurrent FULLY_CONNECTEDs
            one runtime copy of the recurrent matrices (a CONCATENATION per invoke) instead
            of the constants. XNNPACK, LiteRT's default CPU delegate, packs constant weights
            once per operator, i.e. T copies, which thrashes the cache for large T * H (see
            experiments/bench_gru.py); a runtime tensor is used in place. Costs one copy of
            the recurrent weights in RAM per invoke and keeps them float under dynamic-range
            quantization; leave False for TFLite Micro (weights in flash).
          name: prefix of the tensor names.

        Returns:
          The output sequence in x's layout, or h_T.
        """
        batch, _ = self._batch_time(x, options.time_major)
        check_gru_weights(f"add_gru {name!r}", weights, options, x.shape[-1])
        units = weights.n_units
        w = self._weights(name, weights, GRU_WEIGHT_INPUTS)
        h = self.add_variable(f"{name}/hidden_state", (self._state_batch(batch), units))
        y = self.add_intermediate(f"{name}/output", x.shape[:-1] + (units,) if return_sequences else (batch, units))
        self.add_operator(
            GRU,
            [x, *w, h],
            [y],
            reset_after=options.reset_after,
            activation=options.activation,
            recurrent_activation=options.recurrent_activation,
            time_major=options.time_major,
            reverse=reverse,
            keep_order=keep_order,
            return_sequences=return_sequences,
            runtime_recurrent_weights=runtime_recurrent_weights,
        )
        return y

    def _unroll_gru(self, position: int, op: Operator, time_steps: int | None, stateful: bool) -> None:
        """Appends the builtin operators of GRU operator `op` (see `unroll_gru`)."""
        inputs = OPERATORS[GRU].named_inputs(op)
        x, h_state, out = (
            Ref(i, self._tensors[i].shape) for i in (inputs["input"], inputs["hidden_state"], op.outputs[0])
        )
        options = gru_options(op)
        name = self._tensors[h_state.index].name.rpartition("/")[0] or "gru"
        weights = GRUWeights(**{n: self._constants[i] for n, i in inputs.items() if n in GRU_WEIGHT_INPUTS})
        _, time = self._batch_time(x, options.time_major)
        where = f"operator {position} (GRU {name!r})"
        if time >= 0 and time_steps is not None and time != time_steps:
            raise ValueError(
                f"{where}: its input has {time} time steps (shape {list(x.shape)}), not time_steps={time_steps}"
            )
        if time < 0:
            if time_steps is None:
                raise ValueError(
                    f"{where}: its input {self._tensors[x.index].name!r} has a dynamic time dimension "
                    f"(shape {list(x.shape)}); TFLite has no GRU operator, so the export unrolls it over a "
                    "fixed number of steps: pass export_tflite(..., time_steps=T) (jaxlstm convert --time-steps T)"
                )
            time = time_steps
        units, t_axis = weights.n_units, 0 if options.time_major else 1

        def constant(suffix: str, fields: list[str]) -> Ref | None:
            values = [getattr(weights, f) for f in fields]
            if all(v is None for v in values):
                return None
            values = [np.zeros(units, np.float32) if v is None else np.asarray(v, np.float32) for v in values]
            return self.add_constant(f"{name}/{suffix}", np.concatenate(values))

        zr = ("update", "reset")
        w_zr = constant("input_to_update_reset_weights", [f"input_to_{g}_weights" for g in zr])
        b_zr = constant("update_reset_gate_bias", [f"{g}_gate_bias" for g in zr])
        w_n = constant("input_to_candidate_weights", ["input_to_candidate_weights"])
        b_n = constant("candidate_gate_bias", ["candidate_gate_bias"])
        r_zr = constant("recurrent_to_update_reset_weights", [f"recurrent_to_{g}_weights" for g in zr])
        rb_zr = constant("recurrent_update_reset_gate_bias", [f"recurrent_{g}_gate_bias" for g in zr])
        r_n = constant("recurrent_to_candidate_weights", ["recurrent_to_candidate_weights"])
        rb_n = constant("recurrent_candidate_gate_bias", ["recurrent_candidate_gate_bias"])
        if op.option("runtime_recurrent_weights", False):
            r_zr, r_n = (
                self._copy(w, self.add_intermediate(f"{self._tensors[w.index].name}/runtime", w.shape))
                for w in (r_zr, r_n)
            )
        split_axis = self.add_constant(f"{name}/split_axis", np.asarray(1, np.int32))

        def unpack(seq: Ref, suffix: str) -> list[Ref]:
            step_shape = tuple(d for a, d in enumerate(seq.shape) if a != t_axis)
            steps = [self.add_intermediate(f"{name}/{suffix}_t{t}", step_shape) for t in range(time)]
            self.add_operator("UNPACK", [seq], steps, num=time, axis=t_axis)
            return steps

        x_zr = unpack(self._fully_connected(x, w_zr, b_zr, "NONE", f"{name}/input_update_reset"), "x_update_reset")
        x_n = unpack(self._fully_connected(x, w_n, b_n, "NONE", f"{name}/input_candidate"), "x_candidate")
        h = h_state
        order = list(range(time - 1, -1, -1) if op.option("reverse", False) else range(time))
        return_sequences = op.option("return_sequences", True)
        outputs = []
        for t in order:
            last = t == order[-1] and not return_sequences
            recurrent = (r_zr, rb_zr, r_n, rb_n)
            h = self._gru_step(
                x_zr[t], x_n[t], h, recurrent, split_axis, options, f"{name}/t{t}", out if last else None
            )
            outputs.append(h)
        if stateful:
            self._copy(h, h_state)
        if return_sequences:
            if op.option("reverse", False) and op.option("keep_order", False):
                outputs.reverse()
            self.add_operator("PACK", outputs, [out], values_count=time, axis=t_axis)

    def _gru_step(
        self,
        x_zr: Ref,
        x_n: Ref,
        h: Ref,
        recurrent: tuple,
        split_axis: Ref,
        options: GRUOptions,
        name: str,
        out: Ref | None = None,
    ) -> Ref:
        """One GRU step: ``h' = n + z * (h - n)``, into `out` if given."""
        r_zr, rb_zr, r_n, rb_n = recurrent
        step_shape = x_n.shape  # [B, H]

        def binary(opcode: str, a: Ref, b: Ref, suffix: str) -> Ref:
            out = self.add_intermediate(f"{name}/{suffix}", step_shape)
            self.add_operator(opcode, [a, b], [out], fused_activation_function="NONE")
            return out

        gates = self._add_activated(
            x_zr,
            self._fully_connected(h, r_zr, rb_zr, "NONE", f"{name}/recurrent_update_reset"),
            options.recurrent_activation,
            f"{name}/update_reset",
        )
        z, r = (self.add_intermediate(f"{name}/{g}", step_shape) for g in ("update", "reset"))
        self.add_operator("SPLIT", [split_axis, gates], [z, r], num_splits=2)
        if options.reset_after:
            rec_n = self._fully_connected(h, r_n, rb_n, "NONE", f"{name}/recurrent_candidate")
            rec_n = binary("MUL", r, rec_n, "reset_recurrent_candidate")
        else:
            reset_h = binary("MUL", r, h, "reset_h")
            rec_n = self._fully_connected(reset_h, r_n, rb_n, "NONE", f"{name}/recurrent_candidate")
        n = self._add_activated(x_n, rec_n, options.activation, f"{name}/candidate")
        keep = binary("MUL", z, binary("SUB", h, n, "h_minus_candidate"), "keep")
        if out is None:
            return binary("ADD", n, keep, "h")
        self.add_operator("ADD", [n, keep], [out], fused_activation_function="NONE")
        return out

    def _add_activated(self, a: Ref, b: Ref, act: str, name: str) -> Ref:
        """act(a + b): fused into ADD (NONE, RELU, ...) or a separate TANH / LOGISTIC."""
        unfused = {"TANH": "TANH", "SIGMOID": "LOGISTIC"}.get(act)
        y = self.add_intermediate(f"{name}/preactivation" if unfused else f"{name}/output", a.shape)
        self.add_operator("ADD", [a, b], [y], fused_activation_function="NONE" if unfused else act)
        if unfused is None:
            return y
        out = self.add_intermediate(f"{name}/output", a.shape)
        self.add_operator(unfused, [y], [out])
        return out

    def _copy(self, source: Ref, target: Ref) -> Ref:
        """Copies `source` into `target` with a one-input CONCATENATION; returns `target`.

        Not ADD or RESHAPE: LiteRT runs those in place on a last-used input, and a variable
        `target` then loses its buffer ("Input tensor ... lacks data").
        """
        self.add_operator("CONCATENATION", [source], [target], axis=0, fused_activation_function="NONE")
        return target

    def _fully_connected(self, x: Ref, w: Ref, b: Ref | None, activation: str, name: str) -> Ref:
        """FULLY_CONNECTED with existing weight tensors `w` [n_out, n_in] and bias `b`."""
        y = self.add_intermediate(f"{name}/output", x.shape[:-1] + (w.shape[0],))
        self.add_operator(
            "FULLY_CONNECTED",
            [x, w, b],
            [y],
            fused_activation_function=activation,
            keep_num_dims=len(x.shape) > 2,
            weights_format="DEFAULT",
            asymmetric_quantize_inputs=False,
        )
        return y


def unroll_gru(model: Model, *, time_steps: int | None, stateful: bool) -> Model:
    """`model` with each GRU operator replaced by builtin operators over a fixed length.

    TFLite has no GRU operator and TensorFlow's converter emits a WHILE loop. Here the input
    projections of all steps are two FULLY_CONNECTED + UNPACK, and each step is 11 builtin
    operators with the default activations (FULLY_CONNECTED, ADD, LOGISTIC, SPLIT, MUL, TANH,
    SUB; RELU-like activations fuse into ADD), all in the op sets of every LiteRT build and
    of TFLite Micro; PACK gathers the output sequence. The weights are re-packed per gate
    pair (``<name>/input_to_update_reset_weights``, ...).

    Args:
      model: a model with GRU operators (others are returned unchanged).
      time_steps: the number of steps for a GRU whose input has a dynamic time dimension.
      stateful: write h_T back into the operator's variable tensor ``<name>/hidden_state``
        (one CONCATENATION), so that it carries over to the next invoke (LiteRT
        ``reset_all_variables()`` zeroes it, as for the fused LSTM ops). The steps read h
        from that tensor either way: a predict export zeroes it first (a FILL, as for the
        fused ops), and then h_T need not be kept.

    Raises:
      ValueError: a GRU over a dynamic time length without `time_steps`, or one whose
        static length differs from `time_steps`.
    """
    if GRU not in model.opcodes:
        return model
    b = ModelBuilder.extending(model)
    for position, op in enumerate(model.operators):
        if op.opcode == GRU:
            b._unroll_gru(position, op, time_steps, stateful)
        else:
            b._operators.append(op)
    return prune_unused_tensors(b.rebuild(model, b.pop_operators()))


def _lstm_option_dict(options: LSTMOptions) -> dict[str, Any]:
    return {
        "fused_activation_function": options.fused_activation_function,
        "cell_clip": options.cell_clip,
        "proj_clip": options.proj_clip,
        "asymmetric_quantize_inputs": options.asymmetric_quantize_inputs,
    }


def _rnn_option_dict(options: RNNOptions) -> dict[str, Any]:
    return {
        "fused_activation_function": options.fused_activation_function,
        "time_major": options.time_major,
        "asymmetric_quantize_inputs": options.asymmetric_quantize_inputs,
    }


def _cell_quantization(q: LSTMQuantization | None) -> QuantParams | None:
    return None if q is None else QuantParams(q.cell_state, 0)
