"""Fully integer models: `jaxlstm.quantize` against TensorFlow's converter, side by side.

For each model (tf_keras, trained on scikit-learn's digits rows as sequences, or with random
weights: an LSTM and a bidirectional LSTM returning sequences) and the same calibration
batches:

* error against the float Keras model (max and mean |difference| of the outputs on held-out
  sequences; accuracy for the classifiers) of TensorFlow's full-integer int8 post-training
  quantization (`TFLiteConverter`, representative dataset = the calibration sequences, run
  in LiteRT), of jaxlstm int8 (run in LiteRT, checked bit for bit against jaxlstm's JAX
  evaluation) and of jaxlstm int16 (16x8; run by jaxlstm as TFLite Micro computes it, and
  checked bit for bit in TensorFlow Lite Micro's interpreter), next to the floor that the int8
  weights alone set (the float model with jaxlstm's int8 weights, dequantized);
* file sizes at batch 1 (TF's converter takes no dynamic batch): float, dynamic-range
  (hybrid: every weight matrix int8, whatever its size), jaxlstm int8, TF int8, jaxlstm
  int16; and jaxlstm int8 with a dynamic batch (the state resets then read the input's
  shape: SHAPE, STRIDED_SLICE, CONCATENATION, FILL, QUANTIZE per state);
* the parity-suite speed-up: jaxlstm evaluating an integer model on a batch of 1,000
  sequences in one jitted call, against LiteRT (and TFLite Micro) invoking it one sequence at
  a time (batch 1, 1,000 invokes).

LiteRT runs its builtin kernels (no XNNPACK delegate, which rounds int8 FULLY_CONNECTED
differently) for both files; each TF-made file is invoked per sequence after
``reset_all_variables()`` (its LSTM state is a variable tensor that LiteRT never resets).

    python experiments/bench_quantize.py [--quick] [--out experiments/results]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

CALIBRATION = 256  # calibration sequences (the converter's representative dataset)
PARITY_SEQUENCES = 1000


def digits():
    """Digits as sequences: 8 rows (time) of 8 pixels in [0, 1]; (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.2, stratify=d.target, random_state=0)
    return x_train, y_train, x_test, y_test


