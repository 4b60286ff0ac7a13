"""jaxlstm's UNIDIRECTIONAL_SEQUENCE_LSTM against flax, Keras 3, LiteRT and torch.nn.LSTM.

Usage::

    python experiments/bench.py            # four shapes, 10 repetitions (a few minutes)
    python experiments/bench.py --quick    # two small shapes, 3 repetitions
    python experiments/bench.py --shape 32,100,128,256 --shape 32,200,128,256  # chosen shapes

Measures, for every shape (B, T, I, H), with the same float32 weights everywhere and
float32 matmul products (no TF32 on a GPU: `bench_ops.float32_matmuls`; outputs checked to
agree before timing):

* forward: ms per call of the whole sequence;
* train: ms per forward + backward of ``mean(outputs)`` w.r.t. all weights (JAX and torch);
* compile: seconds to trace and compile the forward and the train step (JAX systems), and
  the train step's scratch memory (XLA's ``memory_analysis``: what the saved activations take);
* export: seconds to write the .tflite (jaxlstm.export_tflite, TFLiteConverter).

Systems: ``jaxlstm`` (all features off), ``jaxlstm_peep_proj`` (peephole and a projection
to n_output = H: 4IH + 5H^2 matmul work per step instead of 4IH + 4H^2), ``jaxlstm_bf16``
(``matmul_dtype=jnp.bfloat16``: bfloat16 matmul operands, float32 accumulation), ``jax_minimal``
(the fastest hand-written JAX LSTM from bench_ops.py, the cost floor of a general op),
``flax`` (linen OptimizedLSTMCell + nn.RNN), ``keras`` (Keras 3 LSTM, JAX backend),
``litert_jaxlstm`` (LiteRT on jaxlstm's own export), ``litert_converter`` (LiteRT on
TFLiteConverter's model of the same tf_keras layer), ``torch`` (torch.nn.LSTM on CPU, which
runs oneDNN's fused LSTM primitive), ``torch_no_onednn`` (the same with oneDNN switched off:
ATen's own loop of one GEMM per step plus pointwise kernels, the structure XLA compiles) and,
with CUDA, ``torch_cuda``; JAX runs on its default backend (the GPU when there is one).

Times are medians over interleaved repetitions (each system in turn, rotating the start),
after compile and warm-up. Writes experiments/results/bench.json and bench.png.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import time
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import bench_ops
import jax
import jax.numpy as jnp
import numpy as np

import jaxlstm
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model.builder import ModelBuilder
from jaxlstm.ops import LSTMOptions, LSTMWeights

RESULTS = pathlib.Path(__file__).parent / "results"
# LiteRT's float kernel and torch's accumulate the gate matmuls in another order than XLA.
OTHER_RUNTIME_TOL = 1e-4
# matmul_dtype=bfloat16 rounds every matmul operand to 8 significant bits (see
# tests/ops/test_matmul_dtype.py); outputs lie in [-1, 1].
BF16_TOL = 3e-2

Shape = tuple[int, int, int, int]


# ----------------------------------------------------------------------------- systems


def peephole_projection_weights(w: LSTMWeights, seed: int = 1) -> LSTMWeights:
    """`w` plus peephole vectors and a square projection (n_output stays n_cell)."""
    n = w.n_cell
    rng = np.random.default_rng(seed)
    return w.replace(
        cell_to_input_weights=rng.normal(0, 0.1, n).astype(np.float32),
        cell_to_forget_weights=rng.normal(0, 0.1, n).astype(np.float32),
        cell_to_output_weights=rng.normal(0, 0.1, n).astype(np.float32),
        projection_weights=rng.normal(0, 1 / np.sqrt(n), (n, n)).astype(np.float32),
        projection_bias=np.zeros(n, np.float32),
    )


def jax_systems(shape: Shape, w: dict) -> dict[str, tuple[Callable, tuple]]:
    """The JAX systems as (pure forward function ``(params, x) -> y``, (params, x))."""
    x = jnp.asarray(w["x"])
    weights = jax.device_put(lstm_weights_from_fused(w["kernel"], w["recurrent_kernel"], w["bias"]))
    keras_fn, keras_values = bench_ops.keras_forward_fn(w)
    minimal = bench_ops.scan_variant(**bench_ops.VARIANTS["inside"])
    return {
        "jaxlstm": (bench_ops.jaxlstm_forward, (weights, x)),
        "jaxlstm_peep_proj": (bench_ops.jaxlstm_forward, (peephole_projection_weights(weights), x)),
        "jaxlstm_bf16": (functools.partial(bench_ops.jaxlstm_forward, matmul_dtype=jnp.bfloat16), (weights, x)),
        "jax_minimal": (
            lambda p, x: minimal(*p, x),
            (tuple(jnp.asarray(w[k]) for k in ("kernel", "recurrent_kernel", "bias")), x),
        ),
        "flax": (
            bench_ops.flax_forward_fn(shape[3]),
            (bench_ops.flax_params(w["kernel"], w["recurrent_kernel"], w["bias"]), x),
        ),
        "keras": (keras_fn, (keras_values, x)),
    }


def train_step(forward: Callable) -> Callable:
    """``(params, x) -> grads`` of ``mean(forward(params, x))``."""
    return jax.grad(lambda params, x: jnp.mean(forward(params, x)))


def timed_compile(fn: Callable, args: tuple) -> tuple[Callable, float]:
    """Traces and compiles `fn` for `args`; returns the executable and the seconds it took."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def torch_system(w: dict, device: str) -> tuple[Callable, Callable, Callable]:
    """torch.nn.LSTM with the same weights: (forward runner, train runner, output)."""
    import torch

    n_input, n_cell = w["kernel"].shape[0], w["recurrent_kernel"].shape[0]
    lstm = torch.nn.LSTM(n_input, n_cell, batch_first=True).to(device)
    with torch.no_grad():  # torch gate order i, f, g, o = Keras's; two biases, summed
        lstm.weight_ih_l0.copy_(torch.from_numpy(w["kernel"].T.copy()))
        lstm.weight_hh_l0.copy_(torch.from_numpy(w["recurrent_kernel"].T.copy()))
        lstm.bias_ih_l0.copy_(torch.from_numpy(w["bias"]))
        lstm.bias_hh_l0.zero_()
    x = torch.from_numpy(w["x"]).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            y = lstm(x)[0]
        sync()
        return y

    def train():
        lstm.zero_grad(set_to_none=True)
        lstm(x)[0].mean().backward()
        sync()

    return forward, train, lambda: forward().cpu().numpy()


