"""Fuzzes the .tflite importer: mutated and truncated valid files must fail with ValueError.

Usage::

    python experiments/fuzz_import.py                      # 100,000 cases, seed 0
    python experiments/fuzz_import.py --cases 5000 --seed 3

Every case takes one of a few small valid exports (float, stateless, hybrid int8,
bidirectional, RNN, a WHILE loop), applies one mutation and calls `jaxlstm.load_tflite` on
it. Byte mutations (bit flips, random bytes, truncation, absurd int32 values at aligned
offsets, which hit vector lengths and table offsets) exercise the flatbuffer parsing;
structural mutations (edited through the schema's object API and repacked, in any subgraph)
exercise the validation: shrunk or emptied vectors, absurd shapes, wrong buffer sizes,
buffer offsets past the end, operators that read their own outputs or a later operator's
(cycles), out-of-range indices, wrong options tables and enum values, and malformed loops
(`LOOP_DEFECTS`: subgraph references out of range or in a cycle, a cond that never ends, a
body whose outputs change shape or dtype, carry counts that do not match), which must be
ValueErrors.

A case passes when `load_tflite` returns a `Model` or raises ValueError, or the documented
NotImplementedError for a valid file using a feature jaxlstm lacks; anything else escaping is
a crash. Each case runs under a CPU-time alarm (``--timeout``) and `tracemalloc`, so a hang
or an allocation beyond ``--max-alloc`` is reported too (tracing covers the mutations that
set sizes, `SIZE_MUTATIONS`). `tests/test_robustness_fuzz.py`
runs 2,000 of these cases in CI.
"""

from __future__ import annotations

import argparse
import collections
import copy
import dataclasses
import multiprocessing
import os
import signal
import time
import tracemalloc
from collections.abc import Callable

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm import load_tflite
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.model.builder import Ref
from jaxlstm.ops import LSTMOptions, LSTMWeights, RNNOptions, RNNWeights
from jaxlstm.tflite import export_tflite

ALLOWED = (ValueError, NotImplementedError)  # documented by load_tflite
ABSURD_INT32 = (-1, -2, 0x7FFFFFFF, -0x80000000, 0x10000, 0x3FFFFFFF, 0xFFFF)
MIB = 2**20


class CaseTimeout(Exception):
    """A case ran past its time bound (raised by the alarm)."""


# ----------------------------------------------------------------------------- seed models


def _lstm_weights(rng: np.random.Generator, n_input: int, units: int) -> LSTMWeights:
    return lstm_weights_from_fused(
        rng.normal(size=(n_input, 4 * units)).astype(np.float32),
        rng.normal(size=(units, 4 * units)).astype(np.float32),
        rng.normal(size=4 * units).astype(np.float32),
    )


def _rnn_weights(rng: np.random.Generator, n_input: int, units: int) -> RNNWeights:
    return RNNWeights(
        rng.normal(size=(units, n_input)).astype(np.float32),
        rng.normal(size=(units, units)).astype(np.float32),
        rng.normal(size=units).astype(np.float32),
    )


def _stacked_lstm(rng: np.random.Generator):
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, 3))
    x = b.add_lstm(x, _lstm_weights(rng, 3, 4), LSTMOptions(cell_clip=3.0), name="lstm_0")
    x = b.add_lstm(x, _lstm_weights(rng, 4, 2), LSTMOptions(), name="lstm_1")
    x = b.add_last_time_step(x)
    y = b.add_fully_connected(x, rng.normal(size=(2, 2)).astype(np.float32), np.zeros(2, np.float32))
    return b.build([b.add_softmax(y)], ["probabilities"])


def _bidirectional(rng: np.random.Generator):
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, 3))
    (y,) = b.add_bidirectional_lstm(
        x, _lstm_weights(rng, 3, 2), _lstm_weights(rng, 3, 2), LSTMOptions(), merge_outputs=True
    )
    return b.build([y], ["output"])


