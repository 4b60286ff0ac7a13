"""Fuse the WHILE loops of Keras 3 recurrent layers back into TFLite's fused recurrent operators.

Since TensorFlow 2.16 the converter writes each Keras LSTM, GRU and SimpleRNN layer as a WHILE
loop whose body is one cell step (`jaxlstm.model.control_flow`). `fuse_while_loops` reads the
cell off the body and replaces the loop with the operator that computes the same steps:

    LSTM       -> UNIDIRECTIONAL_SEQUENCE_LSTM (a Bidirectional pair: one BIDIRECTIONAL_SEQUENCE_LSTM)
    SimpleRNN  -> UNIDIRECTIONAL_SEQUENCE_RNN
    GRU        -> jaxlstm's GRU operator, which `export_tflite` unrolls into builtin operators
                  over the loop's static length (TFLite has no GRU operator)

The body must be exactly such a cell: the step's input ``GATHER(x, time)`` of the time-major
sequence carry ``x`` [T, B, F], FULLY_CONNECTEDs of it and of h, constant biases (summed where the
body adds them separately), SPLIT / STRIDED_SLICE into the gates (Keras orders: LSTM i, f, c, o;
GRU z, r, h), the gate activations, and the output written into a [T, B, H] buffer at ``time``
(return_sequences) or into a [1, B, H] buffer (the last step). The fused operator reads the same
time-major sequence, so a go_backwards layer keeps the REVERSE_V2 in front of it, and the zero
initial state of the loop becomes the operator's variable tensors (zeroed at each invoke by a
predict export). A loop is kept, with the reason, when its body is anything else: a mask
(SELECT_V2: the fused operators have no mask input), int8 weights (dynamic-range quantization:
see `HYBRID_REASON`), an initial state that is not zero, a final state read after the loop, a
streaming model (whose fused operators would keep their state between invokes).

A rewrite is applied only when the fused operator reproduces the loop on random inputs in JAX
(one draw per `CHECK_SCALES`, to `TOLERANCE` relative to max(1, |y|)); otherwise the loop is
kept and the report says by how much they differ. The check runs both in float64 (weights cast,
``jax.enable_x64``), so that it compares the computations and not float32 rounding: the fused
operators sum the same products in another order, which in float32 moves the outputs of a
layer of a few hundred units by up to about 1e-5 on inputs of magnitude 10 (as LiteRT's own
kernels differ from XLA's), while in float64 an exact rewrite agrees to about 1e-15 and a wrong
weight or gate is far off. Subgraphs and tensors that only the fused loops used are pruned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from jaxlstm.model.builder import ModelBuilder, Ref
from jaxlstm.model.control_flow import WhileLoop, analyze_while
from jaxlstm.model.graph import GRU, NO_TENSOR, Model, Operator, Subgraph
from jaxlstm.model.rewrite import (
    bidirectional_lstm_pairs,
    fuse_bidirectional_lstm,
    prune_unused_subgraphs,
    prune_unused_tensors,
)
from jaxlstm.model.runtime import run_operator
from jaxlstm.ops._activations import ACTIVATION_CODES
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.gru import GRU_ACTIVATIONS, GRUOptions, GRUWeights
from jaxlstm.ops.lstm import GATES, LSTM_ACTIVATIONS, LSTMOptions, LSTMWeights
from jaxlstm.ops.rnn import RNNOptions, RNNWeights

# The check: the fused operator against the loop on one random normal input per scale, in float64.
CHECK_SCALES = (1.0, 10.0, 100.0)
TOLERANCE = 1e-6  # |fused - loop| <= TOLERANCE * max(1, |loop|); exact rewrites differ by ~1e-15
HYBRID_REASON = (
    "its FULLY_CONNECTED weights are int8 with one scale per output row (dynamic-range quantization, "
    "asymmetric inputs), but TFLite's hybrid LSTM and RNN operators take one scale per weight tensor, so no "
    "fused operator computes the same steps; convert the float model instead and quantize the fused file "
    "(jaxlstm convert float.tflite -o fused.tflite --quantize dynamic)"
)
MASKED_REASON = (
    "the layer is masked (a Masking layer or a mask argument): its body keeps the previous output and state "
    "where the mask is false (SELECT_V2), and the fused operators have no mask input"
)
# Activation operators -> the schema name of the activation they compute.
_ACTIVATION_OPS = {
    "TANH": "TANH",
    "LOGISTIC": "SIGMOID",
    "RELU": "RELU",
    "RELU6": "RELU6",
    "RELU_N1_TO_1": "RELU_N1_TO_1",
}
# Operators that pass a gate pre-activation's columns through (the gates of a packed matmul).
_COLUMN_SELECTIONS = ("SPLIT", "SPLIT_V", "STRIDED_SLICE", "SLICE", "GATHER")


@dataclasses.dataclass(frozen=True)
class LoopFusion:
    """What `fuse_while_loops` did with one WHILE operator of the main subgraph.

    Attributes:
      operator: the WHILE's position among the input model's main-subgraph operators.
      body: the index of its body subgraph.
      layer: the recurrent layer its body computes ("LSTM", "GRU" or "SimpleRNN") when fused.
      fused_into: the operator that replaces it (UNIDIRECTIONAL_SEQUENCE_LSTM,
        BIDIRECTIONAL_SEQUENCE_LSTM, UNIDIRECTIONAL_SEQUENCE_RNN or GRU); None if kept.
      reason: why the loop was kept; None if fused.
      error: the largest difference between the fused operator and the loop on the check's
        inputs (float64), relative to max(1, |loop|); None if not checked.
    """

    operator: int
    body: int
    layer: str | None = None
    fused_into: str | None = None
    reason: str | None = None
    error: float | None = None

    @property
    def fused(self) -> bool:
        return self.fused_into is not None

    def to_dict(self) -> dict[str, Any]:
        """``{"fusable", "body", "layer", "fused_into", "reason", "error"}`` (JSON-ready)."""
        fields = dataclasses.asdict(self)
        del fields["operator"]  # a position in the Model, which may differ from the file's
        return {"fusable": self.fused, **fields}

    def __str__(self) -> str:
        where = f"operator {self.operator} (WHILE, body subgraph {self.body})"
        if not self.fused:
            return f"{where}: kept as a loop: {self.reason}"
        into = self.fused_into
        if into == GRU:
            into = "GRU (jaxlstm's operator, unrolled into builtin operators when exported)"
        return (
            f"{where}: {self.layer} fused into {into}; checked in float64 on {len(CHECK_SCALES)} random inputs: "
            f"max relative difference {self.error:.1e}"
        )


def fuse_while_loops(model: Model, seed: int = 0) -> tuple[Model, list[LoopFusion]]:
    """Replaces the recurrent WHILE loops of `model`'s main subgraph with fused operators
    (module docstring), checking each against its loop first.

    Args:
      model: a model loaded from a .tflite file that TensorFlow's converter wrote.
      seed: of the check's random inputs.

    Returns:
      (the rewritten model, one `LoopFusion` per WHILE operator of the main subgraph, in order).
      The model is `model` itself when no loop was fused.
    """
    b = ModelBuilder.extending(model)
    operators: list[Operator] = []
    report: list[LoopFusion] = []
    created: dict[Operator, int] = {}  # fused operator -> its entry in report
    for position, op in enumerate(model.operators):
        if op.opcode != "WHILE":
            operators.append(op)
            continue
        entry = LoopFusion(position, op.option("body_subgraph_index"))
        try:
            try:
                layer = _recognise(model, op)
            except (IndexError, KeyError) as e:  # operators with too few operands, ...
                raise _Unfusable(f"its subgraphs are malformed ({e!r})") from e
            replacement = _replace(b, model, layer)
            error = _difference(b.rebuild(model, []), [op], replacement, (layer.sequence,), (layer.result,), seed)
            if not error <= TOLERANCE:
                raise _Unfusable(
                    f"the fused {replacement[0].opcode} differs from the loop by {error:.1e} (> {TOLERANCE})"
                )
        except _Unfusable as e:
            operators.append(op)
            report.append(dataclasses.replace(entry, reason=str(e)))
            continue
        created[replacement[0]] = len(report)
        report.append(dataclasses.replace(entry, layer=layer.name, fused_into=replacement[0].opcode, error=error))
        operators += replacement
    if not created:
        return model, report
    fused, report = _fuse_bidirectional_pairs(b.rebuild(model, operators), report, created, seed)
    return prune_unused_subgraphs(prune_unused_tensors(fused)), report


# ----------------------------------------------------------------------------- internals


class _Unfusable(Exception):
    """A loop that stays a loop; the message says why."""


@dataclasses.dataclass(frozen=True)
class _Layer:
    """A recognised loop: the fused operator's weights and options, and the main-subgraph
    tensors the loop reads (the time-major sequence) and leaves (its output buffer)."""

    name: str  # "LSTM", "GRU" or "SimpleRNN"
    weights: LSTMWeights | GRUWeights | RNNWeights
    options: LSTMOptions | GRUOptions | RNNOptions
    sequence: int
    result: int
    return_sequences: bool
    prefix: str  # of the new tensors' names


@dataclasses.dataclass(frozen=True)
class _Affine:
    """A gate pre-activation as the body computes it: ``sum_s weights[s] @ v_s`` over the
    sources v_s it reads ("input": the step's input; "recurrent": h; ...) plus the constant
    vectors in `biases`, keyed by where the body adds them (the FULLY_CONNECTED of a source,
    or "add" for a separate ADD). Matrices are [n, width of the source], vectors [n]."""

    weights: Mapping[str, np.ndarray]
    biases: Mapping[str, np.ndarray]

    def __add__(self, other: _Affine) -> _Affine:
        return _Affine(_sum_by_key(self.weights, other.weights), _sum_by_key(self.biases, other.biases))

    def take(self, rows: np.ndarray) -> _Affine:
        return _Affine({k: w[rows] for k, w in self.weights.items()}, {k: v[rows] for k, v in self.biases.items()})

    def weight(self, source: str, shape: tuple[int, int]) -> np.ndarray:
        """The matrix of `source` (zeros if the pre-activation does not read it)."""
        w = self.weights.get(source, np.zeros(shape, np.float32))
        if w.shape != shape:
            raise _Unfusable(f"a gate's {source} weights have shape {list(w.shape)}, expected {list(shape)}")
        return w

    def bias(self, units: int) -> np.ndarray:
        """The sum of the biases (zeros if there are none)."""
        wrong = [list(v.shape) for v in self.biases.values() if v.shape != (units,)]
        if wrong:
            raise _Unfusable(f"a gate adds a constant of shape {wrong[0]}, not one value per unit ({units})")
        return np.sum([np.zeros(units, np.float32), *self.biases.values()], axis=0, dtype=np.float32)

    def part(self, *keys: str) -> _Affine:
        """The terms read from, and the biases added at, `keys`."""
        return _Affine(
            {k: w for k, w in self.weights.items() if k in keys}, {k: v for k, v in self.biases.items() if k in keys}
        )

    def renamed(self, old: str, new: str) -> _Affine:
        def rename(d: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {new if k == old else k: v for k, v in d.items()}

        return _Affine(rename(self.weights), rename(self.biases))

    def check_sources(self, allowed: Sequence[str], what: str) -> None:
        extra = sorted(set(self.weights) - set(allowed))
        if extra:
            raise _Unfusable(f"the {what} reads {extra[0]} where the fused operator reads only {list(allowed)}")


def _sum_by_key(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    total = dict(a)
    for k, v in b.items():
        total[k] = total[k] + v if k in total else v
    return total


class _Body:
    """A body subgraph with what the matchers ask of it: producers and constants."""

    def __init__(self, graph: Subgraph, index: int):
        self.graph, self.index = graph, index
        self.constants = graph.constants
        self.producer = {t: op for op in graph.operators for t in op.outputs}

    def name(self, tensor: int) -> str:
        return repr(self.graph.tensors[tensor].name)

    def op(self, tensor: int, *opcodes: str) -> Operator:
        """The operator that writes `tensor`, one of `opcodes` without a fused activation."""
        op = self.producer.get(tensor)
        found = "no operator (an input or a constant)" if op is None else op.opcode
        if op is None or op.opcode not in opcodes or op.option("fused_activation_function", "NONE") != "NONE":
            raise _Unfusable(
                f"body subgraph {self.index}: {self.name(tensor)} comes from {found}, expected {opcodes[0]}"
            )
        return op

    def ints(self, tensor: int) -> list[int] | None:
        value = self.constants.get(tensor)
        if value is None or not np.issubdtype(np.asarray(value).dtype, np.integer):
            return None
        return [int(v) for v in np.ravel(value)]

    def activation(self, tensor: int) -> tuple[str, list[int]]:
        """(schema activation name, the tensors summed before it) of `tensor`: an activation
        operator, an ADD with a fused activation, or ("NONE", [tensor])."""
        op = self.producer.get(tensor)
        if op is not None and op.opcode in _ACTIVATION_OPS:
            return _ACTIVATION_OPS[op.opcode], [op.inputs[0]]
        if op is not None and op.opcode == "ADD" and op.option("fused_activation_function", "NONE") != "NONE":
            return op.option("fused_activation_function"), list(op.inputs)
        return "NONE", [tensor]

    def gate(self, tensor: int, sources: Mapping[int, str], allowed: Sequence[str], what: str) -> tuple[str, _Affine]:
        """(activation, pre-activation over `sources`) of a gate output `tensor`, whose
        activation must be one of `allowed`."""
        name, terms = self.activation(tensor)
        if name == "NONE" and name not in allowed:
            op = self.producer.get(tensor)
            raise _Unfusable(
                f"the {what} ends in {'no operator' if op is None else op.opcode}, not in an activation that the "
                f"fused operator computes ({list(allowed)})"
            )
        return _allowed(name, allowed, what), _total(self.affine(t, sources) for t in terms)

    def summands(self, tensor: int) -> list[int]:
        """The tensors that a tree of plain ADDs sums into `tensor` (itself if none)."""
        op = self.producer.get(tensor)
        if op is None or op.opcode != "ADD" or op.option("fused_activation_function", "NONE") != "NONE":
            return [tensor]
        return [t for operand in op.inputs for t in self.summands(operand)]

    def affine(self, tensor: int, sources: Mapping[int, str]) -> _Affine:
        """`tensor` as an `_Affine` over `sources` (body tensor -> source name)."""
        value = self.constants.get(tensor)
        if value is not None:
            if isinstance(value, QuantizedTensor):
                raise _Unfusable(HYBRID_REASON)
            vector = np.asarray(value, np.float32)
            if vector.ndim == 2 and vector.shape[0] == 1:
                vector = vector[0]
            if vector.ndim != 1:
                raise _Unfusable(f"a constant of shape {list(np.shape(value))} is added to a gate pre-activation")
            return _Affine({}, {"add": vector})
        op = self.producer.get(tensor)
        if op is None:
            raise _Unfusable(f"a gate reads {self.name(tensor)}, neither the step's input nor the recurrent state")
        if op.opcode == "ADD" and op.option("fused_activation_function", "NONE") == "NONE":
            return self.affine(op.inputs[0], sources) + self.affine(op.inputs[1], sources)
        if op.opcode == "FULLY_CONNECTED":
            return self._fully_connected(op, sources)
        if op.opcode in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS") and self._keeps_rows(op.inputs[0], tensor):
            return self.affine(op.inputs[0], sources)  # e.g. [1, 4H] -> [4H] when the batch is 1
        if op.opcode in _COLUMN_SELECTIONS:
            return self._columns(op, tensor, sources)
        raise _Unfusable(f"a gate pre-activation goes through {op.opcode} ({self.name(tensor)})")

    def _fully_connected(self, op: Operator, sources: Mapping[int, str]) -> _Affine:
        source = sources.get(op.inputs[0])
        if source is None:
            raise _Unfusable(
                f"a FULLY_CONNECTED reads {self.name(op.inputs[0])}, which the fused operator has no input for"
            )
        if op.option("fused_activation_function", "NONE") != "NONE" or op.option("keep_num_dims", False):
            raise _Unfusable("a FULLY_CONNECTED of the cell has a fused activation or keep_num_dims")
        weights = self.constants.get(op.inputs[1])
        bias = self.constants.get(op.inputs[2]) if len(op.inputs) > 2 and op.inputs[2] != NO_TENSOR else None
        if any(isinstance(v, QuantizedTensor) for v in (weights, bias)):
            raise _Unfusable(HYBRID_REASON)
        if weights is None or np.ndim(weights) != 2:
            raise _Unfusable(f"the weights {self.name(op.inputs[1])} of a FULLY_CONNECTED are not a constant matrix")
        if len(op.inputs) > 2 and op.inputs[2] != NO_TENSOR and bias is None:
            raise _Unfusable(f"the bias {self.name(op.inputs[2])} of a FULLY_CONNECTED is not a constant")
        biases = {} if bias is None else {source: np.asarray(bias, np.float32)}
        return _Affine({source: np.asarray(weights, np.float32)}, biases)

    def _keeps_rows(self, source: int, result: int) -> bool:
        """Whether reshaping `source` into `result` only regroups the leading (batch) axes."""
        a, b = self.graph.tensors[source].shape, self.graph.tensors[result].shape
        return bool(a and b) and min((*a, *b)) >= 0 and a[-1] == b[-1] and np.prod(a) == np.prod(b)

    def _columns(self, op: Operator, tensor: int, sources: Mapping[int, str]) -> _Affine:
        """A SPLIT / STRIDED_SLICE / ... that takes columns of a [B, n] pre-activation: the
        operator's own kernel, run on column numbers, says which."""
        moving = [i for i in op.inputs if i != NO_TENSOR and i not in self.constants]
        shape = self.graph.tensors[moving[0]].shape if len(moving) == 1 else ()
        if len(shape) != 2 or min(shape) < 0:
            raise _Unfusable(f"{op.opcode} {self.name(tensor)} does not take columns of one [batch, units] tensor")
        numbers = np.arange(shape[0] * shape[1], dtype=np.int32).reshape(shape)
        args = [numbers if i == moving[0] else None if i == NO_TENSOR else self.constants[i] for i in op.inputs]
        try:
            outputs, _ = run_operator(op, args)
        except (ValueError, TypeError, NotImplementedError, IndexError) as e:
            raise _Unfusable(f"{op.opcode} {self.name(tensor)}: {e}") from e
        taken = np.asarray(outputs[op.outputs.index(tensor)])
        columns = taken[0] if taken.ndim == 2 else None
        if columns is None or taken.shape[0] != shape[0] or np.any(taken != numbers[:, :1] + columns):
            raise _Unfusable(f"{op.opcode} {self.name(tensor)} does not take whole columns of every batch row")
        return self.affine(moving[0], sources).take(columns)


def _total(affines) -> _Affine:
    result = _Affine({}, {})
    for a in affines:
        result = result + a
    return result


@dataclasses.dataclass(frozen=True)
class _Carries:
    """The roles of a recurrent loop's carries (positions), and the body's step input."""

    sequence: int  # the time-major input sequence [T, B, F], passed through unchanged
    output: int  # the output buffer: [T, B, H] (return_sequences) or [1, B, H]
    states: tuple[int, ...]  # h, then c for an LSTM
    step_input: int  # body tensor GATHER(sequence, time)
    return_sequences: bool


def _recognise(model: Model, op: Operator) -> _Layer:
    """The recurrent layer a WHILE operator of the main subgraph computes; raises _Unfusable."""
    constants = model.constants
    starts = [constants.get(i) for i in op.inputs]
    if model.stateful:
        raise _Unfusable(
            "the model streams (Model.stateful): a fused operator's state would carry over from one invoke to "
            "the next, while the loop starts from zero at each"
        )
    loop = analyze_while(model, op, starts)
    if loop.trip_count is None:
        raise _Unfusable("its trip count is not static (the cond is not LESS(counter, constant))")
    body = _Body(model.subgraph(loop.body), loop.body)
    if {"SELECT", "SELECT_V2"} & set(body.graph.opcodes):
        raise _Unfusable(MASKED_REASON)
    carries = _carries(model, op, loop, body)
    for k in carries.states:
        start = starts[k]
        if start is None or isinstance(start, QuantizedTensor) or np.any(np.asarray(start)):
            raise _Unfusable(f"its initial state (carry {k}) is not a constant zero (an initial_state argument)")
    read_after = [k for k, t in enumerate(op.outputs) if k != carries.output and _is_read(model, t)]
    if read_after:
        raise _Unfusable(
            f"its carry {read_after[0]} is read after the loop (return_state=True): the fused operators keep "
            "their final state in variable tensors that the graph cannot read"
        )
    graph = body.graph
    h_in, h_new = graph.inputs[carries.states[0]], graph.outputs[carries.states[0]]
    sources = {carries.step_input: "input", h_in: "recurrent"}
    x = model.tensors[op.inputs[carries.sequence]]
    n_input, units = x.shape[2], graph.tensors[h_in].shape[-1]
    if len(carries.states) == 2:
        name, (weights, options) = "LSTM", _lstm(body, carries, sources, (units, n_input))
    elif _is_gru(body, h_new):
        name, (weights, options) = "GRU", _gru(body, h_in, h_new, sources, (units, n_input))
    else:
        name, (weights, options) = "SimpleRNN", _rnn(body, h_new, sources, (units, n_input))
    result = op.outputs[carries.output]
    prefix = model.tensors[op.outputs[0]].name.removesuffix("/while") or "loop"
    return _Layer(name, weights, options, op.inputs[carries.sequence], result, carries.return_sequences, prefix)


def _is_read(model: Model, tensor: int) -> bool:
    return tensor in model.outputs or any(tensor in op.inputs for op in model.operators)


def _carries(model: Model, op: Operator, loop: WhileLoop, body: _Body) -> _Carries:
    """Which carry is the sequence, the output buffer and the state (`_Carries`)."""
    graph = body.graph
    counters = {graph.inputs[c.carry]: c for c in loop.counters}
    gathers = [
        g
        for g in graph.operators
        if g.opcode == "GATHER" and g.inputs[0] in graph.inputs and g.inputs[1] in counters and g.option("axis", 0) == 0
    ]
    if len(gathers) != 1:
        raise _Unfusable(f"its body reads {len(gathers)} sequences at the loop counter; a recurrent layer reads one")
    (gather,) = gathers
    sequence, time = graph.inputs.index(gather.inputs[0]), gather.inputs[1]
    counter = counters[time]
    shape = model.tensors[op.inputs[sequence]].shape
    if (
        sequence not in loop.invariant
        or len(shape) != 3
        or min(shape) < 0
        or graph.tensors[gather.inputs[0]].dtype != "float32"
    ):
        raise _Unfusable(
            "the sequence it reads is not a float [time, batch, features] tensor that the loop passes through"
        )
    if (counter.start, counter.step) != (0, 1) or loop.trip_count != shape[0]:
        raise _Unfusable(
            f"it reads time steps {counter.start}, {counter.start + counter.step}, ... over {loop.trip_count} "
            f"iterations, not each of the {shape[0]} steps in turn"
        )
    moving = [k for k in range(len(op.inputs)) if k not in loop.invariant and graph.inputs[k] not in counters]
    extra = [k for k in loop.invariant if k != sequence and any(graph.inputs[k] in o.inputs for o in graph.operators)]
    if extra:
        raise _Unfusable(f"its body reads carry {extra[0]} besides the sequence and the state")
    writes = [(k, w) for k in moving if (w := _buffer_write(body, k, time)) is not None]
    if len(writes) != 1:
        raise _Unfusable(f"it writes {len(writes)} output buffers; a recurrent layer writes one")
    ((output, (value, return_sequences)),) = writes
    if return_sequences and graph.tensors[graph.inputs[output]].shape[0] != shape[0]:
        raise _Unfusable(f"its output buffer does not hold one row per time step ({shape[0]})")
    states = [k for k in moving if k != output]
    h = [k for k in states if graph.outputs[k] == value]
    if not h or len(states) > 2:
        raise _Unfusable("what it writes to its output is not its recurrent state")
    return _Carries(sequence, output, (h[0], *(k for k in states if k != h[0])), gather.outputs[0], return_sequences)


def _buffer_write(body: _Body, carry: int, time: int) -> tuple[int, bool] | None:
    """(the [B, H] value, return_sequences) if carry `carry` is an output buffer: the body
    writes ``RESHAPE(value)`` at ``time`` (DYNAMIC_UPDATE_SLICE) of a [T, B, H] buffer, or
    over a [1, B, H] one; None otherwise."""
    graph = body.graph
    old, new = graph.inputs[carry], graph.outputs[carry]
    op = body.producer.get(new)
    shape = graph.tensors[old].shape
    if op is None or len(shape) != 3:
        return None
    if op.opcode == "RESHAPE" and shape[0] == 1:
        written, sequences = new, False
    elif op.opcode == "DYNAMIC_UPDATE_SLICE" and op.inputs[0] == old and _indexes_time(body, op.inputs[2], time):
        written, sequences = op.inputs[1], True
    else:
        return None
    reshape = body.producer.get(written)
    if reshape is None or reshape.opcode != "RESHAPE" or graph.tensors[written].shape != (1, *shape[1:]):
        return None
    value = reshape.inputs[0]
    return (value, sequences) if graph.tensors[value].shape == tuple(shape[1:]) else None


def _indexes_time(body: _Body, start: int, time: int) -> bool:
    """Whether `start` is ``CONCATENATION(RESHAPE(time, [1]), [0, 0])``: the first row at `time`."""
    cat = body.producer.get(start)
    if cat is None or cat.opcode != "CONCATENATION" or len(cat.inputs) != 2:
        return False
    head, rest = cat.inputs
    reshape = body.producer.get(head)
    return (
        reshape is not None and reshape.opcode == "RESHAPE" and reshape.inputs[0] == time and body.ints(rest) == [0, 0]
    )


def _lstm(body: _Body, carries: _Carries, sources: Mapping[int, str], shape: tuple[int, int]):
    """LSTMWeights and LSTMOptions of an LSTM body: ``c' = f * c + i * act(g)``,
    ``h' = o * act(c')`` with sigmoid gates."""
    graph = body.graph
    (h_new, c_new), c_in = (graph.outputs[k] for k in carries.states), graph.inputs[carries.states[1]]
    output_product = body.op(h_new, "MUL")
    cell_side = [t for t in output_product.inputs if body.activation(t)[1] == [c_new]]
    if len(cell_side) != 1:
        raise _Unfusable("h' is not the output gate times the activation of the new cell state")
    act = _allowed(body.activation(cell_side[0])[0], [a for a in LSTM_ACTIVATIONS if a != "SIGN_BIT"], "cell")
    gates = {"output": _other(output_product, cell_side[0])}
    for t in body.op(c_new, "ADD").inputs:
        product = body.op(t, "MUL")
        if c_in in product.inputs:
            gates["forget"] = _other(product, c_in)
        else:  # i * act(g): the input gate is the sigmoid one
            gates["input"] = next((u for u in product.inputs if body.activation(u)[0] == "SIGMOID"), product.inputs[0])
            gates["cell"] = _other(product, gates["input"])
    if set(gates) != set(GATES):
        raise _Unfusable("the new cell state is not f * c + i * g")
    units, n_input = shape
    fields: dict[str, Any] = {}
    for gate, tensor in gates.items():
        _, pre = body.gate(tensor, sources, [act] if gate == "cell" else ["SIGMOID"], f"{gate} gate")
        pre.check_sources(("input", "recurrent"), f"{gate} gate")
        fields[f"input_to_{gate}_weights"] = pre.weight("input", (units, n_input))
        fields[f"recurrent_to_{gate}_weights"] = pre.weight("recurrent", (units, units))
        fields[f"{gate}_gate_bias"] = pre.bias(units)
    return LSTMWeights(**fields), LSTMOptions(fused_activation_function=act, cell_clip=0.0, time_major=True)


def _rnn(body: _Body, h_new: int, sources: Mapping[int, str], shape: tuple[int, int]):
    """RNNWeights and RNNOptions of a SimpleRNN body: ``h' = act(W x + U h + b)``."""
    act, pre = body.gate(h_new, sources, tuple(ACTIVATION_CODES), "SimpleRNN")
    pre.check_sources(("input", "recurrent"), "SimpleRNN")
    units, n_input = shape
    weights = RNNWeights(
        pre.weight("input", (units, n_input)), pre.weight("recurrent", (units, units)), pre.bias(units)
    )
    return weights, RNNOptions(fused_activation_function=act, time_major=True)


def _is_gru(body: _Body, h_new: int) -> bool:
    """Whether h' is a sum of two products (``z * h + (1 - z) * n``) rather than an activation."""
    op = body.producer.get(h_new)
    return (
        op is not None
        and op.opcode == "ADD"
        and op.option("fused_activation_function", "NONE") == "NONE"
        and all(body.producer.get(t) is not None and body.producer[t].opcode == "MUL" for t in op.inputs)
    )


def _gru(body: _Body, h_in: int, h_new: int, sources: Mapping[int, str], shape: tuple[int, int]):
    """GRUWeights and GRUOptions of a Keras GRU body: ``h' = z * h + (1 - z) * n`` with
    ``n = act(W_n x + b_n + r * (U_n h + b'_n))`` (reset_after) or ``act(W_n x + b_n + U_n (r * h))``."""
    products = [body.op(t, "MUL") for t in body.op(h_new, "ADD").inputs]
    keep = next((p for p in products if h_in in p.inputs), None)
    if keep is None or len(products) != 2:
        raise _Unfusable("h' is not z * h + (1 - z) * n")
    update = products[1 - products.index(keep)]
    z = _other(keep, h_in)
    complement = [t for t in update.inputs if _is_one_minus(body, t, z)]
    if len(complement) != 1:
        raise _Unfusable("h' is not z * h + (1 - z) * n")
    gate_act, z_pre = body.gate(z, sources, GRU_ACTIVATIONS, "update gate")
    act, n_terms = body.activation(_other(update, complement[0]))
    act = _allowed(act, GRU_ACTIVATIONS, "candidate")
    n_terms = [s for t in n_terms for s in body.summands(t)]
    reset_products = [t for t in n_terms if body.producer.get(t) is not None and body.producer[t].opcode == "MUL"]
    if len(reset_products) == 1:  # reset_after: r * (U_n h + b'_n)
        reset_after, product = True, body.op(reset_products[0], "MUL")
        r = next((t for t in product.inputs if body.activation(t)[0] == gate_act), product.inputs[0])
        n_h = body.affine(_other(product, r), sources)
        n_x = _total(body.affine(t, sources) for t in n_terms if t != reset_products[0])
    else:  # reset before the matmul: U_n (r * h)
        reset_after = False
        resets = [o for o in body.graph.operators if o.opcode == "MUL" and h_in in o.inputs and o is not keep]
        if len(resets) != 1:
            raise _Unfusable("the candidate reads neither r * (U h) nor U (r * h)")
        r = _other(resets[0], h_in)
        both = _total(body.affine(t, {**sources, resets[0].outputs[0]: "reset"}) for t in n_terms)
        n_x, n_h = both.part("input", "add"), both.part("reset").renamed("reset", "recurrent")
    _, r_pre = body.gate(r, sources, [gate_act], "reset gate")
    z_pre.check_sources(("input", "recurrent"), "update gate")
    r_pre.check_sources(("input", "recurrent"), "reset gate")
    n_x.check_sources(("input",), "candidate")
    n_h.check_sources(("recurrent",), "candidate's recurrent term")
    units, n_input = shape
    fields: dict[str, Any] = {}
    for gate, input_part, recurrent_part in (
        ("update", z_pre.part("input", "add"), z_pre.part("recurrent")),
        ("reset", r_pre.part("input", "add"), r_pre.part("recurrent")),
        ("candidate", n_x, n_h),
    ):
        fields[f"input_to_{gate}_weights"] = input_part.weight("input", (units, n_input))
        fields[f"recurrent_to_{gate}_weights"] = recurrent_part.weight("recurrent", (units, units))
        fields[f"{gate}_gate_bias"] = input_part.bias(units)
        fields[f"recurrent_{gate}_gate_bias"] = recurrent_part.bias(units) if recurrent_part.biases else None
    options = GRUOptions(reset_after=reset_after, activation=act, recurrent_activation=gate_act, time_major=True)
    return GRUWeights(**fields), options


def _allowed(activation: str, allowed: Sequence[str], what: str) -> str:
    if activation not in allowed:
        raise _Unfusable(f"the {what} activation is {activation}; the fused operator computes one of {list(allowed)}")
    return activation


def _other(op: Operator, tensor: int) -> int:
    """The other operand of a binary operator that reads `tensor`."""
    if len(op.inputs) != 2 or tensor not in op.inputs:
        raise _Unfusable(f"{op.opcode} does not combine the expected operands")
    return op.inputs[1] if op.inputs[0] == tensor else op.inputs[0]


def _is_one_minus(body: _Body, tensor: int, z: int) -> bool:
    """Whether `tensor` is ``SUB(1, z)``."""
    op = body.producer.get(tensor)
    if (
        op is None
        or op.opcode != "SUB"
        or op.inputs[1] != z
        or op.option("fused_activation_function", "NONE") != "NONE"
    ):
        return False
    one = body.constants.get(op.inputs[0])
    return one is not None and not isinstance(one, QuantizedTensor) and np.all(np.asarray(one) == 1)


# ----------------------------------------------------------------------------- replacement and check


def _replace(b: ModelBuilder, model: Model, layer: _Layer) -> list[Operator]:
    """The operators that compute `layer` from its sequence into its result tensor."""
    x = Ref(layer.sequence, model.tensors[layer.sequence].shape)
    time, batch, _ = x.shape
    if layer.name == "LSTM":
        y = b.add_lstm(x, layer.weights, layer.options, name=layer.prefix)
    elif layer.name == "SimpleRNN":
        y = b.add_rnn(x, layer.weights, layer.options, name=layer.prefix)
    else:
        y = b.add_gru(x, layer.weights, layer.options, return_sequences=layer.return_sequences, name=layer.prefix)
    if not layer.return_sequences:  # the [1, B, H] buffer: the last step
        last = (1, batch, y.shape[-1])
        out = b.add_intermediate(f"{layer.prefix}/last_step", last)
        if layer.name == "GRU":  # h_T [B, H]
            b.add_operator(
                "RESHAPE", [y, b.add_constant(f"{layer.prefix}/last_step_shape", np.asarray(last, np.int32))], [out]
            )
        else:
            begin = b.add_constant(f"{layer.prefix}/last_step_begin", np.asarray([time - 1, 0, 0], np.int32))
            b.add_operator(
                "SLICE", [y, begin, b.add_constant(f"{layer.prefix}/last_step_size", np.asarray(last, np.int32))], [out]
            )
    operators = b.pop_operators()
    operators[-1] = dataclasses.replace(operators[-1], outputs=(layer.result,))  # writes the loop's output tensor
    return operators


def _difference(
    model: Model,
    before: list[Operator],
    after: list[Operator],
    inputs: tuple[int, ...],
    outputs: tuple[int, ...],
    seed: int,
) -> float:
    """The largest ``|after - before| / max(1, |before|)`` of `outputs` when the operators
    `before` and `after` (over `model`'s tensors) run on random `inputs`, one draw per
    `CHECK_SCALES`, in float64 (module docstring)."""
    rng = np.random.default_rng(seed)
    draws = [[scale * rng.standard_normal(model.tensors[i].shape) for i in inputs] for scale in CHECK_SCALES]
    with jax.enable_x64(True):
        try:
            want = _run_float64(
                model.replace(operators=before, inputs=inputs, outputs=outputs, signature_names=None), draws
            )
        except (ValueError, TypeError, NotImplementedError) as e:
            raise _Unfusable(f"the loop does not run: {e}") from e
        try:
            got = _run_float64(
                model.replace(operators=after, inputs=inputs, outputs=outputs, signature_names=None), draws
            )
        except (ValueError, TypeError, NotImplementedError) as e:
            raise _Unfusable(f"the fused operator does not run: {e}") from e
    worst = 0.0
    for a, b in zip(want, got):
        if a.shape != b.shape:
            return float("inf")
        difference = np.abs(b - a) / np.maximum(1.0, np.abs(a))
        if not np.all(np.isfinite(difference)):
            return float("inf")
        worst = max(worst, float(np.max(difference, initial=0.0)))
    return worst


def _run_float64(graph: Model, draws: list[list[np.ndarray]]) -> list[np.ndarray]:
    """`graph`'s outputs on each draw of inputs, its float weights and state cast to float64
    (under ``jax.enable_x64``), concatenated."""
    params = {k: _float64(v) for k, v in graph.params.items()}
    state = {k: _float64(v) for k, v in graph.init_state(graph.input_batch(*draws[0])).items()}
    run = jax.jit(lambda params, state, *x: graph.apply(params, state, *x)[0])
    return [np.asarray(y) for x in draws for y in run(params, state, *x)]


def _float64(value: Any) -> Any:
    """A float array as float64; anything else (integer constants, int8 weights) unchanged."""
    if isinstance(value, (np.ndarray, jax.Array)) and np.issubdtype(value.dtype, np.floating):
        return np.asarray(value, np.float64)
    return value


def _fuse_bidirectional_pairs(
    model: Model, report: list[LoopFusion], created: Mapping[Operator, int], seed: int
) -> tuple[Model, list[LoopFusion]]:
    """`fuse_bidirectional_lstm` of the pairs of fused loops whose BIDIRECTIONAL_SEQUENCE_LSTM
    matches the two directions (checked like the loops); the report updated."""
    accepted = []
    for pair in bidirectional_lstm_pairs(model):
        if pair.forward not in created or pair.backward not in created:
            continue
        before = [model.operators[k] for k in pair.replaced]
        error = _difference(model, before, list(pair.replacement), (pair.input,), pair.outputs, seed)
        if error <= TOLERANCE:
            accepted.append(pair)
            for op in (pair.forward, pair.backward):
                entry = report[created[op]]
                report[created[op]] = dataclasses.replace(
                    entry, fused_into="BIDIRECTIONAL_SEQUENCE_LSTM", error=max(entry.error, error)
                )
    fused, _ = fuse_bidirectional_lstm(model, accepted)
    return fused, report