def _torch_worker(conn, w: dict, device: str, onednn: bool) -> None:
    """Serves `TorchWorker`: sends the output, then times ("forward" | "train", n) requests."""
    import torch

    torch.backends.mkldnn.enabled = onednn
    # float32 products on a GPU too, as in the JAX systems (`bench_ops.float32_matmuls`):
    # cuDNN's LSTM would use TF32 by default
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    forward, train, output = torch_system(w, device)
    conn.send(output())
    runs = {"forward": forward, "train": train}
    while (request := conn.recv()) is not None:
        kind, n = request
        conn.send(bench_ops.local_timer(runs[kind])(n))


class TorchWorker:
    """torch.nn.LSTM in its own process, timed there.

    In the benchmark's process, the threads of XLA, TensorFlow and torch's OpenMP runtime
    compete for the cores (torch at batch 1 ran 1000x slower there); a separate process
    keeps torch's numbers honest while still interleaving it with the other systems.
    """

    def __init__(self, w: dict, device: str, onednn: bool = True):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_torch_worker, args=(child, w, device, onednn), daemon=True)
        self._process.start()
        self.output = self._conn.recv()

    def timer(self, kind: str) -> bench_ops.Timer:
        def timer(n: int) -> float:
            self._conn.send((kind, n))
            return self._conn.recv()

        return timer

    def close(self) -> None:
        self._conn.send(None)
        self._process.join()


def litert_runner(model: bytes) -> tuple[Callable, Callable]:
    """A LiteRT interpreter on `model` with all CPU threads: (forward runner, output)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model, num_threads=os.cpu_count())
    interpreter.allocate_tensors()
    run = interpreter.get_signature_runner()
    (input_name,) = run.get_input_details()

    def forward(x):
        return next(iter(run(**{input_name: x}).values()))

    def output(x):
        interpreter.reset_all_variables()
        return forward(x)

    return forward, output


def jaxlstm_tflite(w: dict) -> tuple[bytes, float]:
    """jaxlstm's own .tflite of the layer and the export seconds (ModelBuilder + export)."""
    start = time.perf_counter()
    builder = ModelBuilder()
    x = builder.add_input("x", w["x"].shape)
    weights = lstm_weights_from_fused(w["kernel"], w["recurrent_kernel"], w["bias"])
    y = builder.add_lstm(x, weights, LSTMOptions())
    data = jaxlstm.export_tflite(builder.build([y]))
    return data, time.perf_counter() - start


