"""Operator kernels of the model runtime: builtin opcode -> JAX computation.

Every kernel is ``fn(op, args, context) -> (outputs, updates)``: the `Operator` (for its
options), its input values by position (None for an absent optional input) and a
`KernelContext` (tensor metadata, the runtime); `updates` maps an input position to the new
value of that variable tensor. ``@kernel("OPCODE")`` registers one in `KERNELS`; the
modules beside this one (array, convolution, integer and control-flow kernels) register
theirs on import, and `jaxlstm.model.runtime` imports them all and runs operators.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.model import _integer_lstm
from jaxlstm.model.operators import GRU, LSTM_REQUIRED_WEIGHTS, LSTM_WEIGHT_INPUTS, OPERATORS, spec_of
from jaxlstm.ops._activations import activation
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._quant import QuantizedTensor, hybrid_matmul
from jaxlstm.ops.gru import GRUOptions, GRUWeights, gru
from jaxlstm.ops.lstm import (
    LSTMOptions,
    LSTMState,
    LSTMWeights,
    basic_lstm_cell,
    bidirectional_sequence_lstm,
    lstm,
    unidirectional_sequence_lstm,
)
from jaxlstm.ops.rnn import (
    RNNOptions,
    RNNWeights,
    bidirectional_sequence_rnn,
    rnn,
    unidirectional_sequence_rnn,
)

if TYPE_CHECKING:
    from jaxlstm.model.graph import Model, Operator, Tensor


@dataclasses.dataclass(frozen=True)
class KernelContext:
    """What a kernel may read beyond its operands: the tensors of the subgraph it runs in
    (quantization parameters are static metadata, even when the values are traced), the
    runtime (``"litert"`` or ``"tflite-micro"``) whose integer kernels to reproduce, and for
    operators that call subgraphs (WHILE) the model and the params it runs with
    (`Model.subgraph`, `Model.call_subgraph`)."""

    tensors: Sequence[Tensor] = ()
    runtime: str = "litert"
    model: Model | None = None
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)


Kernel = Callable[["Operator", list, KernelContext], tuple[list, dict[int, Any]]]
KERNELS: dict[str, Kernel] = {}


def kernel(*opcodes: str) -> Callable[[Kernel], Kernel]:
    """Registers the decorated kernel for `opcodes` (each must have a record in
    `jaxlstm.model.operators.OPERATORS`)."""

    def register(fn: Kernel) -> Kernel:
        for code in opcodes:
            if code not in OPERATORS:
                raise KeyError(f"kernel for {code}, which has no record in jaxlstm.model.operators")
            KERNELS[code] = fn
        return fn

    return register


def _state_updates(op: Operator, new: Mapping[str, Any]) -> dict[int, Any]:
    """{input position: new value} of the variable inputs named in `new`."""
    spec = spec_of(op)
    return {spec.slot(name): value for name, value in new.items()}


def _dense(v: Any) -> jax.Array:
    """A float view of a constant (int8 weights are dequantized)."""
    return v.dequantize() if isinstance(v, QuantizedTensor) else jnp.asarray(v)


def lstm_options(op: Operator) -> LSTMOptions:
    """The `LSTMOptions` of an LSTM operator (time_major defaults to False, as in the schema)."""
    return LSTMOptions(
        fused_activation_function=op.option("fused_activation_function", "NONE"),
        cell_clip=float(op.option("cell_clip", 0.0)),
        proj_clip=float(op.option("proj_clip", 0.0)),
        time_major=bool(op.option("time_major", False)),
        asymmetric_quantize_inputs=bool(op.option("asymmetric_quantize_inputs", False)),
    )


def _lstm_weights(named: dict[str, Any], prefix: str = "") -> LSTMWeights:
    fields = {f: named[prefix + f] for f in LSTM_WEIGHT_INPUTS if prefix + f in named}
    fields.update({f"aux_{k[len(prefix) + 4 :]}": v for k, v in named.items() if k.startswith(prefix + "aux_")})
    missing = [prefix + f for f in LSTM_REQUIRED_WEIGHTS if f not in fields]
    if missing:
        raise ValueError(f"missing required LSTM input(s): {missing}")
    return LSTMWeights(**fields)


@kernel("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM")
def _lstm(op: Operator, args: list, context: KernelContext):
    if op.opcode == "LSTM" and op.option("kernel_type", "FULL") == "BASIC":
        return _basic_lstm(op, args)
    if jnp.dtype(args[0].dtype).name in _integer_lstm.ACTIVATIONS:
        options = lstm_options(op)
        return _integer_lstm.run(op, args, options, context.runtime, context.tensors)
    named = spec_of(op).named(args)
    weights = _lstm_weights(named)
    state = LSTMState(
        named["output_state"].reshape(-1, weights.n_output),
        named["cell_state"].reshape(-1, weights.n_cell),
    )
    options = lstm_options(op)
    fn = lstm if op.opcode == "LSTM" else unidirectional_sequence_lstm
    y, final = fn(named["input"], weights, state, options=options)
    return [y], _state_updates(
        op,
        {
            "output_state": final.output_state.reshape(named["output_state"].shape),
            "cell_state": final.cell_state.reshape(named["cell_state"].shape),
        },
    )


def _basic_lstm(op: Operator, args: list):
    x, h, w, b, c = args[:5]
    h_new, c_new = basic_lstm_cell(x, h, _dense(w), _dense(b), c)
    concat = jnp.concatenate([x, h], axis=-1)
    activation_temp = jnp.matmul(concat, _dense(w).T, precision=FLOAT32) + _dense(b)
    return [h_new, c_new, concat, activation_temp], _state_updates(op, {"prev_activation": h_new, "prev_state": c_new})


@kernel("BIDIRECTIONAL_SEQUENCE_LSTM")
def _bidirectional_lstm(op: Operator, args: list, context: KernelContext):
    named = spec_of(op).named(args)
    fw = _lstm_weights(named, "fw_")
    bw = _lstm_weights(named, "bw_")
    fw_state = LSTMState(
        named["fw_output_state"].reshape(-1, fw.n_output), named["fw_cell_state"].reshape(-1, fw.n_cell)
    )
    bw_state = LSTMState(
        named["bw_output_state"].reshape(-1, bw.n_output), named["bw_cell_state"].reshape(-1, bw.n_cell)
    )
    merge = bool(op.option("merge_outputs", False))
    outputs, (fw_final, bw_final) = bidirectional_sequence_lstm(
        named["input"],
        fw,
        bw,
        fw_state,
        bw_state,
        named.get("aux_input"),
        options=lstm_options(op),
        merge_outputs=merge,
    )
    new = {
        f"{d}_{s}": getattr(final, s).reshape(named[f"{d}_{s}"].shape)
        for d, final in (("fw", fw_final), ("bw", bw_final))
        for s in ("output_state", "cell_state")
    }
    return list(outputs), _state_updates(op, new)


def _rnn_options(op: Operator) -> RNNOptions:
    return RNNOptions(
        fused_activation_function=op.option("fused_activation_function", "NONE"),
        time_major=bool(op.option("time_major", False)),
        asymmetric_quantize_inputs=bool(op.option("asymmetric_quantize_inputs", False)),
    )


@kernel("RNN", "UNIDIRECTIONAL_SEQUENCE_RNN")
def _rnn(op: Operator, args: list, context: KernelContext):
    named = spec_of(op).named(args)
    weights = RNNWeights(named["input_weights"], named["recurrent_weights"], named["bias"])
    h0 = named["hidden_state"].reshape(-1, weights.n_units)
    fn = rnn if op.opcode == "RNN" else unidirectional_sequence_rnn
    y, h = fn(named["input"], weights, h0, options=_rnn_options(op))
    return [y], _state_updates(op, {"hidden_state": h.reshape(named["hidden_state"].shape)})


@kernel("BIDIRECTIONAL_SEQUENCE_RNN")
def _bidirectional_rnn(op: Operator, args: list, context: KernelContext):
    named = spec_of(op).named(args)
    weights = [
        RNNWeights(
            named[f"{d}_input_weights"],
            named[f"{d}_recurrent_weights"],
            named[f"{d}_bias"],
            named.get(f"{d}_aux_input_weights"),
        )
        for d in ("fw", "bw")
    ]
    h = [named[f"{d}_hidden_state"].reshape(-1, w.n_units) for d, w in zip(("fw", "bw"), weights)]
    outputs, (h_fw, h_bw) = bidirectional_sequence_rnn(
        named["input"],
        *weights,
        *h,
        named.get("aux_input"),
        options=_rnn_options(op),
        merge_outputs=bool(op.option("merge_outputs", False)),
    )
    new = {f"{d}_hidden_state": h.reshape(named[f"{d}_hidden_state"].shape) for d, h in (("fw", h_fw), ("bw", h_bw))}
    return list(outputs), _state_updates(op, new)


def gru_options(op: Operator) -> GRUOptions:
    """The `GRUOptions` of a GRU operator."""
    return GRUOptions(
        reset_after=bool(op.option("reset_after", True)),
        activation=op.option("activation", "TANH"),
        recurrent_activation=op.option("recurrent_activation", "SIGMOID"),
        time_major=bool(op.option("time_major", False)),
    )


def gru_weights(args: list) -> GRUWeights:
    """The `GRUWeights` of a GRU operator's input values (absent recurrent biases: None)."""
    named = OPERATORS[GRU].named(args)
    return GRUWeights(**{n: a for n, a in named.items() if n not in ("input", "hidden_state")})


