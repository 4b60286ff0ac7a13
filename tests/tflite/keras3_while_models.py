"""Keras 3 recurrent models as TensorFlow 2.16+ converts them: WHILE loops (run as a script).

    python tests/tflite/keras3_while_models.py OUT_DIR

builds one small model per kind (`MODELS`), with seeded random weights, converts each with
`tf.lite.TFLiteConverter.from_keras_model` (fixed batch: with batch None the converter needs
Flex TensorList ops), and writes ``OUT_DIR/<name>.tflite`` and ``OUT_DIR/<name>.npz`` (the
input ``x`` and Keras' own outputs ``y0``, ``y1``, ...). Keras runs on the TensorFlow backend,
which the converter needs: the script sets it before keras is imported, so it runs as its own
process (the test suite runs Keras on the JAX backend; importing this module sets nothing).
The ``dynamic_range`` model is converted with ``Optimize.DEFAULT``, which makes its weights
of 1024+ elements int8.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import numpy as np

BATCH, TIME, FEATURES, UNITS = 2, 5, 3, 4
BIG = 16  # LSTM(16) on 16 features: kernels of 16 x 64 = 1024 elements, quantized

# name -> (the layers, given keras.layers; input features; dynamic-range quantized)
MODELS = {
    "lstm_sequences": (lambda L: [L.LSTM(UNITS, return_sequences=True)], FEATURES, False),
    "lstm_last_step": (lambda L: [L.LSTM(UNITS)], FEATURES, False),
    "stacked_lstm_dense_softmax": (
        lambda L: [L.LSTM(UNITS, return_sequences=True), L.LSTM(UNITS), L.Dense(3, activation="softmax")],
        FEATURES,
        False,
    ),
    "gru_reset_after": (lambda L: [L.GRU(UNITS, return_sequences=True)], FEATURES, False),
    "gru_reset_before": (lambda L: [L.GRU(UNITS, reset_after=False, return_sequences=True)], FEATURES, False),
    "gru_last_step": (lambda L: [L.GRU(UNITS)], FEATURES, False),
    "simple_rnn": (lambda L: [L.SimpleRNN(UNITS, return_sequences=True)], FEATURES, False),
    "lstm_go_backwards": (lambda L: [L.LSTM(UNITS, go_backwards=True, return_sequences=True)], FEATURES, False),
    "masking_lstm": (lambda L: [L.Masking(0.0), L.LSTM(UNITS, return_sequences=True)], FEATURES, False),
    **{
        f"bidirectional_lstm_{merge}": (
            lambda L, merge=merge: [L.Bidirectional(L.LSTM(UNITS, return_sequences=True), merge_mode=merge)],
            FEATURES,
            False,
        )
        for merge in ("concat", "sum", "mul", "ave", None)
    },
    "lstm_dynamic_range": (lambda L: [L.LSTM(BIG)], BIG, True),
}
# Models jaxlstm does not load: Flex TensorList ops (batch None with TensorFlow select ops, as
# the converter's error for batch None suggests) and resource variables (stateful=True).
UNLOADABLE = ("lstm_batch_none_flex", "stateful_lstm")


def inputs(name: str, features: int) -> np.ndarray:
    """A seeded input; for the Masking model, some all-zero (masked) time steps."""
    x = np.random.default_rng(1).normal(size=(BATCH, TIME, features)).astype(np.float32)
    if name.startswith("masking"):
        x[:, 2] = 0.0
        x[1, 4] = 0.0
    return x


def main(out_dir: str) -> None:
    import keras
    import tensorflow as tf

    for name, (layers, features, quantized) in MODELS.items():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((TIME, features), batch_size=BATCH), *layers(keras.layers)])
        rng = np.random.default_rng(0)  # random biases too: the converter folds away zero ones
        model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if quantized:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        with contextlib.redirect_stdout(io.StringIO()):
            data = converter.convert()
        with open(os.path.join(out_dir, f"{name}.tflite"), "wb") as f:
            f.write(data)
        x = inputs(name, features)
        y = model(x)
        outputs = {f"y{k}": np.asarray(v) for k, v in enumerate(y if isinstance(y, (list, tuple)) else [y])}
        np.savez(os.path.join(out_dir, f"{name}.npz"), x=x, **outputs)
    for name, batch, stateful in zip(UNLOADABLE, (None, BATCH), (False, True)):
        model = keras.Sequential(
            [keras.Input((TIME, FEATURES), batch_size=batch), keras.layers.LSTM(UNITS, stateful=stateful)]
        )
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if batch is None:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
            converter._experimental_lower_tensor_list_ops = False
        with contextlib.redirect_stdout(io.StringIO()):
            data = converter.convert()
        with open(os.path.join(out_dir, f"{name}.tflite"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    os.environ["KERAS_BACKEND"] = "tensorflow"  # before keras is imported (in main)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main(sys.argv[1])