def converter_tflite(w: dict) -> tuple[bytes, float]:
    """TFLiteConverter's .tflite of the same tf_keras LSTM and the conversion seconds."""
    import tensorflow as tf
    import tf_keras

    batch, steps, n_input = w["x"].shape
    inputs = tf_keras.Input((steps, n_input), batch_size=batch)
    layer = tf_keras.layers.LSTM(w["recurrent_kernel"].shape[0], return_sequences=True)
    model = tf_keras.Model(inputs, layer(inputs))
    layer.set_weights([w["kernel"], w["recurrent_kernel"], w["bias"]])
    start = time.perf_counter()
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    return data, time.perf_counter() - start


TORCH_SYSTEMS = {"torch": ("cpu", True), "torch_no_onednn": ("cpu", False), "torch_cuda": ("cuda", True)}


def torch_systems(choice: str) -> list[str]:
    """Names in `TORCH_SYSTEMS` to run for ``--torch choice`` (none without torch)."""
    try:
        import torch
    except ImportError:
        return []
    cuda = torch.cuda.is_available()
    if choice == "cuda" and not cuda:
        raise SystemExit("--torch cuda: torch sees no CUDA device")
    on = {"cpu": {"cpu"}, "cuda": {"cuda"}, "auto": {"cpu", "cuda"} if cuda else {"cpu"}}[choice]
    return [name for name, (device, _) in TORCH_SYSTEMS.items() if device in on]


# ----------------------------------------------------------------------------- one shape


def bench_shape(shape: Shape, reps: int, torch_choice: str, litert: bool) -> dict:
    """All measurements for one shape: {"forward", "train": timings, "compile_s", "export_s"}."""
    w = bench_ops.keras_layout_weights(shape)
    forward, train, outputs, compile_s, export_s, train_scratch_mib = {}, {}, {}, {}, {}, {}
    for name, (fn, args) in jax_systems(shape, w).items():
        fwd, fwd_s = timed_compile(fn, args)
        grad, grad_s = timed_compile(train_step(fn), args)
        compile_s[name] = {"forward": fwd_s, "train": grad_s}
        train_scratch_mib[name] = grad.memory_analysis().temp_size_in_bytes / 2**20
        forward[name] = bench_ops.local_timer(bench_ops.jax_runner((fwd, args)))
        train[name] = bench_ops.local_timer(bench_ops.jax_runner((grad, args)))
        if name != "jaxlstm_peep_proj":  # other weights
            outputs[name] = np.asarray(fwd(*args))
    if litert:
        for name, export in (("litert_jaxlstm", jaxlstm_tflite), ("litert_converter", converter_tflite)):
            model, export_s[name] = export(w)
            run, output = litert_runner(model)
            forward[name] = bench_ops.local_timer(lambda run=run: run(w["x"]))
            outputs[name] = output(w["x"])
    workers = []
    for name in torch_systems(torch_choice):
        workers.append(TorchWorker(w, *TORCH_SYSTEMS[name]))
        forward[name], train[name] = workers[-1].timer("forward"), workers[-1].timer("train")
        outputs[name] = workers[-1].output
    try:
        bench_ops.check_agreement(
            {"jaxlstm": outputs["jaxlstm"], "jaxlstm_bf16": outputs.pop("jaxlstm_bf16")}, BF16_TOL
        )
        bench_ops.check_agreement({k: v for k, v in outputs.items() if k.startswith(("jax", "flax", "keras"))})
        bench_ops.check_agreement(outputs, OTHER_RUNTIME_TOL)
        return {
            "shape": shape,
            "forward": bench_ops.time_interleaved(forward, reps),
            "train": bench_ops.time_interleaved(train, reps),
            "compile_s": compile_s,
            "train_scratch_mib": train_scratch_mib,
            "export_s": export_s,
        }
    finally:
        for worker in workers:
            worker.close()


# ----------------------------------------------------------------------------- report


