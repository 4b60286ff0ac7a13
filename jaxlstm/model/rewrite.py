"""Model rewrites: strip cell_clip and fuse TF's bidirectional LSTM (for re-exporting converted
models) or split it (for fully integer models), turn the lowered TensorListSetItem of loop
bodies into DYNAMIC_UPDATE_SLICE, remove the per-invoke state resets of a predict file, prune
unused tensors and subgraphs. The WHILE loops of Keras 3 recurrent layers become fused
operators in `jaxlstm.model.loop_fusion`.

`strip_cell_clip`, `fuse_bidirectional_lstm`, `split_bidirectional_lstm` and
`fuse_tensor_list_writes` return a new `Model` and the number of operators changed; numerics
change only where the docstring says so.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from jaxlstm.model.graph import Model, Operator, Subgraph, Tensor, options_tuple, subgraph_references
from jaxlstm.model.operators import LSTM_DIRECTION_INPUTS, LSTM_FAMILY, LSTM_LAYER_NORM_INPUTS, NO_TENSOR, OPERATORS
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.lstm import GATES

Graph = TypeVar("Graph", Model, Subgraph)  # a rewrite that works on either kind of subgraph

_UNIDIRECTIONAL_LSTM = OPERATORS["UNIDIRECTIONAL_SEQUENCE_LSTM"]
_BIDIRECTIONAL_LSTM = OPERATORS["BIDIRECTIONAL_SEQUENCE_LSTM"]
_SHARED_LSTM_OPTIONS = (
    "fused_activation_function",
    "cell_clip",
    "proj_clip",
    "time_major",
    "asymmetric_quantize_inputs",
)
_LAYER_NORM_SLOTS = _UNIDIRECTIONAL_LSTM.slots(LSTM_LAYER_NORM_INPUTS)  # the bidirectional op has none
# input_to_forget_weights [n_cell, n_input], recurrent_to_forget_weights [n_cell, n_output]:
# LiteRT's bidirectional kernel checks the backward weights against the forward sizes.
_SIZE_SLOTS = _UNIDIRECTIONAL_LSTM.slots(("input_to_forget_weights", "recurrent_to_forget_weights"))


def strip_cell_clip(model: Model) -> tuple[Model, int]:
    """Sets cell_clip to 0 (no clipping) on every LSTM-family operator.

    TFLiteConverter writes cell_clip=10 into LSTMs converted from Keras, which never clips;
    stripping it makes the model compute what Keras computes. This changes numerics whenever
    the cell state would leave [-10, 10].

    Returns:
      (the rewritten model, how many operators had a non-zero cell_clip).
    """
    operators, changed = [], 0
    for op in model.operators:
        if op.opcode in LSTM_FAMILY and float(op.option("cell_clip", 0.0)) > 0:
            op = _with_options(op, cell_clip=0.0)
            changed += 1
        operators.append(op)
    return model.replace(operators=operators), changed


@dataclasses.dataclass(frozen=True)
class BidirectionalPair:
    """A forward and a backward UNIDIRECTIONAL_SEQUENCE_LSTM over one sequence, which one
    BIDIRECTIONAL_SEQUENCE_LSTM replaces (`bidirectional_lstm_pairs`).

    Attributes:
      forward, backward: the two operators.
      replaced: the positions of the operators the replacement stands for, ascending: the two
        LSTMs, the REVERSE_V2 before and after the backward one, and a TRANSPOSE between.
      replacement: the bidirectional operator, then the TRANSPOSE of its backward output if
        the backward LSTM's output was transposed before it was reversed.
      input: the sequence tensor that both directions read.
      outputs: the tensors the replaced operators give the rest of the graph: the forward
        sequence, and the backward sequence in forward time order.
    """

    forward: Operator
    backward: Operator
    replaced: tuple[int, ...]
    replacement: tuple[Operator, ...]
    input: int
    outputs: tuple[int, int]


def fuse_bidirectional_lstm(model: Model, pairs: Sequence[BidirectionalPair] | None = None) -> tuple[Model, int]:
    """Replaces TensorFlow's unfused bidirectional LSTM with one BIDIRECTIONAL_SEQUENCE_LSTM.

    TFLiteConverter turns a Keras ``Bidirectional(LSTM(return_sequences=True))`` into
    ``REVERSE_V2(x) -> UNIDIRECTIONAL_SEQUENCE_LSTM -> REVERSE_V2`` (backward) beside
    ``UNIDIRECTIONAL_SEQUENCE_LSTM(x)`` (forward), joined by a merge (CONCATENATION, ADD, ...);
    `jaxlstm.model.loop_fusion` leaves the same pattern in time-major form, with a TRANSPOSE
    to batch-major before the second REVERSE_V2. The backward direction of
    BIDIRECTIONAL_SEQUENCE_LSTM computes exactly the reversed-run-reversed sequence, so the
    operators become one op with ``merge_outputs=False`` whose two outputs feed the unchanged
    merge (``merge_outputs=True`` is avoided: TFLite mis-indexes merged batch-major outputs for
    batch > 1). Numerics are unchanged.

    Args:
      model: the model.
      pairs: the pairs to fuse, from ``bidirectional_lstm_pairs(model)``; None fuses all.

    Returns:
      (the rewritten model, how many pairs were fused).
    """
    pairs = bidirectional_lstm_pairs(model) if pairs is None else list(pairs)
    if not pairs:
        return model, 0
    replaced = {k for pair in pairs for k in pair.replaced}
    replacements = {pair.replaced[0]: pair.replacement for pair in pairs}
    operators: list[Operator] = []
    for position, op in enumerate(model.operators):
        operators += replacements.get(position, ())
        if position not in replaced:
            operators.append(op)
    return prune_unused_tensors(model.replace(operators=operators)), len(pairs)


def bidirectional_lstm_pairs(model: Model) -> list[BidirectionalPair]:
    """The disjoint pairs of `fuse_bidirectional_lstm` in `model`'s main subgraph.

    A pair is fused only when both LSTMs share their options and sizes (as Keras
    Bidirectional layers do), neither uses layer norm (the bidirectional op has no
    layer-norm inputs), and the tensors between the replaced operators have no other use.
    """
    operators = model.operators
    producer = {t: k for k, op in enumerate(operators) for t in op.outputs}
    uses = Counter(t for op in operators for t in op.inputs if t != NO_TENSOR)
    uses.update(model.outputs)
    readers: dict[int, list[int]] = {}
    for k, op in enumerate(operators):
        for t in set(op.inputs):
            readers.setdefault(t, []).append(k)

    def only_reader(tensor: int, opcode: str) -> int | None:
        """The operator that reads `tensor` if it is the tensor's only use and an `opcode`."""
        if uses[tensor] != 1 or tensor not in readers:
            return None
        k = readers[tensor][0]
        return k if operators[k].opcode == opcode else None

    def reverses(op: Operator, axis: int) -> bool:
        value = model.constant(model.tensors[op.inputs[1]].name)
        return value is not None and [int(a) for a in np.ravel(value)] in ([axis], [axis - 3])

    def reversed_back(bw_at: int, time_axis: int) -> tuple[list[int], Operator | None] | None:
        """(positions of [TRANSPOSE,] REVERSE_V2 that turn the backward output back into
        forward time order, the TRANSPOSE or None), if that is its only use."""
        first = only_reader(operators[bw_at].outputs[0], "REVERSE_V2")
        if first is not None:
            return ([first], None) if reverses(operators[first], time_axis) else None
        transpose_at = only_reader(operators[bw_at].outputs[0], "TRANSPOSE")
        if transpose_at is None:
            return None
        transpose = operators[transpose_at]
        perm = model.constant(model.tensors[transpose.inputs[1]].name)
        reverse_at = only_reader(transpose.outputs[0], "REVERSE_V2")
        if perm is None or sorted(np.ravel(perm)) != [0, 1, 2] or reverse_at is None:
            return None
        moved_to = [int(a) for a in np.ravel(perm)].index(time_axis)
        return ([transpose_at, reverse_at], transpose) if reverses(operators[reverse_at], moved_to) else None

    def compatible(fw: Operator, bw: Operator) -> bool:
        return (
            all(fw.option(k) == bw.option(k) for k in _SHARED_LSTM_OPTIONS)
            and all(model.tensors[fw.inputs[s]].shape == model.tensors[bw.inputs[s]].shape for s in _SIZE_SLOTS)
            and not any(len(op.inputs) > s and op.inputs[s] != NO_TENSOR for op in (fw, bw) for s in _LAYER_NORM_SLOTS)
        )

    pairs: list[BidirectionalPair] = []
    taken: set[int] = set()
    for bw_at, bw in enumerate(operators):
        rev_in_at = producer.get(bw.inputs[0]) if bw.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM" else None
        if rev_in_at is None or operators[rev_in_at].opcode != "REVERSE_V2" or uses[bw.inputs[0]] != 1:
            continue
        x = operators[rev_in_at].inputs[0]
        time_axis = 0 if bw.option("time_major", False) else 1
        back = reversed_back(bw_at, time_axis)
        if len(model.tensors[x].shape) != 3 or not reverses(operators[rev_in_at], time_axis) or back is None:
            continue
        fw_at = next(
            (
                k
                for k in readers.get(x, [])
                if k not in taken and operators[k].opcode == bw.opcode and compatible(operators[k], bw)
            ),
            None,
        )
        if fw_at is None or {fw_at, bw_at, rev_in_at, *back[0]} & taken:
            continue
        fw = operators[fw_at]
        (*_, rev_out_at), transpose = back
        restored = operators[rev_out_at].outputs[0]  # the backward sequence in forward time order
        directions = {
            f"{d}_{name}": i
            for d, op in (("fw", fw), ("bw", bw))
            for name, i in _UNIDIRECTIONAL_LSTM.named_inputs(op).items()
            if name != "input"
        }
        bidirectional = Operator(
            "BIDIRECTIONAL_SEQUENCE_LSTM",
            _BIDIRECTIONAL_LSTM.arrange({"input": x, **directions}),
            (fw.outputs[0], restored if transpose is None else bw.outputs[0]),
            options_tuple(
                {
                    **{k: fw.option(k) for k in _SHARED_LSTM_OPTIONS if fw.option(k) is not None},
                    "merge_outputs": False,
                }
            ),
        )
        replacement = (
            (bidirectional,)
            if transpose is None
            else (bidirectional, dataclasses.replace(transpose, outputs=(restored,)))
        )
        positions = (fw_at, bw_at, rev_in_at, *back[0])
        taken.update(positions)
        pairs.append(BidirectionalPair(fw, bw, tuple(sorted(positions)), replacement, x, (fw.outputs[0], restored)))
    return pairs


