"""Peak memory over long sequences: forward up to T = 100,000, training at T = 10,000.

Usage::

    python experiments/long_sequences.py                       # the defaults below
    python experiments/long_sequences.py --forward 1000 100000 --train 10000

Forward: `unidirectional_sequence_lstm` jitted two ways, returning the whole output sequence
[B, T, H] or only the final state. For each T it prints XLA's `memory_analysis()` of the
compiled function (arguments, outputs and ``temp``, the scratch beyond them) and, once
executed, the growth of the process's peak resident memory (``ru_maxrss``). Bounded memory
means: ``temp`` does not grow with T (the time loop carries only (h, c)), so the peak is the
input plus the requested outputs. With time-major input ([T, B, I], the kernel's own layout)
``temp`` is constant (0.16 MiB); batch-major input adds one transposed copy of the input
(and of the output sequence).

Training: one `jax.grad` step of a `jaxlstm.nn.LSTM` at T = 10,000 with and without
``remat=True``, measured like ``experiments/remat_memory.py`` (whose `measure` it reuses).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import pathlib
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.ops import LSTMOptions, unidirectional_sequence_lstm

MIB = 2**20


def _remat_memory():
    path = pathlib.Path(__file__).with_name("remat_memory.py")
    spec = importlib.util.spec_from_file_location("remat_memory", path)
    module = sys.modules.setdefault("remat_memory", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(module)
    return module


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def forward(T: int, batch: int, features: int, hidden: int, outputs: str, time_major: bool) -> dict:
    rng = np.random.default_rng(0)
    w = lstm_weights_from_fused(
        *(
            jnp.asarray(rng.normal(size=s).astype(np.float32) * 0.3)
            for s in ((features, 4 * hidden), (hidden, 4 * hidden), (4 * hidden,))
        )
    )
    x = jnp.asarray(rng.standard_normal((T, batch, features) if time_major else (batch, T, features), np.float32))

    def run(w, x):
        y, state = unidirectional_sequence_lstm(x, w, options=LSTMOptions(time_major=time_major))
        return (y, state) if outputs == "sequence" else state

    compiled = jax.jit(run).lower(w, x).compile()
    memory = compiled.memory_analysis()
    before = _peak_rss_mib()
    start = time.perf_counter()
    result = jax.block_until_ready(compiled(w, x))
    seconds = time.perf_counter() - start
    finite = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(result))
    return {
        "T": T,
        "outputs": outputs,
        "layout": "[T, B, I]" if time_major else "[B, T, I]",
        "args_mib": memory.argument_size_in_bytes / MIB,
        "out_mib": memory.output_size_in_bytes / MIB,
        "temp_mib": memory.temp_size_in_bytes / MIB,
        "rss_growth_mib": _peak_rss_mib() - before,
        "seconds": seconds,
        "finite": finite,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forward", type=int, nargs="*", default=[1000, 10000, 100000])
    parser.add_argument("--train", type=int, nargs="*", default=[10000])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()
    print(
        f"LSTM({args.features}, {args.hidden}), batch {args.batch}; {jax.devices()[0].platform}, jax {jax.__version__}"
    )

    header = (
        f"{'T':>8} {'layout':>10} {'outputs':>9} {'args MiB':>9} {'out MiB':>9} {'temp MiB':>9} "
        f"{'RSS +MiB':>9} {'run s':>7} finite"
    )
    print("\nforward (unidirectional_sequence_lstm, jitted)\n" + header + "\n" + "-" * len(header))
    for T in args.forward:
        for time_major, outputs in itertools.product((True, False), ("state", "sequence")):
            r = forward(T, args.batch, args.features, args.hidden, outputs, time_major)
            print(
                f"{T:>8} {r['layout']:>10} {outputs:>9} {r['args_mib']:>9.2f} {r['out_mib']:>9.2f} {r['temp_mib']:>9.2f} "
                f"{r['rss_growth_mib']:>9.1f} {r['seconds']:>7.2f} {r['finite']}"
            )

    remat_memory = _remat_memory()
    header = f"{'T':>8} {'remat':>6} {'chunk':>6} {'temp MiB':>10} {'peak MiB':>10} {'step s':>8}"
    print("\ntraining (jax.grad of mean(y**2) through jaxlstm.nn.LSTM)\n" + header + "\n" + "-" * len(header))
    for T in args.train:
        for remat in (False, True):
            r = remat_memory.measure(T, remat, args.batch, args.features, args.hidden, run=True)
            print(
                f"{T:>8} {remat!s:>6} {r['chunk'] or '-':>6} {r['temp_mib']:>10.2f} "
                f"{r['peak_mib']:>10.2f} {r['seconds']:>8.2f}"
            )
    print(f"\nprocess peak RSS: {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
