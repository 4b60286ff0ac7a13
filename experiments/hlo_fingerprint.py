"""Fingerprints of the optimized HLO that XLA compiles for the LSTM ops: did a refactor change the code?

Usage::

    python experiments/hlo_fingerprint.py --json experiments/results/hlo_before.json   # before a change
    python experiments/hlo_fingerprint.py --compare experiments/results/hlo_before.json  # after it

For the four shapes (B, T, I, H) of bench.py and batch 64, plain and with peephole + projection,
float32 and ``matmul_dtype=bfloat16``, forward (y of `unidirectional_sequence_lstm`) and training
step (the gradient of ``mean(y)`` w.r.t. the weights and the input), it compiles
``jax.jit(f).lower(...).compile()`` and hashes the optimized HLO text after stripping what does
not change the code: the source-location tables, ``metadata={...}`` (op names, source lines),
the module name, and instruction, computation and parameter names (renamed in order of first
appearance). Small extra cases cover the other paths (CIFG, layer norm, clips, diagonal, hybrid,
aux input, the one-step op) at batch 1, 4, 16 and 64, and the RNN and GRU ops. Equal fingerprints mean the same
instructions in the same schedule, so the same speed; `--compare` prints both fingerprints and
the op counts of every case that differs. Weights and inputs are arguments of the compiled
function (as in training), so their values do not enter the code.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.convert import gru_weights_from_keras
from jaxlstm.ops import (
    GRUOptions,
    LSTMOptions,
    LSTMWeights,
    RNNOptions,
    RNNWeights,
    bidirectional_sequence_lstm,
    bidirectional_sequence_rnn,
    gru,
    lstm,
    quantize_symmetric,
    rnn,
    unidirectional_sequence_lstm,
    unidirectional_sequence_rnn,
)

BENCH_SHAPES = ((1, 100, 64, 128), (32, 100, 128, 256), (8, 400, 40, 512), (128, 50, 256, 256), (64, 100, 128, 256))
EXTRA_BATCHES = (1, 4, 16, 64)
EXTRA_SIZES = dict(time=10, n_input=8, n_cell=16)
COUNTED_OPS = ("fusion", "dot", "while", "copy", "transpose", "convert", "custom-call")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    fn: Callable
    args: tuple


def _normal(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _weights(
    rng, n_input, n_cell, *, peephole=False, projection=False, cifg=False, layer_norm=False, diagonal=False, n_aux=0
):
    gates = ("forget", "cell", "output") if cifg else ("input", "forget", "cell", "output")
    fields = {}
    for g in gates:
        fields[f"input_to_{g}_weights"] = _normal(rng, n_cell, n_input)
        fields[f"recurrent_to_{g}_weights"] = _normal(rng, *((n_cell,) if diagonal else (n_cell, n_cell)))
        fields[f"{g}_gate_bias"] = _normal(rng, n_cell)
        if peephole and g != "cell":
            fields[f"cell_to_{g}_weights"] = _normal(rng, n_cell)
        if layer_norm:
            fields[f"{g}_layer_norm_coefficients"] = _normal(rng, n_cell) + 1
        if n_aux:
            fields[f"aux_input_to_{g}_weights"] = _normal(rng, n_cell, n_aux)
    if projection:  # square, as bench.py's: n_output stays n_cell
        fields["projection_weights"] = _normal(rng, n_cell, n_cell)
        fields["projection_bias"] = _normal(rng, n_cell)
    return LSTMWeights(**fields)


def _train(forward: Callable) -> Callable:
    """The training step of bench.py: the gradient of mean(forward(params, x)) w.r.t. both."""
    return jax.grad(lambda params, x: jnp.mean(forward(params, x)), argnums=(0, 1))


def _sequence(options=LSTMOptions(), matmul_dtype=None) -> Callable:
    return lambda w, x: unidirectional_sequence_lstm(x, w, options=options, matmul_dtype=matmul_dtype)[0]


def bench_cases() -> list[Case]:
    cases = []
    for B, T, I, H in BENCH_SHAPES:
        rng = np.random.default_rng(0)
        x = _normal(rng, B, T, I)
        for kind, w in (
            ("plain", _weights(rng, I, H)),
            ("peep_proj", _weights(rng, I, H, peephole=True, projection=True)),
        ):
            for dtype_name, dtype in (("f32", None), ("bf16", jnp.bfloat16)):
                forward = _sequence(matmul_dtype=dtype)
                for mode, fn in (("forward", forward), ("train", _train(forward))):
                    cases.append(Case(f"({B},{T},{I},{H}) {kind} {dtype_name} {mode}", fn, (w, x)))
    return cases


def extra_cases() -> list[Case]:
    """The paths the bench shapes do not reach, at small sizes."""
    T, I, H = EXTRA_SIZES["time"], EXTRA_SIZES["n_input"], EXTRA_SIZES["n_cell"]
    clips = LSTMOptions(cell_clip=0.5, proj_clip=0.4)
    cases = []
    for B in EXTRA_BATCHES:
        rng = np.random.default_rng(1)
        x = _normal(rng, B, T, I)
        full = _weights(rng, I, H, cifg=True, layer_norm=True, peephole=True, projection=True)
        diagonal = _weights(rng, I, H, diagonal=True, peephole=True)
        forward = _sequence(clips)
        cases += [
            Case(f"b{B} cifg_ln_peep_proj_clips f32 forward", forward, (full, x)),
            Case(f"b{B} cifg_ln_peep_proj_clips f32 train", _train(forward), (full, x)),
            Case(f"b{B} cifg_ln_peep_proj_clips bf16 train", _train(_sequence(clips, jnp.bfloat16)), (full, x)),
            Case(f"b{B} diagonal_peep f32 forward", _sequence(), (diagonal, x)),
            Case(f"b{B} diagonal_peep f32 train", _train(_sequence()), (diagonal, x)),
        ]
        for w_name, w in (("plain", _weights(rng, I, H, projection=True)), ("diagonal", diagonal)):
            hybrid = w.replace(
                **{
                    f.name: quantize_symmetric(getattr(w, f.name))
                    for f in dataclasses.fields(w)
                    if getattr(w, f.name) is not None
                    and not f.name.endswith(("bias", "coefficients"))
                    and not (f.name.startswith("recurrent") and np.ndim(getattr(w, f.name)) == 1)
                }
            )
            for asym in (False, True):
                options = LSTMOptions(asymmetric_quantize_inputs=asym)
                cases.append(Case(f"b{B} hybrid_{w_name} asym={asym} forward", _sequence(options), (hybrid, x)))

        aux = _normal(rng, T, B, 3)
        fw = _weights(rng, I, H, peephole=True, projection=True, n_aux=3)
        bw = _weights(rng, I, H, peephole=True, projection=True, n_aux=3)

        def bidirectional(params, x):
            (fw, bw, aux) = params
            (merged,), _ = bidirectional_sequence_lstm(x, fw, bw, aux_input=aux, merge_outputs=True)
            return merged

        x_tm = np.swapaxes(x, 0, 1)
        cases += [
            Case(f"b{B} bidirectional_aux f32 forward", bidirectional, ((fw, bw, aux), x_tm)),
            Case(f"b{B} bidirectional_aux f32 train", _train(bidirectional), ((fw, bw, aux), x_tm)),
        ]

        def step(w, x_t):
            return lstm(x_t, w, options=clips)[0]

        cases += [
            Case(f"b{B} lstm_step f32 forward", step, (full, x[:, 0])),
            Case(f"b{B} lstm_step f32 train", _train(step), (full, x[:, 0])),
        ]
    return cases


def rnn_gru_cases() -> list[Case]:
    """The RNN and GRU ops (float and hybrid RNN; GRU with the reset gate after and before)."""
    B, T, I, H = 8, 20, 16, 32
    rng = np.random.default_rng(2)
    x = _normal(rng, B, T, I)
    rnn_w = RNNWeights(_normal(rng, H, I), _normal(rng, H, H), _normal(rng, H))
    hybrid = rnn_w.replace(
        input_weights=quantize_symmetric(rnn_w.input_weights),
        recurrent_weights=quantize_symmetric(rnn_w.recurrent_weights),
    )
    options = RNNOptions("TANH")

    def sequence(w, x):
        return unidirectional_sequence_rnn(x, w, options=options)[0]

    def bidirectional(w, x):
        return bidirectional_sequence_rnn(x, w, w, options=options, merge_outputs=True)[0][0]

    def step(w, x):
        return rnn(x[:, 0], w, options=options)[0]

    cases = []
    for name, fn in (("unidirectional_rnn", sequence), ("bidirectional_rnn", bidirectional), ("rnn_step", step)):
        cases += [
            Case(f"{name} f32 forward", fn, (rnn_w, x)),
            Case(f"{name} f32 train", _train(fn), (rnn_w, x)),
            Case(f"{name} hybrid forward", fn, (hybrid, x)),
        ]
    for reset_after in (True, False):
        bias = _normal(rng, 2, 3 * H) if reset_after else _normal(rng, 3 * H)
        gru_w = gru_weights_from_keras(_normal(rng, I, 3 * H), _normal(rng, H, 3 * H), bias, reset_after)

        def gru_forward(w, x, reset_after=reset_after):
            return gru(x, w, options=GRUOptions(reset_after=reset_after))[0]

        mode = "reset_after" if reset_after else "reset_before"
        cases += [
            Case(f"gru {mode} forward", gru_forward, (gru_w, x)),
            Case(f"gru {mode} train", _train(gru_forward), (gru_w, x)),
        ]
    return cases


# ----------------------------------------------------------------------------- fingerprint

_TABLES = re.compile(r"^(FileNames|FunctionNames|FileLocations|StackFrames)$")
_METADATA = re.compile(r", metadata=\{[^}]*\}")
_NAME = re.compile(r"%[\w.\-]+")
_HEADER_PARAM = re.compile(r"([(,] ?)[\w.\-]+: ")
_INDEX_COMMENT = re.compile(r"/\*index=\d+\*/")
_OPCODE = re.compile(r"([a-z][\w\-]*)\(")


def _opcode(line: str) -> str | None:
    """The opcode of an instruction line ``%name = type opcode(...)`` (tuple types nest)."""
    if " = " not in line or not line.lstrip().startswith(("%", "ROOT")):
        return None
    rest, depth = line.split(" = ", 1)[1], 0
    for i, ch in enumerate(rest):  # skip the type: up to the first space outside parentheses
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == " " and depth == 0:
            match = _OPCODE.match(rest, i + 1)
            return match.group(1) if match else None
    return None


def canonical_hlo(text: str) -> str:
    """The HLO text without source tables, metadata, module name and names (see the docstring)."""
    lines, in_table = [], False
    for line in text.splitlines():
        if _TABLES.match(line):
            in_table = True
            continue
        if in_table:
            if line.strip() == "":
                in_table = False
            continue
        line = _INDEX_COMMENT.sub("", _METADATA.sub("", line))
        if line.startswith("HloModule "):
            line = "HloModule" + line[line.index(",") :]
        elif line.endswith("{") and " = " not in line:  # a computation header: drop parameter names
            line = _HEADER_PARAM.sub(r"\1", line)
        lines.append(line)
    names: dict[str, str] = {}
    return _NAME.sub(lambda m: names.setdefault(m.group(0), f"%n{len(names)}"), "\n".join(lines))


def fingerprint(case: Case) -> dict:
    text = canonical_hlo(jax.jit(case.fn).lower(*case.args).compile().as_text())
    ops = collections.Counter(op for op in map(_opcode, text.splitlines()) if op)
    return {
        "fingerprint": hashlib.sha256(text.encode()).hexdigest()[:16],
        "instructions": sum(ops.values()),
        **{op: ops.get(op, 0) for op in COUNTED_OPS},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the fingerprints to this file")
    parser.add_argument("--compare", help="compare with the fingerprints in this file (from --json)")
    parser.add_argument("--no-extra", action="store_true", help="only the bench shapes")
    parser.add_argument("-k", help="only cases whose name contains this")
    args = parser.parse_args(argv)

    cases = bench_cases() + ([] if args.no_extra else extra_cases() + rnn_gru_cases())
    cases = [c for c in cases if args.k is None or args.k in c.name]
    before = json.load(open(args.compare)) if args.compare else {}
    results, changed = {}, 0
    width = max(len(c.name) for c in cases)
    header = f"{'case':<{width}}  {'fingerprint':<16}  instr  " + "  ".join(COUNTED_OPS)
    print(header + ("  before" if before else ""))
    for case in cases:
        r = results[case.name] = fingerprint(case)
        counts = "  ".join(f"{r[op]:>{len(op)}}" for op in COUNTED_OPS)
        line = f"{case.name:<{width}}  {r['fingerprint']}  {r['instructions']:>5}  {counts}"
        if before:
            old = before.get(case.name)
            if old is None:
                line += "  (new case)"
            elif old == r:
                line += "  same"
            else:
                changed += 1
                line += f"  DIFFERENT: {old['fingerprint']} " + " ".join(
                    f"{k}={old[k]}" for k in ("instructions", *COUNTED_OPS) if old[k] != r[k]
                )
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if before:
        print(f"\n{len(cases) - changed} of {len(cases)} cases compile to the same HLO; {changed} differ")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
