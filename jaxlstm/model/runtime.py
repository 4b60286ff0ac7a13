"""The model runtime: runs one operator with its registered kernel, and checks at load time
what a kernel's Prepare would.

Importing this module imports every kernel module, so `KERNELS` is complete: the recurrent
and glue kernels (`jaxlstm.model.kernels`), the array, convolution and control-flow kernels,
and the integer kernels (registered in front of the float kernels of their operators).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from jaxlstm.model import _integer_lstm, array_kernels, control_flow, conv_kernels, integer_kernels  # noqa: F401
from jaxlstm.model.kernels import KERNELS, KernelContext, lstm_options
from jaxlstm.model.operators import INTEGER_LSTM, NO_TENSOR

if TYPE_CHECKING:
    from jaxlstm.model.graph import Operator, Tensor


def run_operator(op: Operator, args: list, context: KernelContext | None = None) -> tuple[list, dict[int, Any]]:
    """Runs one operator; raises NotImplementedError for an opcode without a kernel."""
    try:
        fn = KERNELS[op.opcode]
    except KeyError:
        raise NotImplementedError(
            f"operator {op.opcode} is not supported by jaxlstm; supported: {sorted(KERNELS)}"
        ) from None
    return fn(op, args, context or KernelContext())


# Kernels that only move values (reshape, slice, fill, ...): exact on quantized integer
# tensors whose quantization the op keeps, as LiteRT requires of them. SHAPE reads no values
# (a predict export's state reset reads the shape of an integer input).
_MOVES_VALUES = frozenset(
    {
        "SHAPE",
        "RESHAPE",
        "STRIDED_SLICE",
        "TRANSPOSE",
        "REVERSE_V2",
        "GATHER",
        "PACK",
        "UNPACK",
        "SPLIT",
        "FILL",
    }
)


def check_operator(op: Operator, tensors: Sequence[Tensor], runtime: str, constants: Collection[int] = ()) -> None:
    """The checks a kernel makes before it runs, at load time (`constants`: the indices of
    constant tensors, which are weights rather than activations).

    Integer LSTMs and the integer kernels of `integer_kernels.OPCODES` validate their
    quantization (the kernel's Prepare); other operators on quantized integer activations
    must only move them.

    Raises:
      ValueError: an invalid integer LSTM (the reason).
      NotImplementedError: integer activations an operator has no integer kernel for.
    """
    if op.opcode in INTEGER_LSTM and tensors[op.inputs[0]].dtype in _integer_lstm.ACTIVATIONS:
        _integer_lstm.check(op, tensors, lstm_options(op), runtime)
        return
    if op.opcode in integer_kernels.OPCODES and integer_kernels.computes_on_integers(op, tensors):
        integer_kernels.check(op, tensors, runtime, constants)
        return
    offset = [i for i in op.inputs if i in constants and tensors[i].zero_point != 0]
    if offset and op.opcode not in _MOVES_VALUES:
        t = tensors[offset[0]]
        raise NotImplementedError(
            f"{op.opcode} reads the constant {t.name!r} with zero point {t.zero_point}; jaxlstm's kernel "
            "for it assumes symmetric constants (zero point 0)"
        )
    quantized = {
        (tensors[i].dtype, tensors[i].scale, tensors[i].zero_point)
        for i in (*op.inputs, *op.outputs)
        if i != NO_TENSOR and i not in constants and tensors[i].scale is not None
    }
    if quantized and not (op.opcode in _MOVES_VALUES and len(quantized) == 1):
        raise NotImplementedError(
            f"{op.opcode} on quantized integer activations {sorted(quantized)} has no integer kernel in "
            f"jaxlstm; integer kernels cover LSTM, UNIDIRECTIONAL_SEQUENCE_LSTM, {', '.join(integer_kernels.OPCODES)}, "
            "and ops that only move values with one quantization"
        )
