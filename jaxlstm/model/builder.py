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

from jaxlstm import _spec
from jaxlstm.model.graph import NO_TENSOR, Model, Operator, Tensor, options_tuple
from jaxlstm.ops.lstm import LSTMOptions, LSTMWeights
from jaxlstm.ops.rnn import RNNOptions, RNNWeights
from jaxlstm.ops._quant import QuantizedTensor


@dataclasses.dataclass(frozen=True)
class Ref:
    """A tensor handle inside a `ModelBuilder`: its index and shape (-1 = dynamic)."""

    index: int
    shape: tuple[int, ...]


class ModelBuilder:
    """Builds a `Model` one operator at a time (see the module docstring).

    Args:
      batch_size: the static batch used for state tensors (TFLite variable tensors need a
        concrete shape); -1 keeps the batch dynamic in the signature.
    """

    def __init__(self, batch_size: int = 1):
        self.batch_size = batch_size
        self._tensors: list[Tensor] = []
        self._operators: list[Operator] = []
        self._constants: dict[int, Any] = {}
        self._inputs: list[int] = []

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

    def add_input(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> Ref:
        """A subgraph input; -1 marks a dynamic dimension."""
        ref = self._add_tensor(Tensor(name, tuple(shape), dtype))
        self._inputs.append(ref.index)
        return ref

    def add_constant(self, name: str, value: Any) -> Ref:
        """A constant tensor: a float/int array or a `QuantizedTensor` (int8 weights)."""
        if isinstance(value, QuantizedTensor):
            return self._add_tensor(
                Tensor(name, value.shape, "int8", scale=float(np.asarray(value.scale))), value
            )
        value = np.asarray(value)
        return self._add_tensor(Tensor(name, value.shape, value.dtype.name), value)

    def add_variable(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> Ref:
        """A zero-initialized variable tensor (LSTM/RNN state)."""
        return self._add_tensor(Tensor(name, tuple(shape), dtype, is_variable=True))

    def add_intermediate(self, name: str, shape: tuple[int, ...], dtype: str = "float32") -> Ref:
        return self._add_tensor(Tensor(name, tuple(shape), dtype))

    def add_operator(self, opcode: str, inputs: list[Ref | None], outputs: list[Ref], **options) -> None:
        self._operators.append(
            Operator(
                opcode,
                tuple(NO_TENSOR if r is None else r.index for r in inputs),
                tuple(r.index for r in outputs),
                options_tuple(options),
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
        return self.batch_size if batch < 0 else batch

    # -- recurrent layers ----------------------------------------------------------------

    def add_lstm(self, x: Ref, weights: LSTMWeights, options: LSTMOptions, name: str = "lstm") -> Ref:
        """UNIDIRECTIONAL_SEQUENCE_LSTM over `x` [B, T, I] (or [T, B, I]); returns the sequence."""
        batch, time = self._batch_time(x, options.time_major)
        sb = self._state_batch(batch)
        w = self._weights(name, weights, _spec.LSTM_INPUTS[1:18])
        h = self.add_variable(f"{name}/output_state", (sb, weights.n_output))
        c = self.add_variable(f"{name}/cell_state", (sb, weights.n_cell))
        ln = self._weights(name, weights, _spec.LSTM_INPUTS[20:24])
        out_shape = x.shape[:2] + (weights.n_output,)
        y = self.add_intermediate(f"{name}/output", out_shape)
        self.add_operator(
            "UNIDIRECTIONAL_SEQUENCE_LSTM", [x, *w, h, c, *ln], [y],
            **_lstm_option_dict(options), time_major=options.time_major,
        )
        return y

    def add_bidirectional_lstm(
        self,
        x: Ref,
        fw: LSTMWeights,
        bw: LSTMWeights,
        options: LSTMOptions,
        merge_outputs: bool = True,
        name: str = "bidirectional_lstm",
    ) -> list[Ref]:
        """One BIDIRECTIONAL_SEQUENCE_LSTM; returns [merged] or [fw, bw] sequences."""
        batch, _ = self._batch_time(x, options.time_major)
        sb = self._state_batch(batch)
        direction = _spec.LSTM_INPUTS[1:18]
        w_fw = self._weights(f"{name}/fw", fw, direction)
        w_bw = self._weights(f"{name}/bw", bw, direction)
        states = [
            self.add_variable(f"{name}/{d}_{s}", (sb, n))
            for d, w in (("fw", fw), ("bw", bw))
            for s, n in (("output_state", w.n_output), ("cell_state", w.n_cell))
        ]
        if merge_outputs:
            outs = [self.add_intermediate(f"{name}/output", x.shape[:2] + (fw.n_output + bw.n_output,))]
        else:
            outs = [self.add_intermediate(f"{name}/{d}_output", x.shape[:2] + (w.n_output,))
                    for d, w in (("fw", fw), ("bw", bw))]
        self.add_operator(
            "BIDIRECTIONAL_SEQUENCE_LSTM", [x, *w_fw, *w_bw, *states] + [None] * 9, outs,
            **_lstm_option_dict(options), merge_outputs=merge_outputs, time_major=options.time_major,
        )
        return outs

    def add_rnn(self, x: Ref, weights: RNNWeights, options: RNNOptions, name: str = "rnn") -> Ref:
        """UNIDIRECTIONAL_SEQUENCE_RNN over `x`; returns the sequence."""
        batch, _ = self._batch_time(x, options.time_major)
        w = self._weights(name, weights, _spec.RNN_INPUTS[1:4])
        h = self.add_variable(f"{name}/hidden_state", (self._state_batch(batch), weights.n_units))
        y = self.add_intermediate(f"{name}/output", x.shape[:2] + (weights.n_units,))
        self.add_operator(
            "UNIDIRECTIONAL_SEQUENCE_RNN", [x, *w, h], [y], **_rnn_option_dict(options),
        )
        return y

    def add_bidirectional_rnn(
        self,
        x: Ref,
        fw: RNNWeights,
        bw: RNNWeights,
        options: RNNOptions,
        merge_outputs: bool = True,
        name: str = "bidirectional_rnn",
    ) -> list[Ref]:
        """One BIDIRECTIONAL_SEQUENCE_RNN; returns [merged] or [fw, bw] sequences."""
        batch, _ = self._batch_time(x, options.time_major)
        sb = self._state_batch(batch)
        refs = []
        for d, w in (("fw", fw), ("bw", bw)):
            refs += self._weights(f"{name}/{d}", w, _spec.RNN_INPUTS[1:4])
            refs.append(self.add_variable(f"{name}/{d}_hidden_state", (sb, w.n_units)))
        if merge_outputs:
            outs = [self.add_intermediate(f"{name}/output", x.shape[:2] + (fw.n_units + bw.n_units,))]
        else:
            outs = [self.add_intermediate(f"{name}/{d}_output", x.shape[:2] + (w.n_units,))
                    for d, w in (("fw", fw), ("bw", bw))]
        self.add_operator(
            "BIDIRECTIONAL_SEQUENCE_RNN", [x, *refs, None, None, None], outs,
            **_rnn_option_dict(options), merge_outputs=merge_outputs,
        )
        return outs

    # -- glue ----------------------------------------------------------------------------

    def add_last_time_step(self, x: Ref, time_major: bool = False, name: str = "last_step") -> Ref:
        """STRIDED_SLICE taking the last time step: [B, T, F] -> [B, F]."""
        rank = len(x.shape)
        t_axis = 0 if time_major else 1
        begin = np.zeros(rank, np.int32)
        begin[t_axis] = -1
        end = np.zeros(rank, np.int32)
        strides = np.ones(rank, np.int32)
        refs = [self.add_constant(f"{name}/{n}", v) for n, v in (("begin", begin), ("end", end), ("strides", strides))]
        all_bits = (1 << rank) - 1
        out_shape = tuple(d for a, d in enumerate(x.shape) if a != t_axis)
        y = self.add_intermediate(f"{name}/output", out_shape)
        self.add_operator(
            "STRIDED_SLICE", [x, *refs], [y],
            begin_mask=all_bits & ~(1 << t_axis), end_mask=all_bits & ~(1 << t_axis),
            shrink_axis_mask=1 << t_axis, ellipsis_mask=0, new_axis_mask=0, offset=False,
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
        shape = xs[0].shape[:axis] + (size,) + xs[0].shape[axis + 1:]
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
        n_out = int(kernel.shape[0])
        y = self.add_intermediate(f"{name}/output", x.shape[:-1] + (n_out,))
        self.add_operator(
            "FULLY_CONNECTED", [x, w, b], [y], fused_activation_function=activation,
            keep_num_dims=len(x.shape) > 2, weights_format="DEFAULT", asymmetric_quantize_inputs=False,
        )
        return y

    def add_softmax(self, x: Ref, beta: float = 1.0, name: str = "softmax") -> Ref:
        y = self.add_intermediate(f"{name}/output", x.shape)
        self.add_operator("SOFTMAX", [x], [y], beta=beta)
        return y

    def build(self, outputs: list[Ref], output_names: list[str] | None = None) -> Model:
        """The finished `Model`; `output_names` renames the output tensors."""
        tensors = list(self._tensors)
        for ref, new in zip(outputs, output_names or []):
            tensors[ref.index] = dataclasses.replace(tensors[ref.index], name=new)
        return Model(tensors, self._operators, self._inputs, [r.index for r in outputs], self._constants)


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