def summary(rows: list[dict]) -> str:
    """The printed tables: per metric, ms and ratio to jaxlstm for every system and shape."""
    parts = []
    for metric in ("forward", "train"):
        table = [{"shape": r["shape"], "timings": r[metric]} for r in rows]
        for key, what in (("median_ms", "median"), ("min_ms", "minimum (least disturbed by other load)")):
            parts.append(f"{metric}: ms per call, {what} (ratio system / jaxlstm; above 1: jaxlstm faster)")
            parts.append(bench_ops.format_table(table, "jaxlstm", key))
    parts.append("compile: forward / train step, seconds")
    parts.append(
        "\n".join(
            f"{name:<20}"
            + "".join(f"{r['compile_s'][name]['forward']:>9.2f} /{r['compile_s'][name]['train']:>6.2f} s" for r in rows)
            for name in rows[0]["compile_s"]
        )
    )
    parts.append("train step scratch memory (XLA memory_analysis temp), MiB")
    parts.append(
        "\n".join(
            f"{name:<20}" + "".join(f"{r['train_scratch_mib'][name]:>18.1f}  " for r in rows)
            for name in rows[0]["train_scratch_mib"]
        )
    )
    if rows[0]["export_s"]:
        parts.append("export: seconds to produce the .tflite")
        parts.append(
            "\n".join(
                f"{name:<20}" + "".join(f"{r['export_s'][name]:>18.2f} s" for r in rows) for name in rows[0]["export_s"]
            )
        )
    parts.append(goals(rows))
    return "\n\n".join(parts)


def goals(rows: list[dict]) -> str:
    """The issue's targets, per shape: ratios to jaxlstm (time of X / time of jaxlstm)."""
    lines = ["targets (median ratios; >= 1 means jaxlstm is at least as fast)"]
    for r in rows:
        shape = ",".join(map(str, r["shape"]))
        for metric in ("forward", "train"):
            t = {k: v["median_ms"] for k, v in r[metric].items()}
            base = t["jaxlstm"]
            others = ("torch", "torch_no_onednn", "torch_cuda", "flax", "keras")
            cells = [f"{k}/jaxlstm {t[k] / base:.2f}" for k in others if k in t]
            cells.append(f"generality overhead (jaxlstm/jax_minimal) {base / t['jax_minimal'] - 1:+.0%}")
            _, _, n_input, n_cell = r["shape"]
            work = 1 + n_cell / (4 * (n_input + n_cell))  # the projection's matmul per step
            cells.append(f"peep+proj/plain {t['jaxlstm_peep_proj'] / base:.2f} (matmul work {work:.2f}x)")
            cells.append(f"bf16 matmuls speed-up {base / t['jaxlstm_bf16']:.2f}x")
            if "torch" in t:
                cells.append(f"torch/jaxlstm_bf16 {t['torch'] / t['jaxlstm_bf16']:.2f}")
            lines.append(f"{shape:<16}{metric:<8}" + ", ".join(cells))
    return "\n".join(lines)


def plot(rows: list[dict], path: pathlib.Path) -> None:
    """Grouped bars (log ms) per shape, one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("forward", "train")
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5))
    for ax, metric in zip(axes, metrics):
        systems = list(rows[0][metric])
        width = 0.8 / len(systems)
        for k, system in enumerate(systems):
            ms = [r[metric][system]["median_ms"] for r in rows]
            ax.bar(np.arange(len(rows)) + k * width, ms, width, label=system)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2)
        ax.set_xticklabels([",".join(map(str, r["shape"])) for r in rows])
        ax.set_yscale("log")
        ax.set_ylabel("ms per call (median)")
        ax.set_xlabel("B, T, I, H")
        ax.set_title(f"{metric} ({jax.default_backend()})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _shape(text: str) -> tuple[int, int, int, int]:
    """ "B,T,I,H" -> (B, T, I, H)."""
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected four positive integers B,T,I,H, got {text!r}")
    return shape


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small shapes, 3 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 10)")
    parser.add_argument(
        "--shape",
        action="append",
        type=_shape,
        metavar="B,T,I,H",
        help="a shape to run instead of the default ones (repeatable)",
    )
    parser.add_argument(
        "--torch",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="torch.nn.LSTM systems: cpu = torch and torch_no_onednn, cuda = torch_cuda, "
        "auto = cpu plus cuda when available",
    )
    parser.add_argument("--no-litert", action="store_true", help="skip LiteRT and the TF converter")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS, help="folder for bench.json and bench.png")
    args = parser.parse_args(argv)
    shapes = args.shape or (bench_ops.QUICK_SHAPES if args.quick else bench_ops.SHAPES)
    reps = args.reps or (3 if args.quick else 10)

    bench_ops.float32_matmuls()
    machine = bench_ops.machine_info()
    print(json.dumps(machine))
    rows = []
    for shape in shapes:
        rows.append(bench_shape(shape, reps, args.torch, not args.no_litert))
        print(f"done {shape}", flush=True)
    print(summary(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "bench.json", "w") as f:
        json.dump({"machine": machine, "reps": reps, "rows": rows}, f, indent=1)
    plot(rows, args.out / "bench.png")
    print(f"wrote bench.json and bench.png to {args.out.name}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