@kernel(GRU)
def _gru(op: Operator, args: list, context: KernelContext):
    """`jaxlstm.ops.gru` at any length; the output is the sequence, or h_T without
    ``return_sequences``."""
    y, h = gru(
        args[0],
        gru_weights(args),
        args[OPERATORS[GRU].slot("hidden_state")],
        options=gru_options(op),
        reverse=bool(op.option("reverse", False)),
        keep_order=bool(op.option("keep_order", False)),
    )
    return [y if op.option("return_sequences", True) else h], _state_updates(op, {"hidden_state": h})


# ----------------------------------------------------------------------------- glue ops


# The fused activations LiteRT's float glue ops apply: they clamp to the activation range
# (kernel_util.h CalculateActivationRange), which only the RELU family narrows; a fused TANH or
# SIGN_BIT on ADD, SUB, MUL or DIV is ignored.
_CLAMPING_ACTIVATIONS = ("RELU", "RELU_N1_TO_1", "RELU6")


def _fused(op: Operator, x: jax.Array) -> jax.Array:
    name = op.option("fused_activation_function", "NONE")
    return activation(name)(x) if name in _CLAMPING_ACTIVATIONS else x


_FULLY_CONNECTED_ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")


@kernel("FULLY_CONNECTED")
def _fully_connected(op: Operator, args: list, context: KernelContext):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    act = op.option("fused_activation_function", "NONE")
    if act not in _FULLY_CONNECTED_ACTIVATIONS:  # fully_connected.cc Prepare
        raise ValueError(f"FULLY_CONNECTED supports fused activations {_FULLY_CONNECTED_ACTIVATIONS}, got {act!r}")
    n_in = w.shape[-1]
    rows = x.reshape(-1, n_in)
    if isinstance(w, QuantizedTensor):  # per-tensor or per-channel (one scale per row)
        scales = jnp.broadcast_to(jnp.reshape(jnp.asarray(w.scale, jnp.float32), -1), w.shape[:1])
        y = hybrid_matmul(rows, w.values, scales, bool(op.option("asymmetric_quantize_inputs", False)))
        if b is not None:
            y = y + b  # hybrid FC: the bias is added after the scaled product
    else:
        y = jnp.matmul(rows, jnp.asarray(w).T, precision=FLOAT32)
        if b is not None:
            y = y + b
    y = _fused(op, y)
    if op.option("keep_num_dims", False):
        y = y.reshape(x.shape[:-1] + (w.shape[0],))
    return [y], {}