def _rnns(rng: np.random.Generator):
    b = ModelBuilder()
    x = b.add_input("input", (2, 4, 3))
    x = b.add_rnn(x, _rnn_weights(rng, 3, 3), RNNOptions())
    ys = b.add_bidirectional_rnn(x, _rnn_weights(rng, 3, 2), _rnn_weights(rng, 3, 2), RNNOptions())
    return b.build([b.add_concatenation(ys)], ["output"])


def _while_loop(rng: np.random.Generator):
    """An RNN as TensorFlow's converter writes Keras layers: a WHILE over the carries
    (counter, output buffer [T, B, H], h, x [T, B, F]); cond ``LESS(counter, T)``; the body
    ``h = tanh(W x[counter] + U h + b)``, the buffer written at `counter`."""
    steps, batch, features, units = 3, 2, 3, 2
    shapes = [((), "int32"), ((steps, batch, units), "float32"), ((batch, units), "float32")]
    shapes.append(((steps, batch, features), "float32"))

    def carries(b: ModelBuilder) -> list[Ref]:
        return [b.add_input(f"carry_{k}", shape, dtype) for k, (shape, dtype) in enumerate(shapes)]

    c = ModelBuilder()
    counter, *_ = carries(c)
    less = c.add_intermediate("less", (), "bool")
    c.add_operator("LESS", [counter, c.add_constant("steps", np.asarray(steps, np.int32))], [less])
    b = ModelBuilder()
    counter, buffer, h, x = carries(b)
    step = b.add_intermediate("counter_next", (), "int32")
    b.add_operator(
        "ADD", [counter, b.add_constant("one", np.asarray(1, np.int32))], [step], fused_activation_function="NONE"
    )
    x_t = b.add_intermediate("x_t", (batch, features))
    b.add_operator("GATHER", [x, counter], [x_t], axis=0, batch_dims=0)
    w = rng.normal(size=(units, features)).astype(np.float32)
    pre = b.add_fully_connected(x_t, w, rng.normal(size=units).astype(np.float32), name="input")
    rec = b.add_fully_connected(h, rng.normal(size=(units, units)).astype(np.float32), None, name="recurrent")
    total = b.add_binary("ADD", pre, rec, "preactivation")
    h_next = b.add_intermediate("h_next", (batch, units))
    b.add_operator("TANH", [total], [h_next])
    row = b.add_intermediate("row", (1, batch, units))
    b.add_operator("RESHAPE", [h_next, b.add_constant("row_shape", np.asarray([1, batch, units], np.int32))], [row])
    index = b.add_intermediate("index", (1,), "int32")
    b.add_operator("RESHAPE", [counter, b.add_constant("index_shape", np.asarray([1], np.int32))], [index])
    start = b.add_intermediate("start", (3,), "int32")
    b.add_operator(
        "CONCATENATION",
        [index, b.add_constant("zeros", np.zeros(2, np.int32))],
        [start],
        axis=0,
        fused_activation_function="NONE",
    )
    written = b.add_intermediate("buffer_next", (steps, batch, units))
    b.add_operator("DYNAMIC_UPDATE_SLICE", [buffer, row, start], [written])
    subgraphs = [c.build_subgraph([less], "cond"), b.build_subgraph([step, written, h_next, x], "body")]
    m = ModelBuilder()
    x = m.add_input("x", (steps, batch, features))
    initial = [
        m.add_constant("counter_0", np.asarray(0, np.int32)),
        m.add_constant("buffer_0", np.zeros((steps, batch, units), np.float32)),
        m.add_constant("h_0", np.zeros((batch, units), np.float32)),
        x,
    ]
    final = [m.add_intermediate(f"final_{k}", shape, dtype) for k, (shape, dtype) in enumerate(shapes)]
    m.add_operator("WHILE", initial, final, cond_subgraph_index=1, body_subgraph_index=2)
    return m.build([final[1]], ["output"], subgraphs=subgraphs)


