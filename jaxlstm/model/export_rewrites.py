"""Rewrites that prepare a `Model` for a .tflite file, in the order `prepare_for_export` runs them:

1. `fix_time`: fixes the time dimension of the sequence inputs (``time_steps``).
2. `fix_batch`: fixes the dynamic batch dimension (``batch_size``; otherwise it stays
   dynamic, -1 in ``shape_signature``).
3. Predict (``stateful=False``), `zero_state_each_invoke`: zeroes every recurrent state at the
   start of each invoke. LiteRT requires the states to be variable tensors and never resets
   them itself, so a FILL operator (for an integer state: FILL then QUANTIZE) whose output
   *is* the variable tensor runs right before each recurrent op (the TFLite converter writes
   the same pattern with DEQUANTIZE in float16 models). With a dynamic batch the FILL dims
   come from SHAPE of the op's input, so the state follows ``resize_tensor_input`` of the
   input alone. Streaming (``stateful=True``) leaves the variable tensors alone.
4. GRU operators (no TFLite builtin) are unrolled into builtin operators over the input's
   static length or ``time_steps`` (`jaxlstm.model.builder.unroll_gru`).
5. `quantize_dynamic_range` (``quantize="dynamic"``): int8 weights exactly as TFLite's
   dynamic-range quantizer (tflite/tools/optimize/quantize_weights.cc), turning the recurrent
   ops and FULLY_CONNECTED hybrid, in every subgraph.
6. `avoid_litert_defects`: configurations LiteRT computes wrongly become equivalent ones.

Steps 1-4 concern the main subgraph; the other subgraphs (WHILE loops' conds and bodies,
`Model.subgraphs`) keep their shapes and operators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxlstm.model.builder import unroll_gru
from jaxlstm.model.graph import Model, Operator, Tensor, options_tuple
from jaxlstm.model.operators import NO_TENSOR, OPERATORS, RECURRENT, state_slots
from jaxlstm.model.rewrite import Graph, fresh_name, remove_state_resets
from jaxlstm.ops._quant import quantize_symmetric


def prepare_for_export(
    model: Model,
    *,
    quantize: str | None = None,
    quantize_min_elements: int = 1024,
    asymmetric_quantize_inputs: bool = False,
    stateful: bool | None = None,
    batch_size: int | None = None,
    time_steps: int | None = None,
) -> Model:
    """`model` rewritten as `jaxlstm.tflite.export_tflite` writes it (the steps above; the
    arguments are export_tflite's, already validated)."""
    if time_steps is not None:
        model = fix_time(model, time_steps)
    if batch_size is not None:
        model = fix_batch(model, batch_size)
    if stateful is None and model.stateful:
        pass  # a streaming file read by load_tflite: written as it was
    elif stateful:
        model = remove_state_resets(model)
    else:
        model = zero_state_each_invoke(model)
    model = unroll_gru(model, time_steps=time_steps, stateful=bool(stateful or model.stateful))
    if quantize == "dynamic":
        model = quantize_dynamic_range(model, quantize_min_elements, asymmetric_quantize_inputs)
        model = model.replace(
            subgraphs=[
                quantize_dynamic_range(g, quantize_min_elements, asymmetric_quantize_inputs) for g in model.subgraphs
            ]
        )
    return avoid_litert_defects(model)


def quantize_dynamic_range(model: Graph, min_elements: int, asymmetric: bool) -> Graph:
    """Int8 weights for every recurrent/FULLY_CONNECTED op whose weight matrices all have
    at least `min_elements` elements. A weight tensor that another consumer reads as float
    is duplicated rather than changed under it."""
    constants = model.constants
    tensors = list(model.tensors)
    float_weights = {i for i, t in enumerate(tensors) if i in constants and t.dtype == "float32" and not t.is_variable}
    plans = {}  # op position -> quantized input positions
    for position, op in enumerate(model.operators):
        quantizable = OPERATORS[op.opcode].quantizable_slots if op.opcode in OPERATORS else ()
        slots = [s for s in quantizable if s < len(op.inputs) and op.inputs[s] != NO_TENSOR]
        if not slots or any(op.inputs[s] not in float_weights for s in slots):
            continue
        slots = [s for s in slots if not _is_diagonal_recurrent(op, s, tensors)]  # read as float
        matrices = [s for s in slots if len(tensors[op.inputs[s]].shape) >= 2]
        if matrices and all(np.size(constants[op.inputs[s]]) >= min_elements for s in matrices):
            plans[position] = slots
    quantized_reads = {(p, s) for p, slots in plans.items() for s in slots}
    float_reads = {
        op.inputs[s]
        for p, op in enumerate(model.operators)
        for s in range(len(op.inputs))
        if (p, s) not in quantized_reads and op.inputs[s] != NO_TENSOR
    }
    replacement: dict[int, int] = {}
    operators = list(model.operators)
    for position, slots in plans.items():
        op = operators[position]
        inputs = list(op.inputs)
        for s in slots:
            source = inputs[s]
            if source not in replacement:
                q = quantize_symmetric(constants[source])
                t = dataclasses.replace(tensors[source], dtype="int8", scale=float(q.scale))
                if source in float_reads or source in model.outputs:
                    t = dataclasses.replace(t, name=fresh_name(tensors, t.name + "/int8"))
                    tensors.append(t)
                    replacement[source] = len(tensors) - 1
                else:
                    tensors[source] = t
                    replacement[source] = source
                constants[replacement[source]] = q
            inputs[s] = replacement[source]
        options = dict(op.options)
        options["asymmetric_quantize_inputs"] = asymmetric
        operators[position] = dataclasses.replace(op, inputs=tuple(inputs), options=options_tuple(options))
    return model.replace(tensors=tensors, operators=operators, constants=constants)


def _is_diagonal_recurrent(op: Operator, slot: int, tensors: Sequence[Tensor]) -> bool:
    names = OPERATORS[op.opcode].inputs if op.opcode in RECURRENT else ()
    return bool(names) and "recurrent_to" in names[slot] and len(tensors[op.inputs[slot]].shape) == 1


def fix_time(model: Model, time_steps: int) -> Model:
    """Sets the time dimension of every sequence input ([B, T, F], or [T, B, F] when
    time-major) to `time_steps`.

    Raises:
      ValueError: an input whose time dimension is static and differs.
    """
    axes = model.batch_axes()
    tensors = list(model.tensors)
    for i in model.inputs:
        t = tensors[i]
        if len(t.shape) != 3:
            continue
        axis = 1 - axes.get(i, 0)
        if t.shape[axis] >= 0 and t.shape[axis] != time_steps:
            raise ValueError(
                f"time_steps={time_steps}, but input {t.name!r} has a fixed time dimension of "
                f"{t.shape[axis]} (shape {list(t.shape)})"
            )
        tensors[i] = dataclasses.replace(t, shape=t.shape[:axis] + (time_steps,) + t.shape[axis + 1 :])
    return model.replace(tensors=tensors)


def fix_batch(model: Model, batch_size: int) -> Model:
    """Replaces the dynamic batch dimension of every tensor by `batch_size`."""
    axes = model.batch_axes()
    tensors = []
    for i, t in enumerate(model.tensors):
        axis = axes.get(i, 0)
        if len(t.shape) > axis and t.shape[axis] < 0:
            t = dataclasses.replace(t, shape=t.shape[:axis] + (batch_size,) + t.shape[axis + 1 :])
        tensors.append(t)
    return model.replace(tensors=tensors)


def zero_state_each_invoke(model: Model) -> Model:
    """Zeroes every state tensor at the start of each invoke (predict semantics).

    A FILL of 0 whose output is the variable tensor runs right before the first operator that
    reads it, unless an operator writes it first (an imported predict model); an integer
    state is a QUANTIZE of a float FILL (real 0: its zero point), which LiteRT and TFLite
    Micro both run. Static state
    shapes get constant FILL dims; a dynamic batch gets dims built from SHAPE(x)[batch axis]
    and the state size, where x is the recurrent op's input (or the model's first input for
    a state read by other operators), so the state follows the resizing of the input alone.
    """
    tensors = list(model.tensors)
    constants = model.constants
    axes = model.batch_axes()
    operators: list[Operator] = []
    written: set[int] = set()
    batches: dict[int, int] = {}  # tensor x -> the [1] int32 tensor SHAPE(x)[batch axis]

    def add(name: str, shape: tuple[int, ...], dtype: str = "float32", value: Any = None) -> int:
        tensors.append(Tensor(fresh_name(tensors, name), shape, dtype))
        if value is not None:
            constants[len(tensors) - 1] = value
        return len(tensors) - 1

    zero = None  # the FILL value, a float32 scalar 0
    for op in model.operators:
        for state in op.inputs:
            if state == NO_TENSOR or not tensors[state].is_variable or state in written:
                continue
            written.add(state)
            t = tensors[state]
            if zero is None:
                zero = add("zero_state/value", (), "float32", np.zeros((), np.float32))
            shape, prefix = t.shape, t.name
            if all(d >= 0 for d in shape):
                dims = add(prefix + "/zero_dims", (len(shape),), "int32", np.asarray(shape, np.int32))
            else:
                x = op.inputs[0] if state_slots(op) else model.inputs[0]
                if x not in batches:
                    batches[x] = _batch_of(operators, add, x, axes.get(x, 0), len(tensors[x].shape), prefix)
                rest = add(prefix + "/zero_dims_rest", (len(shape) - 1,), "int32", np.asarray(shape[1:], np.int32))
                dims = add(prefix + "/zero_dims", (len(shape),), "int32")
                operators.append(
                    Operator(
                        "CONCATENATION",
                        (batches[x], rest),
                        (dims,),
                        options_tuple({"axis": 0, "fused_activation_function": "NONE"}),
                    )
                )
            if t.scale is None:
                operators.append(Operator("FILL", (dims, zero), (state,)))
            else:  # TFLite Micro's FILL writes float32 and int32 only (fill.cc)
                zeros = add(prefix + "/zero", shape, "float32")
                operators.append(Operator("FILL", (dims, zero), (zeros,)))
                operators.append(Operator("QUANTIZE", (zeros,), (state,)))
        operators.append(op)
        written.update(op.outputs)
    return model.replace(tensors=tensors, operators=operators, constants=constants)


def _batch_of(operators: list[Operator], add: Any, x: int, axis: int, rank: int, prefix: str) -> int:
    """Appends SHAPE(x)[axis:axis+1] (an int32 [1] tensor) and returns its index."""
    shape = add(prefix + "/input_shape", (rank,), "int32")
    operators.append(Operator("SHAPE", (x,), (shape,), options_tuple({"out_type": "INT32"})))
    begin, end, strides = (
        add(f"{prefix}/batch_{n}", (1,), "int32", np.asarray([v], np.int32))
        for n, v in (("begin", axis), ("end", axis + 1), ("strides", 1))
    )
    batch = add(prefix + "/batch", (1,), "int32")
    operators.append(
        Operator(
            "STRIDED_SLICE",
            (shape, begin, end, strides),
            (batch,),
            options_tuple(
                {
                    "begin_mask": 0,
                    "end_mask": 0,
                    "ellipsis_mask": 0,
                    "new_axis_mask": 0,
                    "shrink_axis_mask": 0,
                    "offset": False,
                }
            ),
        )
    )
    return batch


def avoid_litert_defects(model: Model) -> Model:
    """Rewrites operator configurations that LiteRT computes wrongly into equivalent ones.

    * BIDIRECTIONAL_SEQUENCE_LSTM with merge_outputs in batch-major layout: the kernel
      offsets the state pointer by the merged row width (lstm_eval.cc EvalFloat/EvalHybrid),
      reading and writing past the state for batch > 1;
    * hybrid BIDIRECTIONAL_SEQUENCE_RNN with merge_outputs, time-major, symmetric inputs:
      the kernel passes ``zero_points + k`` (a null pointer plus k) per batch row
      (kernel_utils.cc RnnBatchStep) and crashes for batch > 1.
    Both become ``merge_outputs=False`` plus a CONCATENATION of the two outputs.

    Raises:
      NotImplementedError: a cross-linked BIDIRECTIONAL_SEQUENCE_RNN whose aux input is
        narrower than its input in the layouts where the kernel strides the aux input
        by the input size (time-major, or hybrid): LiteRT would read past its end.
    """
    tensors = list(model.tensors)
    operators: list[Operator] = []
    for op in model.operators:
        merged = bool(op.option("merge_outputs", False))
        time_major = bool(op.option("time_major", False))
        inputs = OPERATORS[op.opcode].named_inputs(op) if op.opcode in RECURRENT else {}
        if op.opcode == "BIDIRECTIONAL_SEQUENCE_RNN":
            hybrid = tensors[inputs["fw_input_weights"]].dtype == "int8"
            aux = inputs.get("aux_input", NO_TENSOR)
            aux_weights = inputs.get("fw_aux_input_weights", NO_TENSOR)
            if (
                aux != NO_TENSOR
                and aux_weights != NO_TENSOR
                and (time_major or hybrid)
                and (tensors[aux].shape[-1] < tensors[inputs["input"]].shape[-1])
            ):
                raise NotImplementedError(
                    "BIDIRECTIONAL_SEQUENCE_RNN with aux weights and an aux input narrower than "
                    "the input: LiteRT steps through aux_input with the input size and would read "
                    "past its end; pad aux_input to the input size"
                )
            split = merged and time_major and hybrid and not op.option("asymmetric_quantize_inputs", False)
            widths = tuple(tensors[inputs[f"{d}_input_weights"]].shape[0] for d in ("fw", "bw"))
        elif op.opcode == "BIDIRECTIONAL_SEQUENCE_LSTM":
            split = merged and not time_major
            widths = tuple(tensors[inputs[f"{d}_recurrent_to_output_weights"]].shape[-1] for d in ("fw", "bw"))
        else:
            split = False
        if not split:
            operators.append(op)
            continue
        out = tensors[op.outputs[0]]
        halves = []
        for direction, width in zip(("fw", "bw"), widths):
            tensors.append(Tensor(fresh_name(tensors, f"{out.name}/{direction}"), out.shape[:-1] + (width,)))
            halves.append(len(tensors) - 1)
        options = dict(op.options, merge_outputs=False)
        operators.append(dataclasses.replace(op, outputs=tuple(halves), options=options_tuple(options)))
        operators.append(
            Operator(
                "CONCATENATION",
                tuple(halves),
                op.outputs,
                options_tuple({"axis": len(out.shape) - 1, "fused_activation_function": "NONE"}),
            )
        )
    return model.replace(tensors=tensors, operators=operators)