@kernel("SOFTMAX")
def _softmax(op: Operator, args: list, context: KernelContext):
    return [jax.nn.softmax(args[0] * op.option("beta", 1.0), axis=-1)], {}


@kernel("LOGISTIC")
def _logistic(op: Operator, args: list, context: KernelContext):
    return [jax.nn.sigmoid(args[0])], {}


@kernel("TANH")
def _tanh(op: Operator, args: list, context: KernelContext):
    return [jnp.tanh(args[0])], {}


@kernel("ADD", "MUL", "SUB")
def _binary(op: Operator, args: list, context: KernelContext):
    a, b = _dense(args[0]), _dense(args[1])
    fn = {"ADD": jnp.add, "MUL": jnp.multiply, "SUB": jnp.subtract}[op.opcode]
    return [_fused(op, fn(a, b))], {}


def _array_module(*args: Any):
    """numpy when every operand is a numpy constant (shape arithmetic stays static under
    jit, e.g. SHAPE -> STRIDED_SLICE -> CONCATENATION -> FILL dims), else jax.numpy."""
    return np if all(isinstance(a, np.ndarray) for a in args) else jnp


@kernel("CONCATENATION")
def _concatenation(op: Operator, args: list, context: KernelContext):
    act = op.option("fused_activation_function", "NONE")
    if act != "NONE":  # concatenation.cc Prepare
        raise ValueError(f"CONCATENATION with fused activation {act!r}: LiteRT accepts only NONE")
    xp = _array_module(*args)
    y = xp.concatenate([a if xp is np else _dense(a) for a in args], axis=op.option("axis", 0))
    return [y], {}


