"""Small models and flatbuffer surgery shared by the .tflite tests."""

from __future__ import annotations

from collections.abc import Callable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import Model, ModelBuilder
from jaxlstm.ops import LSTMOptions, LSTMWeights

N_INPUT, N_CLASSES = 5, 3


def lstm_weights(rng: np.random.Generator, n_input: int, units: int) -> LSTMWeights:
    """Keras-layout random weights split into TFLite per-gate tensors (numpy float32)."""
    return lstm_weights_from_fused(
        rng.normal(size=(n_input, 4 * units)).astype(np.float32) * 0.4,
        rng.normal(size=(units, 4 * units)).astype(np.float32) * 0.4,
        rng.normal(size=4 * units).astype(np.float32) * 0.2,
    )


def stacked_lstm(rng, units=(8, 6), batch=-1, time=-1, softmax=True, name_prefix="") -> Model:
    """input [batch, time, 5] -> LSTM(units[0]) -> LSTM(units[1]) -> last step -> Dense(3)."""
    b = ModelBuilder()
    x = b.add_input("input", (batch, time, N_INPUT))
    n_in = N_INPUT
    for k, u in enumerate(units):
        x = b.add_lstm(x, lstm_weights(rng, n_in, u), LSTMOptions(), name=f"{name_prefix}lstm_{k}")
        n_in = u
    x = b.add_last_time_step(x)
    kernel = rng.normal(size=(N_CLASSES, n_in)).astype(np.float32)
    y = b.add_fully_connected(x, kernel, rng.normal(size=N_CLASSES).astype(np.float32))
    if softmax:
        y = b.add_softmax(y)
    return b.build([y], ["probabilities" if softmax else "logits"])


def bidirectional_lstm(rng, units=6, batch=-1, time=-1, merge_outputs=False) -> Model:
    """input -> one BIDIRECTIONAL_SEQUENCE_LSTM -> [fw | bw] -> last step -> Dense(3)."""
    b = ModelBuilder()
    x = b.add_input("input", (batch, time, N_INPUT))
    fw, bw = lstm_weights(rng, N_INPUT, units), lstm_weights(rng, N_INPUT, units)
    ys = b.add_bidirectional_lstm(x, fw, bw, LSTMOptions(time_major=False), merge_outputs=merge_outputs)
    y = b.add_last_time_step(ys[0] if merge_outputs else b.add_concatenation(ys))
    kernel = rng.normal(size=(N_CLASSES, 2 * units)).astype(np.float32)
    return b.build([b.add_fully_connected(y, kernel, None)], ["logits"])


def edit_flatbuffer(data: bytes, edit: Callable[[schema.ModelT], object]) -> bytes:
    """Unpacks `data`, applies `edit` to the `ModelT` in place, packs it again."""
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    edit(model)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())