def fuse_tensor_list_writes(model: Model) -> tuple[Model, int]:
    """Rewrites the lowered ``TensorListSetItem`` in every subgraph but the main one into
    DYNAMIC_UPDATE_SLICE, an operator LiteRT runs and `lax.dynamic_update_slice` under jit.

    TensorFlow's converter writes ``buffer[time] = value`` (a recurrent layer's output at
    step `time`, in a WHILE body) as::

        head = SLICE(buffer, begin [0, 0, ...], size CONCATENATION(RESHAPE(time, [1]), [-1, ...]))
        tail = SLICE(buffer, begin CONCATENATION(RESHAPE(time + 1, [1]), [0, ...]), size [-1, ...])
        out  = CONCATENATION(head, value [1, ...], tail, axis 0)

    whose intermediate shapes depend on `time`, so it cannot be traced. For every `time` in
    ``[0, len(buffer))`` (the others make the SLICEs fail in LiteRT) ``out`` is exactly
    ``DYNAMIC_UPDATE_SLICE(buffer, value, CONCATENATION(RESHAPE(time, [1]), [0, ...]))``:
    the same copy of the same values, so numerics do not change. The matched operators
    that nothing else reads are removed.

    Returns:
      (the rewritten model, how many writes were rewritten).
    """
    subgraphs, total = [], 0
    for graph in model.subgraphs:
        graph, count = _fuse_tensor_list_writes(graph)
        subgraphs.append(graph)
        total += count
    return (model.replace(subgraphs=subgraphs), total) if total else (model, 0)


