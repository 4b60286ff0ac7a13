"""Peak memory of one LSTM training step on long sequences, with and without ``remat=True``.

Usage::

    python experiments/remat_memory.py                 # T = 1,000 and 10,000
    python experiments/remat_memory.py --steps 100000  # any lengths
    python experiments/remat_memory.py --run           # also execute each step once

For each sequence length it compiles ``jax.grad`` of a loss over a `jaxlstm.nn.LSTM` and
reads XLA's `memory_analysis()` of the compiled step: ``temp`` is the scratch memory the step
needs beyond its arguments and outputs (what the saved activations of the time loop occupy),
``peak`` = arguments + outputs + temp. With remat the time loop runs in chunks of
ceil(sqrt(T)) steps under `jax.checkpoint`, so the step keeps one state per chunk and one
chunk's activations instead of every step's.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlstm.nn import LSTM

MIB = 2**20


def grad_step(T: int, remat: bool, batch: int, features: int, hidden: int):
    """The jitted gradient function of a mean-squared loss, its params and input."""
    layer = LSTM(features, hidden, remat=remat, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(layer)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, T, features), np.float32))

    def loss(params, x):
        return jnp.mean(nnx.merge(graphdef, params)(x) ** 2)

    return jax.jit(jax.grad(loss)), params, x


def measure(T: int, remat: bool, batch: int, features: int, hidden: int, run: bool) -> dict:
    step, params, x = grad_step(T, remat, batch, features, hidden)
    compiled = step.lower(params, x).compile()
    memory = compiled.memory_analysis()
    row = {
        "T": T,
        "remat": remat,
        "chunk": math.isqrt(T - 1) + 1 if remat else None,
        "temp_mib": memory.temp_size_in_bytes / MIB,
        "peak_mib": (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes) / MIB,
        "seconds": None,
    }
    if run:
        jax.block_until_ready(compiled(params, x))  # warm-up
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, x))
        row["seconds"] = time.perf_counter() - start
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 10000], help="sequence lengths T")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--run", action="store_true", help="also time one executed step")
    args = parser.parse_args()

    print(
        f"LSTM({args.features}, {args.hidden}), batch {args.batch}, grad of mean(y**2); "
        f"{jax.devices()[0].platform}, jax {jax.__version__}"
    )
    header = f"{'T':>8} {'remat':>6} {'chunk':>6} {'temp MiB':>10} {'peak MiB':>10} {'ratio':>7} {'step s':>8}"
    print(header)
    print("-" * len(header))
    for T in args.steps:
        base = None
        for remat in (False, True):
            r = measure(T, remat, args.batch, args.features, args.hidden, args.run)
            base = base or r["peak_mib"]
            seconds = "-" if r["seconds"] is None else f"{r['seconds']:.3f}"
            print(
                f"{T:>8} {remat!s:>6} {r['chunk'] or '-':>6} {r['temp_mib']:>10.2f} "
                f"{r['peak_mib']:>10.2f} {r['peak_mib'] / base:>7.3f} {seconds:>8}"
            )


if __name__ == "__main__":
    main()
