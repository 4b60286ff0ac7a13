"""XLA:CPU's per-call scratch memory: fresh pages from mmap, or kept in glibc's heap.

XLA:CPU gives each call of a compiled function one block of scratch memory (tens of MiB for
an LSTM training step). glibc serves a block that large with mmap and returns it with munmap,
so every call first-touches fresh pages: one minor page fault per 4 KiB. Started with

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824

glibc serves it from its heap instead and keeps it between calls. An environment variable must
be set before Python starts, so every (shape, system, allocator) runs in its own child
process; the children are timed round-robin (each repetition asks each child in turn for one
sample of ~0.3 s of calls). Prints the median ms per call and the speed-up of the heap
setting, for the forward pass and the training step of jaxlstm and flax. Usage::

    python experiments/bench_malloc.py [--reps N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

HEAP_SCRATCH = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967296", "MALLOC_TOP_PAD_": "1073741824"}
SYSTEMS = ("jaxlstm", "flax")
MODES = ("forward", "train")

CHILD = r"""
import sys
sys.path.insert(0, sys.argv[1])
import jax, bench, bench_ops
shape, system = tuple(int(v) for v in sys.argv[2].split(",")), sys.argv[3]
fn, args = bench.jax_systems(shape, bench_ops.keras_layout_weights(shape))[system]
calls = {"forward": jax.jit(fn), "train": jax.jit(bench.train_step(fn))}
timers, batch = {}, {}
for mode, call in calls.items():
    timers[mode] = bench_ops.local_timer(lambda call=call: jax.block_until_ready(call(*args)))
    timers[mode](2)
    batch[mode] = max(1, int(0.3 / timers[mode](1)))
print("ready", flush=True)
for mode in sys.stdin:
    mode = mode.strip()
    print(timers[mode](batch[mode]) / batch[mode] * 1e3, flush=True)
"""


def children(shape: str) -> dict:
    """(system, heap) -> a child process serving timing requests for `shape`."""
    here = os.path.dirname(os.path.abspath(__file__))
    procs = {}
    for system in SYSTEMS:
        for heap in (False, True):
            env = {**os.environ, **(HEAP_SCRATCH if heap else {})}
            procs[system, heap] = subprocess.Popen(
                [sys.executable, "-c", CHILD, here, shape, system],
                env=env,
                text=True,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
    for p in procs.values():
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a benchmark child for {shape} failed to start")
    return procs


def measure(shape: str, reps: int) -> dict:
    """{(system, heap, mode): median ms per call} for `shape`, children timed round-robin."""
    procs = children(shape)
    samples = {(s, h, m): [] for (s, h) in procs for m in MODES}
    for _ in range(reps):
        for mode in MODES:
            for (system, heap), p in procs.items():
                p.stdin.write(mode + "\n")
                p.stdin.flush()
                samples[system, heap, mode].append(float(p.stdout.readline()))
    for p in procs.values():
        p.stdin.close()
        p.wait()
    return {key: statistics.median(v) for key, v in samples.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="two small shapes")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_ops

    shapes = bench_ops.QUICK_SHAPES if args.quick else bench_ops.SHAPES
    print(f"median ms per call (mmap scratch / heap scratch = speed-up), {args.reps} round-robin repetitions")
    print(f"{'shape (B,T,I,H)':>18}" + "".join(f"{f'{s} {m}':>28}" for s in SYSTEMS for m in MODES))
    for shape in shapes:
        key = ",".join(map(str, shape))
        t = measure(key, args.reps)
        cells = "".join(
            f"{f'{t[s, False, m]:.2f} / {t[s, True, m]:.2f} = {t[s, False, m] / t[s, True, m]:.2f}x':>28}"
            for s in SYSTEMS
            for m in MODES
        )
        print(f"{key:>18}{cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