def prune_unused_subgraphs(model: Model) -> Model:
    """Drops the subgraphs that no operator calls, directly or through other subgraphs, from
    the main one (e.g. a loop's cond and body once a rewrite has replaced its WHILE), and
    renumbers the references of the others. Their params are named after their new indices."""
    reached, stack = {0}, [0]
    while stack:
        for op in model.subgraph(stack.pop()).operators:
            for _, callee in subgraph_references(op):
                if callee not in reached:
                    reached.add(callee)
                    stack.append(callee)
    if len(reached) == 1 + len(model.subgraphs):
        return model
    kept = sorted(reached)
    index = {old: new for new, old in enumerate(kept)}

    def renumbered(operators: tuple[Operator, ...]) -> list[Operator]:
        return [
            _with_options(op, **{option: index[k] for option, k in subgraph_references(op)})
            if subgraph_references(op)
            else op
            for op in operators
        ]

    subgraphs = [model.subgraphs[k - 1] for k in kept[1:]]
    return model.replace(
        operators=renumbered(model.operators),
        subgraphs=[g.replace(operators=renumbered(g.operators)) for g in subgraphs],
    )


def split_bidirectional_lstm(model: Model) -> tuple[Model, int]:
    """Replaces each BIDIRECTIONAL_SEQUENCE_LSTM by two UNIDIRECTIONAL_SEQUENCE_LSTMs.

    The inverse of `fuse_bidirectional_lstm`, and what TensorFlow's converter writes for a
    Keras ``Bidirectional``: the forward op on x; the backward op on ``REVERSE_V2(x)`` (or
    of the aux input, when the op reads that as the backward input), its output reversed
    back; a CONCATENATION for merged outputs. Numerics are unchanged. Fully integer models
    need it: the bidirectional op has no integer kernel (bidirectional_sequence_lstm.cc
    takes float input only).

    Returns:
      (the rewritten model, how many operators were split).

    Raises:
      NotImplementedError: an op that reads its aux input through aux weights
        (cross-linking), which the unidirectional op cannot express.
    """
    tensors, constants = list(model.tensors), model.constants
    operators: list[Operator] = []
    split = 0
    for position, op in enumerate(model.operators):
        if op.opcode == "BIDIRECTIONAL_SEQUENCE_LSTM":
            operators += _split_bidirectional(position, op, tensors, constants)
            split += 1
        else:
            operators.append(op)
    if not split:
        return model, 0
    return model.replace(tensors=tensors, operators=operators, constants=constants), split


