"""How the time loop's matmul uses a second core on XLA:CPU and in torch.

Why torch.nn.LSTM is faster than the JAX LSTMs at batch > 1 on a multi-core CPU. For the
step matmul of each `bench.py` shape with batch > 1, as the op's batch-minor loop writes it
(W [4H, I + H] @ [x_t; h] [I + H, B]), three loops of 100 steps, each on all cores and on
one core (a child process pinned with `os.sched_setaffinity`):

* ``jax dot``: a `lax.scan` doing only that matmul (``a = (W @ a)[:I + H]``);
* ``jax lstm``: a `lax.scan` of the plain LSTM step (the matmul plus the gate math);
* ``torch dot``: the matmul loop in torch (a Python loop of GEMMs).

Numbers are GFLOP/s of the matmuls alone. Usage::

    python experiments/bench_dot.py [--reps N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SHAPES = ((32, 100, 128, 256), (8, 400, 40, 512), (128, 50, 256, 256))  # (B, T, I, H)
STEPS = 100


def loops(batch: int, n_input: int, hidden: int) -> dict:
    """name -> zero-argument function running `STEPS` steps of one loop (module docstring)."""
    import bench_ops
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    k = n_input + hidden
    w = rng.normal(0, k**-0.5, (4 * hidden, k)).astype(np.float32)
    x = rng.normal(size=(STEPS, n_input, batch)).astype(np.float32)
    bias = np.zeros((4 * hidden, 1), np.float32)

    def dot_loop(w, a):
        return jax.lax.scan(lambda a, _: ((w @ a)[:k], None), a, length=STEPS)[0]

    def lstm_loop(w, bias, x):
        def step(carry, x_t):
            h, c = bench_ops.lstm_cell(w @ jnp.concatenate([x_t, carry[0]]) + bias, carry[1], axis=0)
            return (h, c), h

        zeros = jnp.zeros((hidden, batch))
        return jax.lax.scan(step, (zeros, zeros), x)[1]

    runs = {
        "jax dot": bench_ops.jax_runner((jax.jit(dot_loop), (w, np.ones((k, batch), np.float32)))),
        "jax lstm": bench_ops.jax_runner((jax.jit(lstm_loop), (w, bias, x))),
    }
    try:
        import torch
    except ImportError:
        return runs
    torch.set_flush_denormal(True)  # as XLA does
    tw, ta = torch.from_numpy(w), torch.ones(k, batch)

    def torch_dot():
        a = ta
        for _ in range(STEPS):
            a = (tw @ a)[:k]

    return {**runs, "torch dot": torch_dot}


def measure(reps: int) -> dict:
    """{"B,T,I,H": {loop name: GFLOP/s of its matmuls}} in this process."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_ops

    out = {}
    for batch, steps, n_input, hidden in SHAPES:
        runs = loops(batch, n_input, hidden)
        times = bench_ops.time_interleaved({n: bench_ops.local_timer(r) for n, r in runs.items()}, reps, 0.1)
        gflop = 2 * 4 * hidden * (n_input + hidden) * batch * STEPS / 1e9
        out[f"{batch},{steps},{n_input},{hidden}"] = {n: gflop / (t["median_ms"] / 1e3) for n, t in times.items()}
    return out


def run_child(one_core: bool, reps: int) -> dict:
    args = [sys.executable, __file__, "--child", "--reps", str(reps)] + (["--one-core"] if one_core else [])
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.one_core:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(measure(args.reps)))
        return 0
    cores = len(os.sched_getaffinity(0))
    results = {"cores": cores, "all_cores": run_child(False, args.reps), "one_core": run_child(True, args.reps)}
    names = list(next(iter(results["all_cores"].values())))
    print(f"GFLOP/s of the step matmuls over {STEPS} steps, median of {args.reps} interleaved repetitions")
    print(f"(all = {cores} cores / one core = speed-up from the other cores)")
    print(f"{'shape (B,T,I,H)':>18}" + "".join(f"{name:>24}" for name in names))
    for shape, on_all in results["all_cores"].items():
        on_one = results["one_core"][shape]
        cells = "".join(f"{f'{on_all[n]:.0f} / {on_one[n]:.0f} = {on_all[n] / on_one[n]:.2f}x':>24}" for n in names)
        print(f"{shape:>18}{cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
