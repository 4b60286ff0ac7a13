"""Forward speed of jaxlstm's UNIDIRECTIONAL_SEQUENCE_LSTM vs flax.linen and Keras 3 (JAX backend).

Usage::

    python experiments/bench_ops.py              # the four issue-2 shapes
    python experiments/bench_ops.py --quick      # one small shape, few repetitions
    python experiments/bench_ops.py --variants   # also time alternative scan formulations

All systems get the same weights (checked to agree to 1e-5 before timing). Times are
ms per forward call: the median over interleaved repetitions, after compile and warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.ops.lstm import LSTMWeights, unidirectional_sequence_lstm

SHAPES = ((1, 100, 64, 128), (32, 100, 128, 256), (8, 400, 40, 512), (128, 50, 256, 256))
QUICK_SHAPES = ((1, 100, 64, 128), (32, 100, 128, 256))
AGREEMENT_TOL = 1e-5  # same float32 math, different summation order

Shape = tuple[int, int, int, int]
Call = tuple[Callable, tuple]  # a jitted function and its arguments


# ----------------------------------------------------------------------------- timing


Timer = Callable[[int], float]  # runs a system n times, returns the elapsed seconds


def jax_runner(call: Call) -> Callable[[], jax.Array]:
    """A zero-argument function that runs `call` and waits for its result."""
    fn, args = call
    return lambda: jax.block_until_ready(fn(*args))


def float32_matmuls() -> None:
    """Makes every float32 JAX matmul of this process multiply in float32, as jaxlstm's float
    ops always do. With JAX's default precision a GPU would run flax's and Keras's matmuls as
    TF32 (a TPU as one bfloat16 pass): another precision, and outputs that fail the 1e-5
    agreement check. On the CPU, which multiplies in float32 at any precision, nothing changes."""
    jax.config.update("jax_default_matmul_precision", "highest")


def local_timer(run: Callable[[], object]) -> Timer:
    """A `Timer` of a synchronous zero-argument function."""

    def timer(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            run()
        return time.perf_counter() - start

    return timer


def time_interleaved(timers: dict[str, Timer], reps: int, sample_s: float = 0.2) -> dict[str, dict]:
    """Median ms per call of each system, timed round-robin.

    Each system is warmed up and given a batch size worth about `sample_s`; then every
    repetition times one batch of each system in turn (rotating the start), so machine load
    hits all systems alike.

    Returns:
      {name: {"median_ms", "min_ms", "samples_ms"}}.
    """
    names = list(timers)
    batch = {}
    for name in names:
        timers[name](1)
        batch[name] = max(1, int(sample_s / max(timers[name](1), 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            samples[name].append(timers[name](batch[name]) / batch[name] * 1e3)
    return {name: {"median_ms": statistics.median(s), "min_ms": min(s), "samples_ms": s} for name, s in samples.items()}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Where the timings were taken."""
    device = jax.devices()[0]
    return {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
    }


# ----------------------------------------------------------------------------- systems