def remove_state_resets(model: Model) -> Model:
    """Drops the operators that zero a state tensor at each invoke, and what only they used.

    A predict file (``export_tflite``'s default) writes each state (variable) tensor with a
    FILL of the constant 0 (an integer state: QUANTIZE of a float FILL of 0) before it is read, its dims computed by SHAPE -> STRIDED_SLICE ->
    CONCATENATION of the input. Without them the state carries over from one invoke to the
    next (a streaming file), and the `Model` holds its recurrence alone: `Model.stateful`
    records the semantics. Other operators whose outputs nothing reads any more go too.
    """
    variables = {i for i, t in enumerate(model.tensors) if t.is_variable}
    producers = {t: op for op in model.operators for t in op.outputs}

    def fills_zero(op: Operator | None) -> bool:
        if op is None or op.opcode != "FILL" or len(op.inputs) != 2:
            return False
        value = model.constant(model.tensors[op.inputs[1]].name)
        value = value.values if isinstance(value, QuantizedTensor) else value
        return value is not None and not np.any(np.asarray(value))

    def is_reset(op: Operator) -> bool:
        if not op.outputs or not set(op.outputs) <= variables:
            return False
        if op.opcode == "QUANTIZE":  # an integer state: QUANTIZE(FILL(dims, 0.0))
            return fills_zero(producers.get(op.inputs[0]))
        return fills_zero(op)

    kept = [op for op in model.operators if not is_reset(op)]
    if len(kept) == len(model.operators):
        return model
    needed = set(model.outputs) | variables
    live: list[Operator] = []
    for op in reversed(kept):
        if needed.intersection(op.outputs):
            live.append(op)
            needed.update(op.inputs)
    return prune_unused_tensors(model.replace(operators=live[::-1]))


# ----------------------------------------------------------------------------- internals


def _with_options(op: Operator, **changes) -> Operator:
    return dataclasses.replace(op, options=options_tuple({**dict(op.options), **changes}))


