"""Speed of `jaxlstm.nn.LSTM` with ``seq_lengths`` (the masked path), forward and gradient.

The masked path scans one step at a time, because a finished row must keep its state. Three
formulations of the same masked loop, built on the same weights and compared in one
interleaved run (median and minimum ms per call):

* ``cell``: what ``nn.LSTM(...)(x, seq_lengths=...)`` runs, a `lax.scan` of
  `jaxlstm.ops.lstm_cell_fused` (one ``[x_t, h] @ W`` per step, plain autodiff);
* ``step_op``: a `lax.scan` of the public one-step op `jaxlstm.ops.lstm` (round 1's
  formulation: each step is a length-1 run of the op's loop, with its custom derivative and,
  from batch 8, its batch-minor layout);
* ``unmasked``: the fused sequence op without masking (``nn.LSTM(...)(x)``), for scale.

    python experiments/bench_masked.py [--reps 5] [--shape B,T,I,H ...]

Set ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_TOP_PAD_=1073741824`` for
steadier gradient timings (experiments/README.md, bench_malloc.py).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxlstm.nn import LSTM
from jaxlstm.ops import LSTMState, lstm

SHAPES = ((8, 50, 16, 32), (32, 100, 64, 128), (128, 50, 64, 128))


def step_op_masked(layer: LSTM, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, T, I] -> [B, T, n_output]: a masked scan of the one-step op `jaxlstm.ops.lstm`."""
    weights = layer.weights()
    batch = x.shape[0]
    state = LSTMState(jnp.zeros((batch, weights.n_output), x.dtype), jnp.zeros((batch, weights.n_cell), x.dtype))

    def step(state, inputs):
        x_t, t = inputs
        y_t, new = lstm(x_t, weights, state, options=layer.options)
        valid = (t < lengths)[:, None]
        new = LSTMState(*(jnp.where(valid, n, o) for n, o in zip(new, state)))
        return new, jnp.where(valid, y_t, 0.0)

    _, y = jax.lax.scan(step, state, (jnp.swapaxes(x, 0, 1), jnp.arange(x.shape[1])))
    return jnp.swapaxes(y, 0, 1)


def systems(shape: tuple[int, int, int, int]) -> dict[str, tuple]:
    """name -> (params, jitted forward, jitted gradient), all on the same weights and inputs."""
    B, T, I, H = shape
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, T, I)), jnp.float32)
    lengths = jnp.asarray(rng.integers(T // 5, T + 1, B), jnp.int32)
    graphdef, params = nnx.split(LSTM(I, H, rngs=nnx.Rngs(0)))
    calls = {
        "cell": lambda p: nnx.merge(graphdef, p)(x, seq_lengths=lengths),
        "step_op": lambda p: step_op_masked(nnx.merge(graphdef, p), x, lengths),
        "unmasked": lambda p: nnx.merge(graphdef, p)(x),
    }
    reference = calls["cell"](params)
    np.testing.assert_allclose(calls["step_op"](params), reference, atol=1e-5)  # the same function
    return {
        name: (params, jax.jit(f), jax.jit(jax.grad(lambda p, f=f: jnp.sum(f(p) ** 2)))) for name, f in calls.items()
    }


def time_call(f, params, reps: int) -> float:
    jax.block_until_ready(f(params))
    start = time.perf_counter()
    for _ in range(reps):
        out = f(params)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / reps * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="calls per sample (9 interleaved samples)")
    parser.add_argument("--shape", action="append", help="B,T,I,H (repeatable)")
    args = parser.parse_args()
    shapes = [tuple(map(int, s.split(","))) for s in args.shape] if args.shape else SHAPES
    print("ms per call, median / minimum of 9 interleaved samples; ratio to `cell` (nn.LSTM's masked path)")
    for shape in shapes:
        fns = systems(shape)
        for kind, index in (("forward", 1), ("gradient", 2)):
            samples = {name: [] for name in fns}
            for _ in range(9):
                for name, fn in fns.items():
                    samples[name].append(time_call(fn[index], fn[0], args.reps))
            med = {k: float(np.median(v)) for k, v in samples.items()}
            low = {k: float(np.min(v)) for k, v in samples.items()}
            cells = ", ".join(
                f"{k} {med[k]:.3f} / {low[k]:.3f} ({med[k] / med['cell']:.2f}x / {low[k] / low['cell']:.2f}x)"
                for k in fns
            )
            print(f"{shape} {kind}: {cells}", flush=True)


if __name__ == "__main__":
    main()