def random_sequences(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.standard_normal((n, 20, 6)).astype(np.float32)


def keras_models(quick: bool):
    """(name, tf_keras model, x_calibration, x_test, y_test or None) per benchmark model."""
    import tf_keras
    from tf_keras import layers

    x_train, y_train, x_test, y_test = digits()
    epochs = 3 if quick else 30

    def classifier(*recurrent):
        tf_keras.utils.set_random_seed(0)
        model = tf_keras.Sequential([layers.InputLayer(input_shape=(8, 8)), *recurrent, layers.Dense(10, "softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
        return model

    specs = [
        ("digits LSTM(32) + Dense(10, softmax)", lambda: classifier(layers.LSTM(32))),
        ("digits LSTM(64) + Dense(10, softmax)", lambda: classifier(layers.LSTM(64))),
        (
            "digits LSTM(32) x2 + Dense(10, softmax)",
            lambda: classifier(layers.LSTM(32, return_sequences=True), layers.LSTM(32)),
        ),
        (
            "digits Bidirectional(LSTM(16)) + Dense(10, softmax)",
            lambda: classifier(layers.Bidirectional(layers.LSTM(16))),
        ),
    ]
    if quick:
        specs = specs[:1]
    for name, build in specs:
        yield name, build(), x_train[:CALIBRATION], x_test, y_test
    # Random weights (Keras' initializers, biases drawn), sequence output, N(0, 1) inputs.
    rng = np.random.default_rng(1)
    recurrent_layers = {
        "random LSTM(32) sequences + Dense(4)": lambda: layers.LSTM(32, return_sequences=True),
        "random Bidirectional(LSTM(16)) sequences + Dense(4)": lambda: layers.Bidirectional(
            layers.LSTM(16, return_sequences=True)
        ),
    }
    for name, recurrent in recurrent_layers.items():
        tf_keras.utils.set_random_seed(1)
        model = tf_keras.Sequential([layers.InputLayer(input_shape=(20, 6)), recurrent(), layers.Dense(4)])
        wrapper = model.layers[0]
        for lstm in (
            (wrapper.forward_layer, wrapper.backward_layer) if hasattr(wrapper, "forward_layer") else (wrapper,)
        ):
            kernel, recurrent_kernel, bias = lstm.get_weights()
            lstm.set_weights([kernel, recurrent_kernel, (0.3 * rng.standard_normal(bias.shape)).astype(np.float32)])
        yield name, model, random_sequences(rng, CALIBRATION), random_sequences(rng, 360), None


# ----------------------------------------------------------------------------- runtimes


def tf_int8(model, calibration: np.ndarray) -> bytes:
    """TensorFlow's full-integer int8 PTQ of `model` at batch 1 (it cannot convert a dynamic batch)."""
    import tensorflow as tf
    import tf_keras

    fixed = tf_keras.Sequential([tf_keras.layers.InputLayer(input_shape=model.input_shape[1:], batch_size=1)])
    for layer in model.layers:
        fixed.add(layer)
    converter = tf.lite.TFLiteConverter.from_keras_model(fixed)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def litert_per_sequence(data: bytes, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Outputs of invoking `data` once per sequence (batch 1, state reset), and the seconds taken."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    (i,), (o,) = interpreter.get_input_details(), interpreter.get_output_details()
    if tuple(i["shape"]) != (1, *x.shape[1:]):
        interpreter.resize_tensor_input(i["index"], (1, *x.shape[1:]))
    interpreter.allocate_tensors()
    outputs = []
    start = time.perf_counter()
    for row in x:
        interpreter.reset_all_variables()
        interpreter.set_tensor(i["index"], row[None].astype(i["dtype"]))
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(o["index"])[0].copy())
    return np.asarray(outputs), time.perf_counter() - start


def litert_batch(data: bytes, x: np.ndarray) -> np.ndarray:
    from jaxlstm.parity.litert import run_litert

    return run_litert(data, [x], xnnpack=False)[0][0]


def tflite_micro_per_sequence(data: bytes, x: np.ndarray) -> tuple[np.ndarray, float]:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(data)
    outputs = []
    start = time.perf_counter()
    for row in x:
        interpreter.reset()
        interpreter.set_input(row[None], 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0)[0].copy())
    return np.asarray(outputs), time.perf_counter() - start


def jax_batch(model):
    """A jitted function x -> the model's first output (the weights closed over: int64
    biases stay int64 without jax_enable_x64)."""
    import jax

    params = model.params
    return jax.jit(lambda x: model.apply(params, None, x)[0][0])


def weight_floor(float_model, integer_model) -> object:
    """The float model with the integer model's int8 weights, dequantized (float activations)."""
    params = dict(float_model.params)
    for name, value in integer_model.params.items():
        if name in params and np.asarray(value.values).dtype == np.int8:
            params[name] = np.asarray(value.dequantize())
    return float_model.with_params(params)


# ----------------------------------------------------------------------------- one model


def errors(y: np.ndarray, reference: np.ndarray, labels) -> dict:
    e = np.abs(np.asarray(y, np.float64) - reference)
    row = {"max": float(e.max()), "mean": float(e.mean())}
    if labels is not None:
        row["accuracy"] = float(np.mean(np.asarray(y).argmax(-1) == labels))
    return row


def measure(name, keras_model, calibration, x_test, y_test) -> dict:
    import jaxlstm
    from jaxlstm.convert import from_keras
    from jaxlstm.quantization import calibrate

    print(f"{name}", file=sys.stderr)
    reference = keras_model.predict(x_test, verbose=0).astype(np.float64)
    float_model = from_keras(keras_model)
    tf_data = tf_int8(keras_model, calibration)
    ranges = calibrate(float_model, calibration, progress=False)  # one calibration, two quantizations
    int8 = jaxlstm.quantize(float_model, ranges)
    int16 = jaxlstm.quantize(float_model, ranges, activations="int16")
    files = {  # all at batch 1, as TF's converter writes them
        "float": jaxlstm.export_tflite(float_model, batch_size=1),
        "hybrid": jaxlstm.export_tflite(float_model, quantize="dynamic", quantize_min_elements=1, batch_size=1),
        "jaxlstm int8": jaxlstm.export_tflite(int8, batch_size=1),
        "TF int8": tf_data,
        "jaxlstm int16": jaxlstm.export_tflite(int16, batch_size=1),
        "jaxlstm int8, dynamic batch": jaxlstm.export_tflite(int8),
    }
    tf_out, _ = litert_per_sequence(tf_data, x_test)
    jax8 = np.asarray(int8(x_test)[0])
    lite8 = litert_batch(files["jaxlstm int8, dynamic batch"], x_test)
    jax16 = np.asarray(int16(x_test)[0])
    micro16, _ = tflite_micro_per_sequence(files["jaxlstm int16"], x_test)
    floor = np.asarray(weight_floor(float_model, int8)(x_test)[0])
    labels = y_test
    row = {
        "model": name,
        "float accuracy": None if labels is None else float(np.mean(reference.argmax(-1) == labels)),
        "errors": {
            "TF int8": errors(tf_out, reference, labels),
            "jaxlstm int8": errors(lite8, reference, labels),
            "jaxlstm int16": errors(micro16, reference, labels),
            "int8 weights alone": errors(floor, reference, labels),
        },
        "bit exact": {
            "int8: jaxlstm == LiteRT": bool(np.array_equal(jax8, lite8)),
            "int16: jaxlstm == TFLite Micro": bool(np.array_equal(jax16, micro16)),
        },
        "bytes": {k: len(v) for k, v in files.items()},
    }
    return row


def parity_speed(keras_model, calibration, reps: int) -> dict:
    """Seconds for 1,000 sequences: jaxlstm in one jitted call vs LiteRT / TFLite Micro invoked
    per sequence; each the fastest of `reps` rounds, the systems taking turns in every round
    (the minimum is the least sensitive to other load on the machine)."""
    import jaxlstm
    from jaxlstm.convert import from_keras
    from jaxlstm.quantization import calibrate

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (PARITY_SEQUENCES, *calibration.shape[1:])).astype(np.float32)
    float_model = from_keras(keras_model)
    ranges = calibrate(float_model, calibration, progress=False)
    result = {}
    for activations in ("int8", "int16"):
        integer = jaxlstm.quantize(float_model, ranges, activations=activations)
        fn = jax_batch(integer)
        start = time.perf_counter()
        y = np.asarray(fn(x))
        compile_s = time.perf_counter() - start
        if activations == "int8":
            runtime, data = "LiteRT", jaxlstm.export_tflite(integer)
            per_sequence = litert_per_sequence
        else:
            runtime, data = "TFLite Micro", jaxlstm.export_tflite(integer, batch_size=1)
            per_sequence = tflite_micro_per_sequence
        times: dict[str, list[float]] = {"jax": [], "runtime": [], "runtime batch": []}
        for _ in range(reps):
            start = time.perf_counter()
            np.asarray(fn(x))
            times["jax"].append(time.perf_counter() - start)
            reference, seconds = per_sequence(data, x)
            times["runtime"].append(seconds)
            if activations == "int8":
                start = time.perf_counter()
                litert_batch(data, x)
                times["runtime batch"].append(time.perf_counter() - start)
        result[activations] = {
            "runtime": runtime,
            "runtime per-sequence s": min(times["runtime"]),
            "jaxlstm batch s": min(times["jax"]),
            "jaxlstm compile + first call s": compile_s,
            "ratio": min(times["runtime"]) / min(times["jax"]),
            "runtime one batch s": min(times["runtime batch"]) if times["runtime batch"] else None,
            "identical": bool(np.array_equal(y, reference)),
        }
    return result


# ----------------------------------------------------------------------------- report


def report(rows: list[dict], speed: dict, speed_model: str) -> str:
    lines = ["# jaxlstm.quantize vs TensorFlow's converter (full-integer post-training quantization)", ""]
    lines += [
        "Error against the float Keras model on held-out sequences: max / mean |difference| of the outputs",
        "(softmax probabilities or the regression outputs), and accuracy for the classifiers.",
        "",
        "| model | float acc | TF int8 | jaxlstm int8 | jaxlstm int16 | int8 weights alone | int8: TF / jaxlstm (mean) |"
        " int16 vs int8 (max, mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        e = row["errors"]

        def cell(k, e=e):
            acc = f", acc {e[k]['accuracy']:.4f}" if "accuracy" in e[k] else ""
            return f"{e[k]['max']:.4f} / {e[k]['mean']:.5f}{acc}"

        accuracy = "-" if row["float accuracy"] is None else f"{row['float accuracy']:.4f}"
        ratio_tf = e["TF int8"]["mean"] / e["jaxlstm int8"]["mean"]
        ratio_16 = (
            f"{e['jaxlstm int8']['max'] / e['jaxlstm int16']['max']:.2f}x, "
            f"{e['jaxlstm int8']['mean'] / e['jaxlstm int16']['mean']:.2f}x"
        )
        lines.append(
            f"| {row['model']} | {accuracy} | {cell('TF int8')} | {cell('jaxlstm int8')} | {cell('jaxlstm int16')} | "
            f"{cell('int8 weights alone')} | {ratio_tf:.2f} | {ratio_16} |"
        )
    misses = [f"{r['model']}: {k}" for r in rows for k, same in r["bit exact"].items() if not same]
    checks = "jaxlstm int8 == LiteRT and jaxlstm int16 == TFLite Micro"
    lines += ["", f"Bit for bit ({checks}): " + ("every model" if not misses else "NOT " + "; ".join(misses)), ""]
    lines += ["File sizes (bytes):", "", "| model | " + " | ".join(rows[0]["bytes"]) + " |"]
    lines.append("|---" * (len(rows[0]["bytes"]) + 1) + "|")
    for row in rows:
        lines.append(f"| {row['model']} | " + " | ".join(f"{v:,}" for v in row["bytes"].values()) + " |")
    lines += ["", f"Parity suite, {PARITY_SEQUENCES} sequences of {speed_model}:", ""]
    lines.append(
        "| integer model | runtime, per sequence (batch 1) | jaxlstm, one jitted batch | ratio | jaxlstm compile | "
        "identical | runtime, one batch |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for activations, s in speed.items():
        batched = "-" if s["runtime one batch s"] is None else f"{s['runtime one batch s']:.3f} s"
        lines.append(
            f"| {activations} | {s['runtime']}: {s['runtime per-sequence s']:.3f} s | {s['jaxlstm batch s']:.3f} s | "
            f"{s['ratio']:.1f}x | {s['jaxlstm compile + first call s']:.1f} s | {s['identical']} | {batched} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short-trained model and the random one")
    parser.add_argument("--reps", type=int, default=5, help="rounds of the parity-suite timing (the fastest counts)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    rows, speed_source = [], None
    for name, model, calibration, x_test, y_test in keras_models(args.quick):
        rows.append(measure(name, model, calibration, x_test, y_test))
        if "LSTM(64)" in name or speed_source is None:
            speed_source = (name, model, calibration)
    speed = parity_speed(speed_source[1], speed_source[2], args.reps)
    text = report(rows, speed, speed_source[0])
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_quantize.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "bench_quantize.json"), "w") as f:
        json.dump({"models": rows, "parity_speed": speed, "parity_model": speed_source[0]}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
