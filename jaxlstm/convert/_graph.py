"""ModelBuilder recipes shared by the converters: directions, bidirectional merges, one-layer models.

LSTM and RNN layers become TFLite's fused operators; GRU layers (no TFLite operator) become
the model's GRU operator (`ModelBuilder.add_gru`), which runs at any length in JAX and is
unrolled into builtin operators over a fixed length when exported.

Batch: None (the converters' default) keeps the batch dynamic, as the source frameworks do;
an int fixes it for the input and the state tensors.
"""

from __future__ import annotations

import numpy as np

from jaxlstm.model import Model, ModelBuilder, Ref
from jaxlstm.ops.gru import GRUOptions, GRUWeights
from jaxlstm.ops.lstm import LSTMOptions, LSTMWeights
from jaxlstm.ops.rnn import RNNOptions, RNNWeights

Weights = LSTMWeights | RNNWeights | GRUWeights
Options = LSTMOptions | RNNOptions | GRUOptions
MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def add_recurrent(
    b: ModelBuilder,
    x: Ref,
    weights: Weights,
    options: Options,
    *,
    name: str,
    reverse: bool = False,
    keep_order: bool = False,
    return_sequences: bool = True,
) -> Ref:
    """One UNIDIRECTIONAL_SEQUENCE_LSTM / _RNN layer (or an unrolled GRU) over `x`.

    Args:
      reverse: process the sequence from the last step to the first (REVERSE_V2 on the
        input, as Keras ``go_backwards`` and flax ``reverse``).
      keep_order: with `reverse`, flip the outputs back to input order (second REVERSE_V2);
        otherwise they stay in processing order.
      return_sequences: False keeps only the last processed step (STRIDED_SLICE).
    """
    if isinstance(weights, GRUWeights):
        return b.add_gru(
            x, weights, options, reverse=reverse, keep_order=keep_order, return_sequences=return_sequences, name=name
        )
    t_axis = 0 if options.time_major else 1
    if reverse:
        x = b.add_reverse(x, t_axis, name=f"{name}/reverse_input")
    add = b.add_lstm if isinstance(weights, LSTMWeights) else b.add_rnn
    y = add(x, weights, options, name=name)
    if not return_sequences:
        return b.add_last_time_step(y, options.time_major, name=f"{name}/last_step")
    if reverse and keep_order:
        y = b.add_reverse(y, t_axis, name=f"{name}/reverse_output")
    return y


