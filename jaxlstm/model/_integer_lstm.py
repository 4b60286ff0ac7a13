"""Integer LSTM and UNIDIRECTIONAL_SEQUENCE_LSTM operators of a `Model`.

Their quantization lives in the tensor table (static metadata, even when `Model.apply`
is traced with the weight values as arguments); this module reads it into the
`jaxlstm.ops.lstm_integer` records and calls the kernels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxlstm.model.operators import INTEGER_LSTM, LSTM_INPUTS, NO_TENSOR, OPERATORS
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.lstm import LSTMOptions, LSTMState, LSTMWeights
from jaxlstm.ops.lstm_integer import (
    LSTMQuantization,
    QuantParams,
    lstm_integer,
    prepare,
    unidirectional_sequence_lstm_integer,
)

if TYPE_CHECKING:
    from jaxlstm.model.graph import Operator, Tensor

ACTIVATIONS = ("int8", "int16")  # input dtypes that select the integer kernels
_STATES = ("input", "output_state", "cell_state")
# LSTM and UNIDIRECTIONAL_SEQUENCE_LSTM read their inputs at the same positions.
assert all(OPERATORS[op].inputs == LSTM_INPUTS for op in INTEGER_LSTM)
_OUTPUT_STATE, _CELL_STATE = (LSTM_INPUTS.index(s) for s in ("output_state", "cell_state"))


def quantization(op: Operator, tensors: Sequence[Tensor]) -> LSTMQuantization:
    """The op's `LSTMQuantization`, from its input, state, output and intermediate tensors.

    Raises:
      ValueError: a tensor the kernel reads has no (or per-channel) quantization.
    """

    def params(index: int, what: str) -> QuantParams:
        t = tensors[index]
        if t.scale is None or isinstance(t.scale, tuple):
            kind = "no quantization parameters" if t.scale is None else "per-channel quantization"
            raise ValueError(
                f"{what} (tensor {index} {t.name!r}, {t.dtype}) has {kind}; the integer LSTM needs one scale"
            )
        return QuantParams(float(t.scale), int(t.zero_point))

    return LSTMQuantization(
        input=params(op.inputs[0], "input"),
        output_state=params(op.inputs[_OUTPUT_STATE], "output_state"),
        cell_state=params(op.inputs[_CELL_STATE], "cell_state").scale,
        output=params(op.outputs[0], "output"),
        intermediates=tuple(
            None if tensors[i].scale is None else params(i, f"intermediate {k}") for k, i in enumerate(op.intermediates)
        ),
    )


def weights(op: Operator, tensors: Sequence[Tensor], values: Sequence[Any]) -> LSTMWeights:
    """`LSTMWeights` from the op's input `values` (arrays, or shapes when checking), each
    weight with its scale from the tensor table; biases stay plain integer arrays."""
    fields = {}
    for slot, name in enumerate(LSTM_INPUTS):
        if name in _STATES or slot >= len(op.inputs) or op.inputs[slot] == NO_TENSOR:
            continue
        value = values[slot]
        value = value.values if isinstance(value, QuantizedTensor) else value
        scale = tensors[op.inputs[slot]].scale
        if scale is not None and not name.endswith("bias"):
            value = QuantizedTensor(value, np.asarray(scale, np.float32))
        fields[name] = value
    return LSTMWeights(**fields)


def _check_types(op: Operator, tensors: Sequence[Tensor]) -> None:
    activations = tensors[op.inputs[0]].dtype
    expected = {
        "output_state": (tensors[op.inputs[_OUTPUT_STATE]].dtype, activations),
        "cell_state": (tensors[op.inputs[_CELL_STATE]].dtype, "int16"),
        "output": (tensors[op.outputs[0]].dtype, activations),
    }
    for name, (dtype, wanted) in expected.items():
        if dtype != wanted:
            raise ValueError(f"{name} is {dtype}; with {activations} input the integer LSTM needs it {wanted}")


def check(op: Operator, tensors: Sequence[Tensor], options: LSTMOptions, runtime: str) -> None:
    """Load-time validation: tensor types and the kernel's Prepare on the tensor metadata.

    Raises:
      ValueError: an invalid model (the reason); NotImplementedError: one the runtime lacks.
    """
    if not op.outputs:
        raise ValueError("the LSTM has no output tensor")
    lstm_quantization = quantization(op, tensors)
    _check_types(op, tensors)
    for slot, name in enumerate(LSTM_INPUTS):
        index = op.inputs[slot] if slot < len(op.inputs) else NO_TENSOR
        if name not in _STATES and index != NO_TENSOR and tensors[index].zero_point != 0:
            raise ValueError(
                f"{name} has zero point {tensors[index].zero_point}; the integer LSTM kernels ignore "
                "weight zero points (they assume 0)"
            )
    shapes = [
        None if i == NO_TENSOR else jax.ShapeDtypeStruct(tuple(max(d, 1) for d in tensors[i].shape), tensors[i].dtype)
        for i in op.inputs
    ]
    try:
        prepare(
            weights(op, tensors, shapes),
            lstm_quantization,
            options,
            runtime=runtime,
            activations=tensors[op.inputs[0]].dtype,
            sequence=op.opcode != "LSTM",
        )
    except TypeError as e:  # a wrong tensor type: in a file, a malformed model
        raise ValueError(str(e)) from e


def run(
    op: Operator, args: list, options: LSTMOptions, runtime: str, tensors: Sequence[Tensor]
) -> tuple[list, dict[int, Any]]:
    """The kernel: (outputs, state updates by input position), as `kernels.run_operator`."""
    if not tensors:
        raise ValueError("an integer LSTM reads its quantization from the model's tensors: pass a KernelContext")
    w = weights(op, tensors, args)
    h, c = args[_OUTPUT_STATE], args[_CELL_STATE]
    state = LSTMState(h.reshape(-1, w.n_output), c.reshape(-1, w.n_cell))
    fn = lstm_integer if op.opcode == "LSTM" else unidirectional_sequence_lstm_integer
    y, final = fn(args[0], w, state, quantization(op, tensors), options, runtime=runtime)
    return [y], {_OUTPUT_STATE: final.output_state.reshape(h.shape), _CELL_STATE: final.cell_state.reshape(c.shape)}