def _fuse_tensor_list_writes(graph: Subgraph) -> tuple[Subgraph, int]:
    operators = list(graph.operators)
    tensors = list(graph.tensors)
    constants = graph.constants
    producer = {t: k for k, op in enumerate(operators) for t in op.outputs}

    def produced(tensor: int, opcode: str) -> int | None:
        k = producer.get(tensor)
        return k if k is not None and operators[k].opcode == opcode else None

    def ints(tensor: int) -> list[int] | None:
        value = constants.get(tensor)
        return None if value is None or tensors[tensor].dtype != "int32" else [int(v) for v in np.ravel(value)]

    def index_vector(tensor: int, rest: int, rank: int) -> tuple[int, int, list[int]] | None:
        """(scalar t, the [1] tensor RESHAPE(t, [1]), operator positions) when `tensor` is
        ``CONCATENATION(RESHAPE(t, [1]), [rest] * (rank - 1))``."""
        cat = produced(tensor, "CONCATENATION")
        if cat is None or len(operators[cat].inputs) != 2 or operators[cat].option("axis", 0) != 0:
            return None
        head, tail = operators[cat].inputs
        reshape = produced(head, "RESHAPE")
        if reshape is None or ints(tail) != [rest] * (rank - 1) or tensors[head].shape != (1,):
            return None
        scalar = operators[reshape].inputs[0]
        if tensors[scalar].shape != () or tensors[scalar].dtype != "int32":
            return None
        return scalar, head, [cat, reshape]

    def plus_one(tensor: int, base: int) -> bool:
        """Whether `tensor` is ``base + 1``."""
        add = produced(tensor, "ADD")
        if add is not None:
            op = operators[add]
            if op.option("fused_activation_function", "NONE") != "NONE" or base not in op.inputs:
                return False
            return ints(op.inputs[1] if op.inputs[0] == base else op.inputs[0]) == [1]
        values = ints(tensor), ints(base)
        return None not in values and values[0] == [values[1][0] + 1]

    replacements: dict[int, list[Operator]] = {}  # CONCATENATION position -> its replacement
    matched: set[int] = set()  # positions of the other operators of the pattern
    for position, cat in enumerate(operators):
        if cat.opcode != "CONCATENATION" or len(cat.inputs) != 3 or cat.option("fused_activation_function") != "NONE":
            continue
        head, value, tail = cat.inputs
        head_at, tail_at = produced(head, "SLICE"), produced(tail, "SLICE")
        if head_at is None or tail_at is None or operators[head_at].inputs[0] != operators[tail_at].inputs[0]:
            continue
        head_op, tail_op = operators[head_at], operators[tail_at]
        buffer = tensors[head_op.inputs[0]]
        rank = len(buffer.shape)
        if rank < 2 or cat.option("axis", 0) % rank != 0 or min(buffer.shape) < 0:
            continue
        if tensors[value].shape != (1, *buffer.shape[1:]) or buffer.dtype != tensors[value].dtype:
            continue
        if tensors[cat.outputs[0]].dtype != buffer.dtype:
            continue
        if ints(head_op.inputs[1]) != [0] * rank or ints(tail_op.inputs[2]) != [-1] * rank:
            continue
        size, begin = index_vector(head_op.inputs[2], -1, rank), index_vector(tail_op.inputs[1], 0, rank)
        if size is None or begin is None or not plus_one(begin[0], size[0]):
            continue
        name = tensors[cat.outputs[0]].name
        tensors.append(Tensor(fresh_name(tensors, f"{name}/start_rest"), (rank - 1,), "int32"))
        constants[len(tensors) - 1] = np.zeros(rank - 1, np.int32)
        tensors.append(Tensor(fresh_name(tensors, f"{name}/start"), (rank,), "int32"))
        start = len(tensors) - 1
        replacements[position] = [
            Operator(
                "CONCATENATION",
                (size[1], start - 1),
                (start,),
                options_tuple({"axis": 0, "fused_activation_function": "NONE"}),
            ),
            Operator("DYNAMIC_UPDATE_SLICE", (head_op.inputs[0], value, start), cat.outputs),
        ]
        matched.update([head_at, tail_at, *size[2], *begin[2]])
    if not replacements:
        return graph, 0
    rewritten = []
    for position, op in enumerate(operators):
        rewritten += replacements.get(position, [op])
    kept = _drop_unread(rewritten, {operators[k] for k in matched}, graph.outputs)
    return prune_unused_tensors(graph.replace(tensors=tensors, operators=kept, constants=constants)), len(replacements)


def _drop_unread(operators: list[Operator], candidates: set[Operator], outputs: tuple[int, ...]) -> list[Operator]:
    """`operators` without those among `candidates` whose outputs nothing reads any more."""
    while True:
        read = {t for op in operators for t in op.inputs} | set(outputs)
        kept = [op for op in operators if op not in candidates or read.intersection(op.outputs)]
        if len(kept) == len(operators):
            return kept
        operators = kept


