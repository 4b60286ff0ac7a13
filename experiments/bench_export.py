"""Export speed: jaxlstm.export_tflite vs tf.lite.TFLiteConverter on one tf_keras model.

The model is LSTM(64, return_sequences) -> LSTM(64) -> Dense(10) on [batch 1, 20 steps, 32
features]. jaxlstm builds its `Model` from the Keras weights (`ModelBuilder`) and serializes
it; the converter traces and converts the Keras model. Both files are then run in LiteRT on
the same input as a sanity check (the converter's cell_clip=10 is not reached here).

    python experiments/bench_export.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from jaxlstm import LSTMOptions, export_tflite
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.parity.litert import run_litert

BATCH, TIME, FEATURES, UNITS, CLASSES = 1, 20, 32, 64, 10


def keras_model():
    import tf_keras as keras

    keras.utils.set_random_seed(0)
    x = inp = keras.Input((TIME, FEATURES), batch_size=BATCH)
    x = keras.layers.LSTM(UNITS, return_sequences=True)(x)
    x = keras.layers.LSTM(UNITS)(x)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(x))


def jaxlstm_model(keras_model):
    """The same network as TFLite fused ops, from the Keras weights (gate order i, f, c, o)."""
    b = ModelBuilder()
    x = b.add_input("input", (BATCH, TIME, FEATURES))
    lstm_layers = [layer for layer in keras_model.layers if layer.__class__.__name__ == "LSTM"]
    for k, layer in enumerate(lstm_layers):
        kernel, recurrent, bias = layer.get_weights()
        x = b.add_lstm(x, lstm_weights_from_fused(kernel, recurrent, bias), LSTMOptions(), name=f"lstm_{k}")
    x = b.add_last_time_step(x)
    kernel, bias = keras_model.layers[-1].get_weights()
    return b.build([b.add_fully_connected(x, kernel.T, bias)], ["logits"])


def timed(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="jaxlstm export repetitions")
    parser.add_argument("--converter-repeats", type=int, default=2)
    args = parser.parse_args()

    import tensorflow as tf

    km = keras_model()

    def convert():
        return tf.lite.TFLiteConverter.from_keras_model(km).convert()

    model = jaxlstm_model(km)
    t_build_export, ours = timed(lambda: export_tflite(jaxlstm_model(km)), args.repeats)
    t_export, _ = timed(lambda: export_tflite(model), args.repeats)
    t_convert, theirs = timed(convert, args.converter_repeats)

    x = np.random.default_rng(0).normal(size=(BATCH, TIME, FEATURES)).astype(np.float32)
    (a,), (b,) = run_litert(ours, [x])[0], run_litert(theirs, [x])[0]
    rows = [
        ("jaxlstm: ModelBuilder + export_tflite", t_build_export, len(ours)),
        ("jaxlstm: export_tflite of a built Model", t_export, len(ours)),
        ("tf.lite.TFLiteConverter.from_keras_model", t_convert, len(theirs)),
    ]
    print(f"2-layer LSTM({UNITS}) + Dense({CLASSES}), input [{BATCH}, {TIME}, {FEATURES}]")
    print(f"{'exporter':45s} {'median ms':>10s} {'bytes':>8s} {'speed-up':>9s}")
    for name, seconds, size in rows:
        print(f"{name:45s} {seconds * 1e3:10.1f} {size:8d} {t_convert / seconds:8.0f}x")
    print(f"LiteRT outputs of the two files differ by {float(np.max(np.abs(a - b))):.2g}")


if __name__ == "__main__":
    main()