def seed_files() -> dict[str, bytes]:
    """Small valid .tflite files covering the importer's paths, by name."""
    rng = np.random.default_rng(0)
    stacked = _stacked_lstm(rng)
    return {
        "lstm_float": export_tflite(stacked),
        "lstm_stateless": export_tflite(stacked, stateful=False),
        "lstm_hybrid": export_tflite(stacked, quantize="dynamic", quantize_min_elements=0),
        "bidirectional_lstm": export_tflite(_bidirectional(rng)),
        "rnn_hybrid": export_tflite(_rnns(rng), quantize="dynamic", quantize_min_elements=0),
        "while_loop": export_tflite(_while_loop(rng)),
    }


# ----------------------------------------------------------------------------- byte mutations


def bit_flips(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for p in rng.integers(0, len(out) * 8, size=rng.integers(1, 9)):
        out[p // 8] ^= 1 << (p % 8)
    return bytes(out)


def random_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    n = int(rng.integers(1, 33))
    start = int(rng.integers(0, max(len(out) - n, 1)))
    out[start : start + n] = rng.integers(0, 256, size=n, dtype=np.uint8).tobytes()
    return bytes(out[: len(data)])


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(0, len(data)))]


def absurd_int32(data: bytes, rng: np.random.Generator) -> bytes:
    """An extreme int32 at a 4-aligned offset: a vector length, a table offset, a shape."""
    out = bytearray(data)
    start = 4 * int(rng.integers(0, len(out) // 4))
    value = int(rng.choice(ABSURD_INT32 + (len(data), len(data) - start + 4 * int(rng.integers(-4, 5)))))
    out[start : start + 4] = (value & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)


def splice(data: bytes, rng: np.random.Generator) -> bytes:
    """Copies one span of the file over another (plausible-looking offsets and tables)."""
    out = bytearray(data)
    n = int(rng.integers(4, 65))
    src, dst = (int(v) for v in rng.integers(0, max(len(out) - n, 1), size=2))
    out[dst : dst + n] = data[src : src + n]
    return bytes(out[: len(data)])


# ----------------------------------------------------------------------------- structural mutations


def pack(model: schema.ModelT) -> bytes:
    """The .tflite bytes of an unpacked model (after a structural mutation)."""
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _pick(rng: np.random.Generator, items: list):
    return items[int(rng.integers(0, len(items)))]


def _shrink_vector(m, rng):
    sg = _pick(rng, m.subgraphs)
    owners = [(sg, "inputs"), (sg, "outputs"), (sg, "operators"), (sg, "tensors"), (m, "buffers"), (m, "operatorCodes")]
    owners += [(op, a) for op in sg.operators for a in ("inputs", "outputs")]
    owners += [(t, "shape") for t in sg.tensors] + [(b, "data") for b in m.buffers if b.data is not None]
    obj, attr = _pick(rng, owners)
    values = [] if getattr(obj, attr) is None else list(getattr(obj, attr))
    if values:
        k = int(rng.integers(0, len(values)))
        setattr(obj, attr, values[:k] if rng.random() < 0.5 else values[:k] + values[k + 1 :])


def _absurd_shape(m, rng):
    t = _pick(rng, _pick(rng, m.subgraphs).tensors)
    choice = rng.integers(0, 4)
    if choice == 0:
        t.shape = [0x7FFFFFFF] * int(rng.integers(1, 5))
    elif choice == 1:
        t.shape = [int(v) for v in rng.integers(-3, 3, size=rng.integers(0, 5))]
    elif choice == 2:
        t.shape = [1] * int(rng.integers(6, 300))  # absurd rank
    else:
        t.shape, t.shapeSignature = [65536, 65536], [-1, 65536]


def _wrong_buffer_size(m, rng):
    full = [b for b in m.buffers if b.data is not None and len(b.data)]
    b = _pick(rng, full)
    delta = int(rng.integers(1, 9))
    b.data = b.data[:-delta] if rng.random() < 0.5 else np.concatenate([b.data, np.zeros(delta, np.uint8)])


def _buffer_offset_past_end(m, rng):
    b = _pick(rng, m.buffers)
    b.data = None
    b.offset = _pick(rng, [2, 1 << 20, 1 << 40, (1 << 63) - 1])  # not rng.choice: it rounds them to float64
    b.size = _pick(rng, [1, 16, 1 << 32, (1 << 64) - 1])


def _cycle(m, rng):
    """An operator reads its own output, or a tensor that a later operator writes."""
    ops = _pick(rng, m.subgraphs).operators
    k = int(rng.integers(0, len(ops)))
    later = [o for op in ops[k:] for o in op.outputs]
    if len(ops[k].inputs):
        inputs = list(ops[k].inputs)
        inputs[int(rng.integers(0, len(inputs)))] = _pick(rng, later)
        ops[k].inputs = inputs
    if rng.random() < 0.5:
        ops.reverse()


def _bad_index(m, rng):
    sg = _pick(rng, m.subgraphs)
    value = int(rng.choice([-2, len(sg.tensors), len(m.buffers), 1 << 30, -(1 << 31)]))
    choice = rng.integers(0, 4)
    if choice == 0:
        _pick(rng, sg.tensors).buffer = value & 0xFFFFFFFF  # buffer is a uint32 field
    elif choice == 1:
        _pick(rng, sg.operators).opcodeIndex = value & 0xFFFFFFFF
    else:
        op = _pick(rng, sg.operators)
        attr = "inputs" if choice == 2 else "outputs"
        values = list(getattr(op, attr))
        if values:
            values[int(rng.integers(0, len(values)))] = value
            setattr(op, attr, values)


def _bad_options(m, rng):
    op = _pick(rng, _pick(rng, m.subgraphs).operators)
    choice = rng.integers(0, 3)
    if choice == 0:
        op.builtinOptionsType = schema.BuiltinOptions.ConcatenationOptions
        op.builtinOptions = schema.ConcatenationOptionsT()
    elif choice == 1 and op.builtinOptions is not None and hasattr(op.builtinOptions, "fusedActivationFunction"):
        op.builtinOptions.fusedActivationFunction = int(rng.choice([7, 42, 127]))
    else:
        code = _pick(rng, m.operatorCodes)
        code.builtinCode = int(rng.integers(0, 220))
        code.deprecatedBuiltinCode = min(code.builtinCode, 127)


def _misc(m, rng):
    sg = _pick(rng, m.subgraphs)
    choice = rng.integers(0, 4)
    if choice == 0:
        t = _pick(rng, sg.tensors)
        t.isVariable = not t.isVariable
    elif choice == 1:
        _pick(rng, sg.tensors).type = int(rng.integers(0, 20))
    elif choice == 2:
        t = _pick(rng, sg.tensors)
        t.quantization = schema.QuantizationParametersT()
        t.quantization.scale = [float(rng.choice([0.0, -1.0, np.nan, np.inf, 1e-3]))] * int(rng.integers(1, 4))
        t.quantization.zeroPoint = [int(rng.integers(-2, 2))]
    else:
        m.version = int(rng.integers(0, 5))


def _while_op(m):
    """The WHILE operator of the seed's main subgraph."""
    return next(op for op in m.subgraphs[0].operators if isinstance(op.builtinOptions, schema.WhileOptionsT))


def _loop_cond_out_of_range(m, rng):
    _while_op(m).builtinOptions.condSubgraphIndex = _pick(rng, [len(m.subgraphs), 99, -1])


def _loop_body_is_main(m, rng):
    _while_op(m).builtinOptions.bodySubgraphIndex = 0


def _loop_cond_is_body(m, rng):
    options = _while_op(m).builtinOptions
    options.condSubgraphIndex = options.bodySubgraphIndex


def _loop_body_calls_itself(m, rng):
    """The body runs a copy of the WHILE on its own carries: body -> body."""
    op = _while_op(m)
    body = m.subgraphs[op.builtinOptions.bodySubgraphIndex]
    call = copy.deepcopy(op)
    call.inputs, call.outputs = list(body.inputs), list(body.outputs)
    body.operators.append(call)


def _loop_constant_true_cond(m, rng):
    cond = m.subgraphs[_while_op(m).builtinOptions.condSubgraphIndex]
    true = schema.TensorT()
    true.name, true.type, true.shape = "true", schema.TensorType.BOOL, []
    buffer = schema.BufferT()
    buffer.data = np.ones(1, np.uint8)
    m.buffers.append(buffer)
    true.buffer = len(m.buffers) - 1
    cond.tensors.append(true)
    cond.outputs = [len(cond.tensors) - 1]


def _loop_counter_does_not_move(m, rng):
    body = m.subgraphs[_while_op(m).builtinOptions.bodySubgraphIndex]
    body.outputs = [body.inputs[0], *list(body.outputs)[1:]]


def _loop_body_output_changes(m, rng):
    """A body output of another shape (h for the buffer) or dtype (the counter for h)."""
    body = m.subgraphs[_while_op(m).builtinOptions.bodySubgraphIndex]
    outputs = list(body.outputs)
    outputs[1 if rng.random() < 0.5 else 2] = outputs[2] if rng.random() < 0.5 else outputs[0]
    body.outputs = outputs


def _loop_carry_counts(m, rng):
    """One carry fewer among the cond's inputs (the cond reads only the counter) or the
    body's outputs."""
    options = _while_op(m).builtinOptions
    if rng.random() < 0.5:
        cond = m.subgraphs[options.condSubgraphIndex]
        cond.inputs = list(cond.inputs)[:-1]
    else:
        body = m.subgraphs[options.bodySubgraphIndex]
        body.outputs = list(body.outputs)[:-1]


LOOP_DEFECTS: dict[str, Callable] = {
    "cond_out_of_range": _loop_cond_out_of_range,
    "body_is_main": _loop_body_is_main,
    "cond_is_body": _loop_cond_is_body,
    "body_calls_itself": _loop_body_calls_itself,
    "constant_true_cond": _loop_constant_true_cond,
    "counter_does_not_move": _loop_counter_does_not_move,
    "body_output_changes": _loop_body_output_changes,
    "carry_counts": _loop_carry_counts,
}


def _malformed_loop(m, rng):
    """One of `LOOP_DEFECTS` applied to the WHILE seed (which `Mutator` picks for it)."""
    _pick(rng, list(LOOP_DEFECTS.values()))(m, rng)


STRUCTURAL: dict[str, Callable] = {
    "shrink_vector": _shrink_vector,
    "absurd_shape": _absurd_shape,
    "wrong_buffer_size": _wrong_buffer_size,
    "buffer_offset_past_end": _buffer_offset_past_end,
    "cycle": _cycle,
    "bad_index": _bad_index,
    "bad_options": _bad_options,
    "misc": _misc,
    "malformed_loop": _malformed_loop,
}
# Mutations that need a particular seed: mutation -> seed name.
SEED_OF = {"malformed_loop": "while_loop"}
BYTES: dict[str, Callable] = {
    "bit_flips": bit_flips,
    "random_bytes": random_bytes,
    "truncate": truncate,
    "absurd_int32": absurd_int32,
    "splice": splice,
}
MUTATIONS = tuple(BYTES) + tuple(STRUCTURAL)
# Mutations that set sizes (vector lengths, shapes, buffer sizes and offsets) run under
# tracemalloc; the others only under the alarm (tracing makes a case ~5x slower).
SIZE_MUTATIONS = (
    "absurd_int32",
    "truncate",
    "shrink_vector",
    "absurd_shape",
    "wrong_buffer_size",
    "buffer_offset_past_end",
)


class Mutator:
    """Deterministic mutated files: ``mutator(case_index) -> (mutation name, bytes)``."""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.seeds = seed_files()
        self.unpacked = {k: schema.ModelT.InitFromPackedBuf(v, 0) for k, v in self.seeds.items()}

    def __call__(self, index: int) -> tuple[str, bytes]:
        rng = np.random.default_rng([self.seed, index])
        name = MUTATIONS[index % len(MUTATIONS)]
        source = SEED_OF.get(name) or _pick(rng, sorted(self.seeds))
        if name in BYTES:
            return f"{source}/{name}", BYTES[name](self.seeds[source], rng)
        model = copy.deepcopy(self.unpacked[source])
        STRUCTURAL[name](model, rng)
        try:
            return f"{source}/{name}", pack(model)
        except (ValueError, TypeError, OverflowError, AttributeError, IndexError):
            return f"{source}/{name}", b""  # the mutation made the tree unpackable: skip it


# ----------------------------------------------------------------------------- running cases


@dataclasses.dataclass
class Outcome:
    kind: str  # "loaded", "rejected", "crash", "timeout", "memory"
    detail: str = ""
    seconds: float = 0.0
    peak_bytes: int = 0


def _alarm(signum, frame):
    raise CaseTimeout()


def run_case(data: bytes, *, timeout: float, max_alloc: int | None) -> Outcome:
    """Loads `data` under a `timeout`-second alarm, and under `tracemalloc` if `max_alloc`
    (bytes) is given (tracing makes a case about 5x slower); classifies what happened.

    The alarm counts the process's CPU time (``ITIMER_PROF``), not wall time, so a busy
    machine does not turn a slow case into a false hang; parsing does no I/O to wait on.
    """
    previous = signal.signal(signal.SIGPROF, _alarm)
    if max_alloc is not None:
        tracemalloc.start()
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_PROF, timeout)
    try:
        load_tflite(data)
        outcome = Outcome("loaded")
    except CaseTimeout:
        outcome = Outcome("timeout", f"over {timeout} s")
    except ALLOWED as e:
        outcome = Outcome("rejected", f"{type(e).__name__}: {e}"[:200])
    except Exception as e:
        outcome = Outcome("crash", f"{type(e).__name__}: {e}"[:300])
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    outcome.seconds = time.perf_counter() - start
    if max_alloc is not None:
        outcome.peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if outcome.kind in ("loaded", "rejected") and outcome.peak_bytes > max_alloc:
            outcome.kind, outcome.detail = "memory", f"peak {outcome.peak_bytes / MIB:.1f} MiB"
    return outcome


def fuzz(
    cases: int,
    seed: int = 0,
    start: int = 0,
    timeout: float = 2.0,
    max_alloc: int = 64 * MIB,
    traced: tuple[str, ...] = SIZE_MUTATIONS,
) -> dict:
    """Runs cases ``start .. start + cases``; the mutations named in `traced` run under
    `tracemalloc`. Returns {"counts", "failures": [(name, index, detail)], "slowest"}."""
    mutate = Mutator(seed)
    counts: collections.Counter = collections.Counter()
    failures, slowest = [], (0.0, "")
    for index in range(start, start + cases):
        name, data = mutate(index)
        bound = max_alloc if name.split("/")[1] in traced else None
        outcome = run_case(data, timeout=timeout, max_alloc=bound)
        counts[outcome.kind] += 1
        slowest = max(slowest, (outcome.seconds, name))
        if outcome.kind in ("crash", "timeout", "memory"):
            failures.append((name, index, outcome.detail))
    return {"counts": counts, "failures": failures, "slowest": slowest}


def _chunk(args: tuple) -> dict:
    return fuzz(*args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=2.0, help="per-case CPU-time bound in seconds")
    parser.add_argument("--max-alloc", type=float, default=64, help="per-case Python allocation bound in MiB")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    args = parser.parse_args()
    start = time.perf_counter()
    chunk = 1000
    jobs = [
        (min(chunk, args.cases - k), args.seed, k, args.timeout, int(args.max_alloc * MIB))
        for k in range(0, args.cases, chunk)
    ]
    counts, failures, slowest = collections.Counter(), [], (0.0, "")
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(_chunk, jobs):
            counts += result["counts"]
            failures += result["failures"]
            for name, index, detail in result["failures"]:
                print(f"FAIL case {index} ({name}): {detail}", flush=True)
            slowest = max(slowest, result["slowest"])
            print(f"  {sum(counts.values()):,} cases, {time.perf_counter() - start:.0f} s", flush=True)
    print(f"{args.cases:,} cases in {time.perf_counter() - start:.0f} s with {args.workers} workers: {dict(counts)}")
    print(f"slowest case: {slowest[0] * 1e3:.1f} ms ({slowest[1]})")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