def fresh_name(tensors: Sequence[Tensor], name: str) -> str:
    """`name`, or `name`_k with the first k that no tensor of `tensors` has."""
    taken = {t.name for t in tensors}
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def _split_bidirectional(position: int, op: Operator, tensors: list[Tensor], constants: dict) -> list[Operator]:
    """The operators replacing bidirectional LSTM `op`; new tensors are appended to `tensors`."""
    inputs = _BIDIRECTIONAL_LSTM.named_inputs(op)

    def read(name: str) -> int:
        return inputs.get(name, NO_TENSOR)

    def add(tensor: Tensor, value=None) -> int:
        taken = {t.name for t in tensors}
        name, k = tensor.name, 1
        while name in taken:
            name, k = f"{tensor.name}_{k}", k + 1
        tensors.append(dataclasses.replace(tensor, name=name))
        if value is not None:
            constants[len(tensors) - 1] = value
        return len(tensors) - 1

    if any(read(f"{d}_aux_input_to_{g}_weights") != NO_TENSOR for d in ("fw", "bw") for g in GATES):
        raise NotImplementedError(
            f"operator {position} (BIDIRECTIONAL_SEQUENCE_LSTM) reads its aux input through aux weights "
            "(cross-linking), which two UNIDIRECTIONAL_SEQUENCE_LSTMs cannot express"
        )
    x = read("input")
    bw_source = x if read("aux_input") == NO_TENSOR else read("aux_input")
    time_major = bool(op.option("time_major", False))
    options = options_tuple(
        {
            **{k: op.option(k) for k in _SHARED_LSTM_OPTIONS if op.option(k) is not None},
            "time_major": time_major,
            "diagonal_recurrent_tensors": False,
        }
    )
    out = tensors[op.outputs[0]]
    axis = add(Tensor(f"{out.name}/time_axis", (1,), "int32"), np.asarray([0 if time_major else 1], np.int32))
    if len(op.outputs) == 2:
        fw_out, bw_out = op.outputs
    else:
        widths = [tensors[read(f"{d}_recurrent_to_output_weights")].shape[1] for d in ("fw", "bw")]
        fw_out, bw_out = (add(Tensor(f"{out.name}/{d}", out.shape[:-1] + (n,))) for d, n in zip(("fw", "bw"), widths))
    reversed_input = add(dataclasses.replace(tensors[bw_source], name=f"{out.name}/bw_input"))
    bw_reversed = add(dataclasses.replace(tensors[bw_out], name=f"{tensors[bw_out].name}/reversed"))

    def lstm(direction: str, source: int, output: int) -> Operator:
        names = (*LSTM_DIRECTION_INPUTS, "output_state", "cell_state")
        inputs = _UNIDIRECTIONAL_LSTM.arrange({"input": source, **{n: read(f"{direction}_{n}") for n in names}})
        return Operator("UNIDIRECTIONAL_SEQUENCE_LSTM", inputs, (output,), options)

    operators = [
        lstm("fw", x, fw_out),
        Operator("REVERSE_V2", (bw_source, axis), (reversed_input,)),
        lstm("bw", reversed_input, bw_reversed),
        Operator("REVERSE_V2", (bw_reversed, axis), (bw_out,)),
    ]
    if len(op.outputs) == 1:
        concat = options_tuple({"axis": len(out.shape) - 1, "fused_activation_function": "NONE"})
        operators.append(Operator("CONCATENATION", (fw_out, bw_out), op.outputs, concat))
    return operators


def prune_unused_tensors(model: Graph) -> Graph:
    """Drops tensors no operator, input or output refers to, renumbering the rest (operators'
    intermediates included)."""
    used = {t for op in model.operators for t in (*op.inputs, *op.outputs, *op.intermediates) if t != NO_TENSOR}
    used.update(model.inputs)
    used.update(model.outputs)
    keep = sorted(used)
    new_index = {old: new for new, old in enumerate(keep)}

    def remap(indices: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(NO_TENSOR if t == NO_TENSOR else new_index[t] for t in indices)

    operators = [
        dataclasses.replace(
            op, inputs=remap(op.inputs), outputs=remap(op.outputs), intermediates=remap(op.intermediates)
        )
        for op in model.operators
    ]
    constants = {new_index[i]: v for i, v in model.constants.items() if i in new_index}
    return model.replace(
        tensors=[model.tensors[i] for i in keep],
        operators=operators,
        inputs=remap(model.inputs),
        outputs=remap(model.outputs),
        constants=constants,
    )