def keras_layout_weights(shape: Shape, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 LSTM weights in Keras layout (gate order i, f, c, o) and an input."""
    batch, time_steps, n_input, n_cell = shape
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(n_input + n_cell)
    return {
        "kernel": rng.normal(0, scale, (n_input, 4 * n_cell)).astype(np.float32),
        "recurrent_kernel": rng.normal(0, scale, (n_cell, 4 * n_cell)).astype(np.float32),
        "bias": rng.normal(0, 0.1, (4 * n_cell,)).astype(np.float32),
        "x": rng.normal(size=(batch, time_steps, n_input)).astype(np.float32),
    }


def flax_params(kernel, recurrent_kernel, bias) -> dict:
    """flax.linen OptimizedLSTMCell params (per-gate Dense ii..io without bias, hi..ho with)."""
    n = recurrent_kernel.shape[0]
    cell = {}
    for k, gate in enumerate("ifgo"):
        block = slice(k * n, (k + 1) * n)
        cell[f"i{gate}"] = {"kernel": jnp.asarray(kernel[:, block])}
        cell[f"h{gate}"] = {
            "kernel": jnp.asarray(recurrent_kernel[:, block]),
            "bias": jnp.asarray(bias[block]),
        }
    return {"params": {"cell": cell}}


def jaxlstm_forward(weights: LSTMWeights, x: jax.Array, matmul_dtype=None) -> jax.Array:
    return unidirectional_sequence_lstm(x, weights, matmul_dtype=matmul_dtype)[0]


def flax_forward_fn(n_cell: int) -> Callable:
    import flax.linen as nn

    return nn.RNN(nn.OptimizedLSTMCell(n_cell)).apply


def keras_forward_fn(w: dict) -> tuple[Callable, list]:
    """A pure function ``(trainable_values, x) -> y`` of a Keras 3 LSTM, and its values."""
    import keras

    batch, time_steps, n_input = w["x"].shape
    layer = keras.layers.LSTM(w["recurrent_kernel"].shape[0], return_sequences=True)
    layer.build((batch, time_steps, n_input))
    layer.set_weights([w["kernel"], w["recurrent_kernel"], w["bias"]])
    frozen = [v.value for v in layer.non_trainable_variables]

    def forward(trainable, x):
        return layer.stateless_call(trainable, frozen, x)[0]

    return forward, [v.value for v in layer.trainable_variables]


def forward_calls(shape: Shape) -> dict[str, Call]:
    """The forward pass of each system on `shape`, after checking they agree."""
    w = keras_layout_weights(shape)
    x = jnp.asarray(w["x"])
    keras_fn, keras_values = keras_forward_fn(w)
    calls = {
        "jaxlstm": (
            jax.jit(jaxlstm_forward),
            (jax.device_put(lstm_weights_from_fused(w["kernel"], w["recurrent_kernel"], w["bias"])), x),
        ),
        "flax": (jax.jit(flax_forward_fn(shape[3])), (flax_params(w["kernel"], w["recurrent_kernel"], w["bias"]), x)),
        "keras": (jax.jit(keras_fn), (keras_values, x)),
    }
    check_agreement({name: np.asarray(jax_runner(call)()) for name, call in calls.items()})
    return calls


def check_agreement(outputs: dict[str, np.ndarray], tol: float = AGREEMENT_TOL) -> None:
    """Raises if any system's output differs from the first one's by more than `tol`."""
    first, reference = next(iter(outputs.items()))
    for name, y in outputs.items():
        err = float(np.max(np.abs(y - reference)))
        if err > tol:
            raise AssertionError(f"{name} differs from {first} by {err:.2e} > {tol}")


# ----------------------------------------------------------------------------- scan variants


def lstm_gates(i, f, g, o, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(h, c') of the plain LSTM step from the gates' pre-activations and the cell state c."""
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c


def lstm_cell(z: jax.Array, c: jax.Array, axis: int = -1) -> tuple[jax.Array, jax.Array]:
    """`lstm_gates` of z = [i, f, g, o] stacked along `axis`."""
    return lstm_gates(*jnp.split(z, 4, axis=axis), c)


def _contract_last(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w.T`` written as a dot contracting both last axes (TFLite weight layout)."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))


def scan_variant(mode: str, tflite_layout: bool = False, unroll: int = 1, chunk: int = 1) -> Callable:
    """A plain float LSTM written one way (for `--variants`): ``(k, r, b, x [B,T,I]) -> y``.

    mode: where the input projection x @ K happens:
      "hoisted": one [T*B, I] @ [I, 4H] matmul before the scan;
      "hoisted_gates": one [T*B, I] @ [I, H] matmul per gate before the scan, read by the
        loop as four arrays instead of slices of one (jaxlstm at batch 1);
      "inside": per step, fused with the recurrent one as [x_t, h] @ [K; R] (flax, Keras);
      "inside2": per step, as two matmuls x_t @ K + h @ R;
      "split2": like "inside", the fused matmul as two independent ones over the column
        halves (gates i, f and c, o), so XLA:CPU can run them on two cores at once;
      "chunked": one matmul per block of `chunk` steps inside an outer scan;
      "columns": like "inside" on transposed activations, carry (h^T, c^T) [H, B] and
        z^T = [K; R]^T @ [x_t; h]^T (needs `tflite_layout`).
    tflite_layout: k [4H, I] and r [4H, H] come in TFLite's layout and every dot contracts
      their last axis, instead of Keras's k [I, 4H] and r [H, 4H].
    """
    dot = _contract_last if tflite_layout else jnp.matmul

    def hoisted_scan(kernel, r, bias, x, carry):
        steps, batch, _ = x.shape
        z_in = (dot(x.reshape(steps * batch, -1), kernel) + bias).reshape(steps, batch, -1)

        def step(carry, z_t):
            h, c = lstm_cell(z_t + dot(carry[0], r), carry[1])
            return (h, c), h

        return jax.lax.scan(step, carry, z_in, unroll=unroll)

    def gate_hoisted_scan(kernel, r, bias, x, carry):
        steps, batch, _ = x.shape
        flat = x.reshape(steps * batch, -1)
        kernels = jnp.split(kernel, 4, axis=0 if tflite_layout else 1)
        z_in = tuple((dot(flat, k) + b).reshape(steps, batch, -1) for k, b in zip(kernels, jnp.split(bias, 4)))

        def step(carry, z_t):
            h, c = lstm_gates(*map(jnp.add, z_t, jnp.split(dot(carry[0], r), 4, axis=-1)), carry[1])
            return (h, c), h

        return jax.lax.scan(step, carry, z_in, unroll=unroll)

    def forward(kernel, r, bias, x):
        steps, batch, _ = x.shape
        n = r.shape[1] if tflite_layout else r.shape[0]
        zeros = jnp.zeros((batch, n), x.dtype)
        if mode == "hoisted":
            return hoisted_scan(kernel, r, bias, x, (zeros, zeros))[1]
        if mode == "hoisted_gates":
            return gate_hoisted_scan(kernel, r, bias, x, (zeros, zeros))[1]
        if mode == "chunked":
            blocks = x.reshape(steps // chunk, chunk, batch, -1)
            ys = jax.lax.scan(lambda carry, xb: hoisted_scan(kernel, r, bias, xb, carry), (zeros, zeros), blocks)[1]
            return ys.reshape(steps, batch, n)
        fused = jnp.concatenate([kernel, r], axis=1 if tflite_layout else 0)
        halves = jnp.split(fused, 2, axis=0 if tflite_layout else 1)
        if mode == "columns":

            def column_step(carry, x_t):
                z = fused @ jnp.concatenate([x_t, carry[0]]) + bias[:, None]
                h, c = lstm_cell(z, carry[1], axis=0)
                return (h, c), h

            zeros = jnp.zeros((n, batch), x.dtype)
            ys = jax.lax.scan(column_step, (zeros, zeros), jnp.swapaxes(x, 1, 2), unroll=unroll)[1]
            return jnp.swapaxes(ys, 1, 2)

        def step(carry, x_t):
            h, c = carry
            if mode == "inside":
                z = dot(jnp.concatenate([x_t, h], axis=-1), fused) + bias
            elif mode == "split2":
                xh = jnp.concatenate([x_t, h], axis=-1)
                z = jnp.concatenate([dot(xh, half) for half in halves], axis=-1) + bias
            else:
                z = dot(x_t, kernel) + dot(h, r) + bias
            h, c = lstm_cell(z, c)
            return (h, c), h

        return jax.lax.scan(step, (zeros, zeros), x, unroll=unroll)[1]

    return jax.jit(lambda k, r, b, x: jnp.swapaxes(forward(k, r, b, jnp.swapaxes(x, 0, 1)), 0, 1))


VARIANTS = {
    "hoisted": dict(mode="hoisted"),
    "hoisted_u4": dict(mode="hoisted", unroll=4),
    "hoisted_tfl": dict(mode="hoisted", tflite_layout=True),
    "hoisted_gates": dict(mode="hoisted_gates"),
    "hoisted_gates_tfl": dict(mode="hoisted_gates", tflite_layout=True),
    "chunk10": dict(mode="chunked", chunk=10),
    "chunk25": dict(mode="chunked", chunk=25),
    "inside": dict(mode="inside"),
    "inside_u2": dict(mode="inside", unroll=2),
    "inside_u4": dict(mode="inside", unroll=4),
    "inside_tfl": dict(mode="inside", tflite_layout=True),
    "inside2": dict(mode="inside2"),
    "split2": dict(mode="split2"),
    "columns_tfl": dict(mode="columns", tflite_layout=True),
}


def variant_calls(shape: Shape) -> dict[str, Call]:
    w = keras_layout_weights(shape)
    x, bias = jnp.asarray(w["x"]), jnp.asarray(w["bias"])
    calls = {}
    for name, spec in VARIANTS.items():
        k, r = w["kernel"], w["recurrent_kernel"]
        if spec.get("tflite_layout"):
            k, r = np.ascontiguousarray(k.T), np.ascontiguousarray(r.T)
        calls[name] = (scan_variant(**spec), (jnp.asarray(k), jnp.asarray(r), bias, x))
    return calls


# ----------------------------------------------------------------------------- report


def format_table(rows: list[dict], baseline: str, key: str = "median_ms") -> str:
    """Systems down, shapes across: ms per call and, in brackets, the ratio to `baseline`
    (time / baseline time: above 1 means `baseline` is faster)."""
    systems = list(rows[0]["timings"])
    width = max(20, *(len(s) + 2 for s in systems))
    lines = [f"{'system':<{width}}" + "".join(f"{','.join(map(str, r['shape'])):>24}" for r in rows)]
    for system in systems:
        cells = []
        for row in rows:
            ms = row["timings"][system][key]
            cells.append(f"{ms:>12.3f} ms ({ms / row['timings'][baseline][key]:>5.2f}x)")
        lines.append(f"{system:<{width}}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two small shapes, 5 repetitions")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 15)")
    parser.add_argument("--variants", action="store_true", help="also time alternative scan formulations")
    parser.add_argument("--json", default=None, help="write the timings to this JSON file")
    args = parser.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    reps = args.reps or (5 if args.quick else 15)

    float32_matmuls()
    print(json.dumps(machine_info()))
    rows = []
    for shape in shapes:
        calls = forward_calls(shape)
        if args.variants:
            calls.update(variant_calls(shape))
            check_agreement({name: np.asarray(jax_runner(call)()) for name, call in calls.items()})
        timings = time_interleaved({name: local_timer(jax_runner(call)) for name, call in calls.items()}, reps)
        rows.append({"shape": shape, "timings": timings})
        print(format_table(rows[-1:], "jaxlstm"), flush=True)
    print(f"\nforward, ms per call (median of {reps} interleaved repetitions; ratio to jaxlstm)")
    print(format_table(rows, "jaxlstm"))
    print("\nthe same, minimum over repetitions (less sensitive to other load on the machine)")
    print(format_table(rows, "jaxlstm", "min_ms"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(), "reps": reps, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
