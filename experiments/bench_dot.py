"""How the time loop's matmul uses a second core on XLA:CPU and in torch.

Why torch.nn.LSTM is faster than the JAX LSTMs at batch > 1 on a multi-core CPU. For the
step matmul of each `bench.py` shape with batch > 1, as the op's batch-minor loop writes it
(W [4H, I + H] @ [x_t; h] [I + H, B]), three loops of 100 steps, each on all cores and on
one core (a child process pinned with `os.sched_setaffinity`):

* ``jax dot``: a `lax.scan` doing only that matmul (``a = (W @ a)[:I + H]``);
* ``jax lstm``: a `lax.scan` of the plain LSTM step (the matmul plus the gate math);
* ``torch dot``: the matmul loop in torch (a Python loop of GEMMs).

Numbers are GFLOP/s of the matmuls alone.

A second table shows why the LSTM loop loses the second core: XLA:CPU runs the matmul on
both cores, but an elementwise fusion of this size on one (its cost model rates it
memory-bound), and while one core works alone the other core's thread goes to sleep; the next
matmul then waits for it to wake up. For k = 0, 1, 2, 4, 8 it times a loop whose step is the
matmul followed by k chained tanh passes over [H, B] (``jax dot+tanh k``) and the same loop
without the matmul (``jax tanh k``); the difference is what the matmul costs per step with
that much single-threaded work between two matmuls. Usage::

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
TANH_PASSES = (0, 1, 2, 4, 8)


def loops(batch: int, n_input: int, hidden: int, group: str) -> dict:
    """name -> zero-argument function running `STEPS` steps of one loop of `group`, "matmul"
    (the first table) or "handoff" (the second; module docstring)."""
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

    def tanh_loop(passes: int, with_dot: bool):
        def loop(w, a):
            z_fixed = w @ a  # the loop without the matmul reads this one instead

            def step(a, _):
                z = w @ a if with_dot else z_fixed
                h = z[:hidden] * a[n_input:]
                for p in range(passes):  # reads another gate block of z each time, like the gate math
                    h = jnp.tanh(1.01 * h + 0.1 * z[(p % 3 + 1) * hidden : (p % 3 + 2) * hidden])
                return jnp.concatenate([a[:n_input], h]), None

            return jax.lax.scan(step, a, length=STEPS)[0]

        return jax.jit(loop)

    ones = np.ones((k, batch), np.float32)
    if group == "handoff":
        runs = {}
        for passes in TANH_PASSES:
            runs[f"jax dot+tanh {passes}"] = bench_ops.jax_runner((tanh_loop(passes, True), (w, ones)))
            if passes:
                runs[f"jax tanh {passes}"] = bench_ops.jax_runner((tanh_loop(passes, False), (w, ones)))
        return runs
    runs = {
        "jax dot": bench_ops.jax_runner((jax.jit(dot_loop), (w, ones))),
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


def measure(reps: int, group: str) -> dict:
    """{"B,T,I,H": {loop name: microseconds per step}} of the loops of `group`, in this process."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_ops

    out = {}
    for batch, steps, n_input, hidden in SHAPES:
        runs = loops(batch, n_input, hidden, group)
        times = bench_ops.time_interleaved({n: bench_ops.local_timer(r) for n, r in runs.items()}, reps, 0.1)
        out[f"{batch},{steps},{n_input},{hidden}"] = {n: t["median_ms"] * 1e3 / STEPS for n, t in times.items()}
    return out


def matmul_us(step_us: dict, passes: int) -> float:
    """Microseconds per step of the matmul with `passes` tanh passes between matmuls."""
    return step_us[f"jax dot+tanh {passes}"] - (step_us[f"jax tanh {passes}"] if passes else 0.0)


def run_child(group: str, one_core: bool, reps: int) -> dict:
    """`measure` in a child process (on one core if `one_core`): torch's OpenMP threads keep
    spinning after its loop, so torch runs apart from the hand-off loops."""
    args = [sys.executable, __file__, "--child", group, "--reps", str(reps)] + (["--one-core"] if one_core else [])
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--child", choices=("matmul", "handoff"), help=argparse.SUPPRESS)
    parser.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.one_core:
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(json.dumps(measure(args.reps, args.child)))
        return 0
    cores = len(os.sched_getaffinity(0))
    results = {"cores": cores} | {
        group: {"all_cores": run_child(group, False, args.reps), "one_core": run_child(group, True, args.reps)}
        for group in ("matmul", "handoff")
    }
    matmul, handoff = results["matmul"], results["handoff"]
    names = ["jax dot", "jax lstm", "torch dot"][: 3 if "torch dot" in next(iter(matmul["all_cores"].values())) else 2]
    print(f"GFLOP/s of the step matmuls over {STEPS} steps, median of {args.reps} interleaved repetitions")
    print(f"(all = {cores} cores / one core = speed-up from the other cores)")
    print(f"{'shape (B,T,I,H)':>18}" + "".join(f"{name:>24}" for name in names))
    for shape, on_all in matmul["all_cores"].items():
        on_one = matmul["one_core"][shape]
        batch, _, n_input, hidden = (int(v) for v in shape.split(","))
        kflop = 2 * 4 * hidden * (n_input + hidden) * batch / 1e3  # per step: kflop / us = GFLOP/s
        cells = "".join(
            f"{f'{kflop / on_all[n]:.0f} / {kflop / on_one[n]:.0f} = {on_one[n] / on_all[n]:.2f}x':>24}" for n in names
        )
        print(f"{shape:>18}{cells}")
    print()
    print("Microseconds per step of the matmul, all cores / one core, with k tanh passes over [H, B]")
    print("between two matmuls (in brackets: the k passes alone, all cores)")
    print(f"{'shape (B,T,I,H)':>18}" + "".join(f"{f'k = {k}':>22}" for k in TANH_PASSES))
    for shape, on_all in handoff["all_cores"].items():
        on_one = handoff["one_core"][shape]
        cells = ""
        for k in TANH_PASSES:
            alone = f" [{on_all[f'jax tanh {k}']:.0f}]" if k else ""
            cells += f"{f'{matmul_us(on_all, k):.0f} / {matmul_us(on_one, k):.0f}{alone}':>22}"
        print(f"{shape:>18}{cells}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
