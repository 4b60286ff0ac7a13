"""LiteRT speed and file size: our unrolled GRU export vs TensorFlow's WHILE-loop conversion.

For each configuration a tf_keras GRU (return_sequences=True, batch 1, Keras' default
initializers plus a small random bias) is converted twice: by
`tf.lite.TFLiteConverter.from_keras_model` (a WHILE loop over a body subgraph) and by jaxlstm
(`jaxlstm.convert.gru_weights_from_keras` -> `ModelBuilder.add_gru` -> `jaxlstm.export_tflite`: builtin
operators unrolled over T), with constant recurrent weights ("ours") and with
``runtime_recurrent_weights=True`` ("ours rt", one runtime copy of the recurrent weights
instead of one XNNPACK-packed copy per step). All run in the LiteRT interpreter with one thread, with the
default delegate (XNNPACK) and with the builtin kernels only; invokes alternate between the
models (interleaved) and the tables report medians.

    python experiments/bench_gru.py [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

CONFIGS = [  # (T, n_input, units, reset_after)
    (16, 8, 32, True),
    (50, 16, 64, True),
    (50, 16, 64, False),
    (100, 32, 128, True),
]


def keras_gru(T: int, n_input: int, units: int, reset_after: bool, seed: int):
    import tf_keras

    tf_keras.utils.set_random_seed(seed)
    inp = tf_keras.Input((T, n_input), batch_size=1)
    out = tf_keras.layers.GRU(units, return_sequences=True, reset_after=reset_after)(inp)
    model = tf_keras.Model(inp, out)
    layer = model.layers[-1]
    kernel, recurrent_kernel, bias = layer.get_weights()
    bias = (np.random.default_rng(seed).standard_normal(bias.shape) * 0.1).astype(np.float32)
    layer.set_weights([kernel, recurrent_kernel, bias])
    return model, layer


def tf_while_tflite(model) -> bytes:
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def jaxlstm_tflite(layer, T: int, n_input: int, reset_after: bool, runtime_weights: bool = False) -> bytes:
    import jaxlstm
    from jaxlstm.convert import gru_weights_from_keras
    from jaxlstm.model import ModelBuilder
    from jaxlstm.ops import GRUOptions

    kernel, recurrent_kernel, bias = layer.get_weights()
    builder = ModelBuilder(batch_size=1)
    x = builder.add_input("input", (1, T, n_input))
    y = builder.add_gru(
        x,
        gru_weights_from_keras(kernel, recurrent_kernel, bias, reset_after),
        GRUOptions(reset_after=reset_after),
        runtime_recurrent_weights=runtime_weights,
    )
    return jaxlstm.export_tflite(builder.build([y], ["output"]))


def operator_count(data: bytes) -> int:
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(data, 0)
    return sum(len(sg.operators) for sg in model.subgraphs)


def make_runner(data: bytes, x: np.ndarray, delegates: bool):
    """(run: one timed invoke, output: the last output)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=data, num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def run() -> float:
        interpreter.reset_all_variables()
        interpreter.set_tensor(index, x)
        start = time.perf_counter()
        interpreter.invoke()
        return time.perf_counter() - start

    return run, lambda: interpreter.get_tensor(out)


def bench(rounds: int) -> list[dict]:
    rows = []
    for k, (T, n_input, units, reset_after) in enumerate(CONFIGS):
        model, layer = keras_gru(T, n_input, units, reset_after, seed=k)
        x = np.random.default_rng(100 + k).standard_normal((1, T, n_input)).astype(np.float32)
        expected = model(x).numpy()
        start = time.perf_counter()
        tf_bytes = tf_while_tflite(model)
        tf_convert = time.perf_counter() - start
        start = time.perf_counter()
        our_bytes = jaxlstm_tflite(layer, T, n_input, reset_after)
        our_export = time.perf_counter() - start
        runtime_bytes = jaxlstm_tflite(layer, T, n_input, reset_after, runtime_weights=True)
        runners = {
            (source, delegates): make_runner(data, x, delegates)
            for source, data in (("tf", tf_bytes), ("ours", our_bytes), ("rt", runtime_bytes))
            for delegates in (True, False)
        }
        times = {key: [] for key in runners}
        for _ in range(10):  # warm-up
            for run, _ in runners.values():
                run()
        for _ in range(rounds):  # interleaved
            for key, (run, _) in runners.items():
                times[key].append(run())
        rows.append(
            {
                "config": f"T={T} I={n_input} H={units} {'reset_after' if reset_after else 'reset_before'}",
                **{
                    f"{source}_us_{'xnnpack' if d else 'builtin'}": statistics.median(t) * 1e6
                    for (source, d), t in times.items()
                },
                "tf_kb": len(tf_bytes) / 1024,
                "ours_kb": len(our_bytes) / 1024,
                "tf_ops": operator_count(tf_bytes),
                "ours_ops": operator_count(our_bytes),
                "tf_convert_s": tf_convert,
                "ours_export_s": our_export,
                "err_tf": max(float(np.abs(runners["tf", d][1]() - expected).max()) for d in (True, False)),
                "err_ours": max(
                    float(np.abs(runners[s, d][1]() - expected).max()) for s in ("ours", "rt") for d in (True, False)
                ),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="interleaved invokes per model")
    args = parser.parse_args(argv)
    rows = bench(args.rounds)
    print(
        f"{'configuration':<34} {'kernels':<9} {'TF WHILE us':>11} {'ours us':>9} {'speedup':>8} "
        f"{'ours rt us':>10} {'speedup':>8}"
    )
    for r in rows:
        for kernels in ("xnnpack", "builtin"):
            tf_us, ours_us, rt_us = (r[f"{s}_us_{kernels}"] for s in ("tf", "ours", "rt"))
            print(
                f"{r['config']:<34} {kernels:<9} {tf_us:>11.1f} {ours_us:>9.1f} {tf_us / ours_us:>7.2f}x "
                f"{rt_us:>10.1f} {tf_us / rt_us:>7.2f}x"
            )
    print()
    print(
        f"{'configuration':<34} {'TF KiB':>8} {'ours KiB':>9} {'size x':>7} {'TF ops':>7} {'ours ops':>9} "
        f"{'convert s TF / ours':>20} {'max err vs Keras TF / ours':>27}"
    )
    for r in rows:
        print(
            f"{r['config']:<34} {r['tf_kb']:>8.1f} {r['ours_kb']:>9.1f} {r['ours_kb'] / r['tf_kb']:>6.2f}x "
            f"{r['tf_ops']:>7} {r['ours_ops']:>9} {r['tf_convert_s']:>10.2f} / {r['ours_export_s']:<7.3f} "
            f"{r['err_tf']:>14.1e} / {r['err_ours']:.1e}"
        )
    print(
        "\nmedians of interleaved single-thread LiteRT invokes (reset_all_variables before each); "
        "xnnpack = default delegate, builtin = BUILTIN_WITHOUT_DEFAULT_DELEGATES; speedup = TF time / "
        "our time; size x = our file / TF file; TF ops counts all subgraphs; max err over both exports."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