def add_bidirectional(
    b: ModelBuilder,
    x: Ref,
    fw: Weights,
    bw: Weights,
    options: Options,
    *,
    name: str,
    merge_mode: str | None = "concat",
    return_sequences: bool = True,
) -> list[Ref]:
    """One bidirectional layer, merged as Keras' ``Bidirectional``.

    Emits BIDIRECTIONAL_SEQUENCE_LSTM / _RNN (GRU: two unrolled directions), whose backward
    outputs are time-aligned with the input (bw[t] has seen x[t:]). ``concat`` of full
    sequences is the op's own ``merge_outputs``; the other modes use its two outputs and
    glue: ADD (sum), MUL (mul), ADD then MUL by 0.5 (ave), CONCATENATION (concat), or
    nothing (None: two outputs).
    Without `return_sequences` the forward part is the last step and the backward part is
    step 0 (the backward pass's final state). Two LiteRT limits of the LSTM op are avoided:

    * batch-major with ``merge_outputs``: the kernel offsets row b's state by
      b * (n_fw_output + n_bw_output) instead of b * n_output (lstm_eval.cc EvalFloat),
      so rows after the first come out wrong (measured: 0.87 at batch 2). Batch-major
      LSTMs merge with CONCATENATION instead.
    * directions of different sizes: Prepare checks the forward tensors against the
      backward sizes too (bidirectional_sequence_lstm.cc, CheckInputTensorDimensions).
      Those run as two UNIDIRECTIONAL_SEQUENCE_LSTMs, the backward one on reversed time.

    Returns:
      [merged] or [fw, bw] (merge_mode None).
    """
    if merge_mode not in MERGE_MODES:
        raise NotImplementedError(f"{name}: merge mode {merge_mode!r} is not supported; use one of {MERGE_MODES}")
    if isinstance(fw, GRUWeights):  # add_gru takes the last steps itself
        merged = False
        outs = [
            add_recurrent(b, x, fw, options, name=f"{name}/fw", return_sequences=return_sequences),
            add_recurrent(
                b, x, bw, options, name=f"{name}/bw", reverse=True, keep_order=True, return_sequences=return_sequences
            ),
        ]
    elif isinstance(fw, RNNWeights):
        merged = merge_mode == "concat" and return_sequences
        outs = b.add_bidirectional_rnn(x, fw, bw, options, merge_outputs=merged, name=name)
    elif (fw.n_cell, fw.n_output) != (bw.n_cell, bw.n_output):
        merged = False
        outs = [
            add_recurrent(b, x, fw, options, name=f"{name}/fw"),
            add_recurrent(b, x, bw, options, name=f"{name}/bw", reverse=True, keep_order=True),
        ]
    else:
        merged = merge_mode == "concat" and return_sequences and options.time_major
        outs = b.add_bidirectional_lstm(x, fw, bw, options, merge_outputs=merged, name=name)
    if merged:
        return outs
    y_fw, y_bw = outs
    if not return_sequences and not isinstance(fw, GRUWeights):
        y_fw = b.add_time_step(y_fw, -1, options.time_major, name=f"{name}/fw_last_step")
        y_bw = b.add_time_step(y_bw, 0, options.time_major, name=f"{name}/bw_last_step")
    if merge_mode is None:
        return [y_fw, y_bw]
    if merge_mode == "concat":
        return [b.add_concatenation([y_fw, y_bw], axis=-1, name=f"{name}/concat")]
    if merge_mode == "mul":
        return [b.add_binary("MUL", y_fw, y_bw, name=f"{name}/mul")]
    y = b.add_binary("ADD", y_fw, y_bw, name=f"{name}/add")
    if merge_mode == "ave":
        half = b.add_constant(f"{name}/half", np.full((1,), 0.5, np.float32))
        y = b.add_binary("MUL", y, half, name=f"{name}/ave")
    return [y]


def n_input(weights: Weights) -> int:
    """The input size of one direction's weights."""
    return int(weights.input_weights.shape[1]) if isinstance(weights, RNNWeights) else weights.n_input


def check_batch_size(batch_size: int | None) -> int | None:
    """`batch_size` as the converters take it: None (or -1) for a dynamic batch, else a positive int.

    Raises:
      ValueError: anything else.
    """
    if batch_size is None or batch_size == -1:
        return None
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, or None for a dynamic batch; got {batch_size!r}")
    return batch_size


def input_shape(n_input: int, *, batch_size: int | None, time_steps: int | None, time_major: bool) -> tuple[int, ...]:
    """The subgraph input shape [B, T, I] (or [T, B, I]); -1 marks a dynamic dimension."""
    b = -1 if batch_size is None else batch_size
    t = -1 if time_steps is None else time_steps
    return (t, b, n_input) if time_major else (b, t, n_input)


def single_layer_model(
    weights: Weights,
    options: Options,
    *,
    batch_size: int | None,
    time_steps: int | None,
    name: str,
) -> Model:
    """A model running one cell over a sequence: input [B, T, n_input] -> output [B, T, n_output]."""
    batch_size = check_batch_size(batch_size)
    b = ModelBuilder(batch_size)
    x = b.add_input(
        "input",
        input_shape(n_input(weights), batch_size=batch_size, time_steps=time_steps, time_major=options.time_major),
    )
    return b.build([add_recurrent(b, x, weights, options, name=name)], ["output"])