def _static(v: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(v)
    except jax.errors.TracerArrayConversionError:
        raise NotImplementedError(f"{what} must be a constant tensor") from None


@kernel("RESHAPE")
def _reshape(op: Operator, args: list, context: KernelContext):
    """The shape input when it is an int32 vector, else the ``new_shape`` option (reshape.cc
    GetOutputShape / ShapeIsVector); a ``new_shape`` of [0] is a scalar (legacy files)."""
    x = args[0]
    shape_input = args[1] if len(args) > 1 else None
    if shape_input is not None and np.ndim(shape_input) == 1 and shape_input.dtype == np.int32:
        shape = [int(d) for d in _static(shape_input, "RESHAPE shape")]
    else:
        shape = list(op.option("new_shape", ()))
        if shape == [0]:
            shape = []
    return [x.reshape(shape)], {}


@kernel("TRANSPOSE")
def _transpose(op: Operator, args: list, context: KernelContext):
    return [jnp.transpose(args[0], [int(p) for p in _static(args[1], "TRANSPOSE perm")])], {}


@kernel("REVERSE_V2")
def _reverse(op: Operator, args: list, context: KernelContext):
    axes = [int(a) for a in np.atleast_1d(_static(args[1], "REVERSE_V2 axis"))]
    return [jnp.flip(args[0], axis=axes)], {}


@kernel("STRIDED_SLICE")
def _strided_slice(op: Operator, args: list, context: KernelContext):
    x = args[0]
    begin, end, strides = (_static(a, "STRIDED_SLICE begin/end/strides").astype(int) for a in args[1:4])
    for mask in ("ellipsis_mask", "new_axis_mask"):
        if op.option(mask, 0):
            raise NotImplementedError(f"STRIDED_SLICE with {mask} is not supported")
    begin_mask, end_mask = op.option("begin_mask", 0), op.option("end_mask", 0)
    shrink = op.option("shrink_axis_mask", 0)
    index = []
    for axis in range(len(begin)):
        bit = 1 << axis
        if shrink & bit:
            index.append(int(begin[axis]))
            continue
        b = None if begin_mask & bit else int(begin[axis])
        e = None if end_mask & bit else int(end[axis])
        index.append(slice(b, e, int(strides[axis])))
    return [x[tuple(index)]], {}


@kernel("DEQUANTIZE")
def _dequantize(op: Operator, args: list, context: KernelContext):
    return [_dense(args[0]).astype(jnp.float32)], {}


@kernel("PACK")
def _pack(op: Operator, args: list, context: KernelContext):
    return [_array_module(*args).stack(args, axis=op.option("axis", 0))], {}


@kernel("UNPACK")
def _unpack(op: Operator, args: list, context: KernelContext):
    axis = op.option("axis", 0)
    size = args[0].shape[axis]
    if size != len(op.outputs):  # unpack.cc Prepare: the axis holds exactly `num` slices
        raise ValueError(f"UNPACK has {len(op.outputs)} outputs, but its input has {size} along axis {axis}")
    return [jnp.take(args[0], i, axis=axis) for i in range(size)], {}


@kernel("SHAPE")
def _shape(op: Operator, args: list, context: KernelContext):
    dtype = np.int64 if op.option("out_type", "INT32") == "INT64" else np.int32
    return [np.asarray(args[0].shape, dtype)], {}


@kernel("FILL")
def _fill(op: Operator, args: list, context: KernelContext):
    dims = tuple(int(d) for d in _static(args[0], "FILL dims"))
    value = args[1].values if isinstance(args[1], QuantizedTensor) else args[1]  # moved as is
    return [jnp.full(dims, value, dtype=jnp.asarray(value).dtype)], {}


@kernel("GATHER")
def _gather(op: Operator, args: list, context: KernelContext):
    if op.option("batch_dims", 0):
        raise NotImplementedError("GATHER with batch_dims != 0 is not supported")
    return [jnp.take(_dense(args[0]), args[1], axis=op.option("axis", 0))], {}


@kernel("SPLIT")
def _split(op: Operator, args: list, context: KernelContext):
    axis = int(_static(args[0], "SPLIT axis"))
    return list(jnp.split(args[1], op.option("num_splits", len(op.outputs)), axis=axis)), {}
