"""Fused LSTM against the WHILE loop it came from: LiteRT latency, file size, time to fuse.

Usage::

    python experiments/bench_fusion.py              # the four shapes of bench.py, 15 repetitions
    python experiments/bench_fusion.py --quick      # two small shapes, 5 repetitions
    python experiments/bench_fusion.py --shape 8,400,40,512 --reps 9

For every shape (B, T, I, H): a Keras 3 ``LSTM(H, return_sequences=True)`` on a fixed-batch
input [B, T, I] (Keras' default initializers, seeded) is converted by TensorFlow's
TFLiteConverter (TF 2.16+: a WHILE loop; in a subprocess, where Keras runs on the TensorFlow
backend), then fused by ``jaxlstm convert`` (`fuse_while_loops` + `export_tflite`: one
UNIDIRECTIONAL_SEQUENCE_LSTM). Measures:

* LiteRT latency of one invoke of each file, with LiteRT's default op resolver (XNNPACK
  delegate) and with the builtin kernels only: medians over interleaved repetitions (the four
  (file, resolver) systems timed in turn, rotating the start), after a warm-up; `--threads`
  interpreter threads (default 1: the machine may be shared);
* file sizes;
* the time to fuse a file: load_tflite, fuse_while_loops (recognition and its check on
  random inputs in JAX, compile included), export_tflite; median of `--fuse-reps` runs;
* the largest difference between the two files' outputs in LiteRT (a sanity check).

Writes experiments/results/bench_fusion.json and bench_fusion.txt.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bench_ops
import numpy as np

RESULTS = pathlib.Path(__file__).parent / "results"
Shape = tuple[int, int, int, int]


def convert_with_tensorflow(shapes: list[Shape], out_dir: pathlib.Path) -> None:
    """Writes ``out_dir/<B>_<T>_<I>_<H>.tflite`` for each shape (run in its own process)."""
    import keras
    import tensorflow as tf

    for batch, steps, n_input, units in shapes:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((steps, n_input), batch_size=batch), keras.layers.LSTM(units, return_sequences=True)]
        )
        with contextlib.redirect_stdout(io.StringIO()):  # the converter prints the model's signatures
            data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
        (out_dir / f"{batch}_{steps}_{n_input}_{units}.tflite").write_bytes(data)


def while_models(shapes: list[Shape], out_dir: pathlib.Path) -> dict[Shape, bytes]:
    """{shape: the converter's WHILE model}, converted in a subprocess (Keras on TensorFlow)."""
    arg = ";".join(",".join(map(str, s)) for s in shapes)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    subprocess.run([sys.executable, __file__, "--convert", str(out_dir), arg], check=True, env=env)
    return {s: (out_dir / f"{'_'.join(map(str, s))}.tflite").read_bytes() for s in shapes}


def fuse(data: bytes) -> tuple[bytes, dict[str, float], list[str]]:
    """`jaxlstm convert` of one file: (the fused file, seconds per stage, the loop report)."""
    from jaxlstm.model.loop_fusion import fuse_while_loops
    from jaxlstm.tflite import export_tflite, load_tflite

    times = {}
    start = time.perf_counter()
    model = load_tflite(data)
    times["load"] = time.perf_counter() - start
    start = time.perf_counter()
    fused, report = fuse_while_loops(model)
    times["fuse"] = time.perf_counter() - start
    start = time.perf_counter()
    out = export_tflite(fused)
    times["export"] = time.perf_counter() - start
    return out, times, [str(entry) for entry in report]


def litert_timer(model: bytes, xnnpack: bool, threads: int, x: np.ndarray) -> bench_ops.Timer:
    """n -> seconds for n invokes of `model` on `x` (LiteRT, AUTO or builtin op resolver)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, num_threads=threads, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    interpreter.set_tensor(index, x)

    def timer(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            interpreter.invoke()
        return time.perf_counter() - start

    return timer


def bench_shape(shape: Shape, data: bytes, reps: int, fuse_reps: int, threads: int) -> dict:
    from jaxlstm.parity.litert import run_litert

    runs = [fuse(data) for _ in range(fuse_reps)]
    fused, _, report = runs[0]
    fuse_times = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    x = np.random.default_rng(0).standard_normal(shape[:3]).astype(np.float32)
    difference = max(
        float(np.max(np.abs(a - b)))
        for xnnpack in (True, False)
        for a, b in zip(run_litert(data, [x], xnnpack=xnnpack)[0], run_litert(fused, [x], xnnpack=xnnpack)[0])
    )
    timers = {
        f"{kind}_{resolver}": litert_timer(model, resolver == "xnnpack", threads, x)
        for resolver in ("xnnpack", "builtin")
        for kind, model in (("while", data), ("fused", fused))
    }
    return {
        "shape": shape,
        "bytes": {"while": len(data), "fused": len(fused)},
        "fuse_s": fuse_times,
        "loops": report,
        "max_abs_difference": difference,
        "latency": bench_ops.time_interleaved(timers, reps),
    }


def summary(rows: list[dict], info: dict) -> str:
    lines = [
        "fused UNIDIRECTIONAL_SEQUENCE_LSTM vs the converter's WHILE loop (Keras 3 LSTM, TF "
        f"{info['tensorflow']}), LiteRT {info['litert']}, {info['threads']} thread(s), "
        f"{info['reps']} interleaved repetitions; {info['processor']} ({info['cpu_count']} CPUs)",
        "latency: median ms per invoke; ratio = WHILE / fused (> 1: the fused file is faster)",
        "",
        f"{'B,T,I,H':>16} | {'resolver':>8} | {'WHILE ms':>9} {'fused ms':>9} {'ratio':>6} | min ms W / F",
    ]
    for r in rows:
        t = r["latency"]
        for resolver in ("xnnpack", "builtin"):
            w, f = t[f"while_{resolver}"], t[f"fused_{resolver}"]
            lines.append(
                f"{','.join(map(str, r['shape'])):>16} | {resolver:>8} | {w['median_ms']:9.2f} {f['median_ms']:9.2f} "
                f"{w['median_ms'] / f['median_ms']:6.2f} | {w['min_ms']:.2f} / {f['min_ms']:.2f}"
            )
    lines += [
        "",
        f"{'B,T,I,H':>16} | {'WHILE bytes':>11} {'fused bytes':>11} {'ratio':>6} | fuse s (load, fuse, export)",
    ]
    for r in rows:
        b, s = r["bytes"], r["fuse_s"]
        lines.append(
            f"{','.join(map(str, r['shape'])):>16} | {b['while']:11,} {b['fused']:11,} {b['fused'] / b['while']:6.3f} | "
            f"{sum(s.values()):.2f} ({s['load']:.2f}, {s['fuse']:.2f}, {s['export']:.2f})"
        )
    lines += ["", "max |fused - WHILE| in LiteRT (XNNPACK and builtin): "]
    lines[-1] += ", ".join(f"{r['max_abs_difference']:.1e}" for r in rows)
    lines += ["loops:", *(f"  {','.join(map(str, r['shape']))}: {line}" for r in rows for line in r["loops"])]
    return "\n".join(lines)


def _shape(text: str) -> Shape:
    b, t, i, h = (int(v) for v in text.split(","))
    return b, t, i, h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=_shape, action="append", help="B,T,I,H (repeatable)")
    parser.add_argument("--quick", action="store_true", help="two small shapes, 5 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 15)")
    parser.add_argument("--fuse-reps", type=int, default=3, help="runs of the fusion timing (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="LiteRT interpreter threads (default 1)")
    parser.add_argument("--convert", nargs=2, metavar=("OUT_DIR", "SHAPES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.convert:  # the TensorFlow subprocess
        convert_with_tensorflow([_shape(s) for s in args.convert[1].split(";")], pathlib.Path(args.convert[0]))
        return 0
    shapes = args.shape or (bench_ops.QUICK_SHAPES if args.quick else bench_ops.SHAPES)
    reps = args.reps or (5 if args.quick else 15)
    with tempfile.TemporaryDirectory() as tmp:
        models = while_models(list(shapes), pathlib.Path(tmp))
    rows = []
    for shape in shapes:
        print(f"shape {shape} ...", flush=True)
        rows.append(bench_shape(shape, models[shape], reps, args.fuse_reps, args.threads))
    info = {
        **bench_ops.machine_info(),
        "tensorflow": importlib.metadata.version("tensorflow"),
        "litert": importlib.metadata.version("ai-edge-litert"),
        "threads": args.threads,
        "reps": reps,
    }
    text = summary(rows, info)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_fusion.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    (RESULTS / "bench_fusion.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
