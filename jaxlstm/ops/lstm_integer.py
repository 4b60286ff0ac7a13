"""Fully integer LSTM and UNIDIRECTIONAL_SEQUENCE_LSTM, bit for bit, as jitted `lax.scan` loops.

Two runtimes run these operators with different integer kernels:

* ``"litert"``: LiteRT's 8x8_16 path (tflite/kernels/lstm_eval.cc EvalInteger8x8_16,
  lstm.cc PopulateQuantizedLstmParams8x8_16): int8 input and output state, int8 weights,
  int16 cell state; CIFG, peephole, projection (with or without bias), layer norm, clips;
  the LSTM op and both layouts of the sequence op.
* ``"tflite-micro"``: TensorFlow Lite Micro's kernel (micro/kernels/lstm_eval.h EvalLstm,
  lstm_eval_common.cc): int8 activations, or int16 activations with int64 biases (16x8);
  the sequence op without CIFG, peephole, projection or layer norm.

One LiteRT 8x8_16 step, per batch row (``M(v, s)``: multiply by a quantized multiplier;
``sat``: saturate to int16; gates are Q3.12 before and Q0.15 after their activation):

.. math::

    z_X &= \\mathrm{sat}(\\mathrm{sat}(M(W_{xX} x + b'_{xX})) + M(W_{hX} h + b'_{hX}))
           \\ [+\\, M(p_X \\odot c)]\\ [\\to \\mathrm{LN}_X]\\\\
    i, f, o &= \\sigma(z_i), \\sigma(z_f), \\sigma(z_o) \\ (\\text{CIFG: } i = 1 - f),
           \\quad g = \\tanh(z_g)\\\\
    c' &= \\mathrm{clip}(\\mathrm{sat}(f c \\gg 15 + i g \\gg (30 + \\log_2 s_c)))\\\\
    h' &= M(o \\tanh(c'))\\ \\text{or, with projection, } \\mathrm{clip}(M(W_{proj} M(o \\tanh(c')) + b'_{proj}))

where the zero points of x, h and the hidden o tanh(c) are folded into the biases b'.
TFLite Micro saturates each gate matmul separately, rescales the cell products with
multipliers, and reads sigmoid and tanh from a 256-entry table (see `_micro_step`).

Weights are `LSTMWeights` with integer values: `QuantizedTensor` matrices (int8), peephole
and layer-norm coefficients (int16) with their scales, and int32 biases (int64 for TFLite
Micro's int16 activations) as integer arrays or `QuantizedTensor`. The activations'
quantization is a static `LSTMQuantization`; `prepare` turns both into the kernel's
integer multipliers on the host, with the float precision of the kernels' Prepare.

Integer kernels are not differentiable: `jax.grad` refuses their integer inputs. They
compute 64-bit products under a local ``jax.enable_x64``; under a caller's `jax.jit` without
x64, JAX narrows int64 *arguments* (TFLite Micro's 16x8 biases) to int32: close over them
(or call without an outer jit, as `Model.__call__` does) or enable x64.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlstm.ops import _checks
from jaxlstm.ops import _fixed_point as fp
from jaxlstm.ops._fixed_point import Multiplier, quantize_multiplier
from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.lstm import GATES, LSTMOptions, LSTMState, LSTMWeights, check_weights

RUNTIMES = ("litert", "tflite-micro")
# The valid cell state scales of LiteRT's kernel: 2^-15 to 2^-9 (ApplyTanh handles 15 +
# log2(scale) integer bits for 0 to 6 only; lstm.cc checks <= -9).
LITERT_CELL_SCALES = (-15, -9)


class QuantParams(NamedTuple):
    """Per-tensor affine quantization: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int = 0


@dataclasses.dataclass(frozen=True)
class LSTMQuantization:
    """The quantization of an integer LSTM's activation tensors (static, hashable).

    Attributes:
      input: the input x (int8; int16 for TFLite Micro's 16x8).
      output_state: h; its zero point is h's value for real 0.
      cell_state: the int16 cell state's scale, a power of two (symmetric).
      output: the output tensor; LiteRT reads only its scale (for proj_clip).
      intermediates: LiteRT's five intermediate tensors, None for an unquantized
        placeholder: the four gates' matmul results (read only with layer norm), then the
        hidden o * tanh(c) (the projection's input; without projection, h itself). Empty
        for TFLite Micro, which ignores them.
    """

    input: QuantParams
    output_state: QuantParams
    cell_state: float
    output: QuantParams
    intermediates: tuple[QuantParams | None, ...] = ()


# ----------------------------------------------------------------------------- Prepare


@dataclasses.dataclass(frozen=True)
class _LiteRTGate:
    """One gate's multipliers in LiteRT's kernel."""

    input: Multiplier  # W_x x -> gate
    recurrent: Multiplier  # W_h h -> gate
    peephole: Multiplier | None  # p * c -> gate
    layer_norm: Multiplier | None  # the coefficients' scale
    variance_guard: int


@dataclasses.dataclass(frozen=True)
class LiteRTPlan:
    """The integer parameters of LiteRT's 8x8_16 kernel after Prepare (static)."""

    gates: tuple[tuple[str, _LiteRTGate], ...]
    input_zp: int
    output_state_zp: int
    cell_scale: int  # log2 of the cell state's scale
    cell_clip: int | None  # int16 bound, None: no clipping
    hidden: Multiplier  # o * tanh(c) (Q0.30) -> hidden
    hidden_zp: int
    projection: Multiplier | None  # W_proj hidden -> h
    proj_clip: int | None  # int8 bound, None: no clipping

    def gate(self, name: str) -> _LiteRTGate:
        return dict(self.gates)[name]


@dataclasses.dataclass(frozen=True)
class MicroPlan:
    """The integer parameters of TFLite Micro's kernel after Prepare (static)."""

    gates: tuple[tuple[str, tuple[Multiplier, Multiplier]], ...]  # (W_x x, W_h h) -> Q3.12
    input_zp: int
    output_state_zp: int
    cell_scale_power: int  # log2 of the cell state's scale
    cell_clip: int | None  # int16 bound, None: no clipping
    forget_times_cell: Multiplier  # f * c -> cell
    input_times_cell_gate: Multiplier  # i * g -> cell
    hidden: Multiplier  # o * tanh(c) -> h

    def gate(self, name: str) -> tuple[Multiplier, Multiplier]:
        return dict(self.gates)[name]


def prepare(
    weights: LSTMWeights,
    quantization: LSTMQuantization,
    options: LSTMOptions = LSTMOptions(),
    *,
    runtime: str = "litert",
    activations: str = "int8",
    sequence: bool = True,
) -> LiteRTPlan | MicroPlan:
    """Validates an integer LSTM and computes its kernel's integer parameters (host side).

    Args:
      weights: integer `LSTMWeights`; only their dtypes, shapes and (concrete) scales are read.
      quantization: the activations' quantization.
      options: the op's options; LiteRT ignores the activation function.
      runtime: ``"litert"`` or ``"tflite-micro"``.
      activations: the input's dtype name, ``"int8"`` or ``"int16"``.
      sequence: UNIDIRECTIONAL_SEQUENCE_LSTM (True) or the single-step LSTM op (False).

    Returns:
      A `LiteRTPlan` or `MicroPlan`.

    Raises:
      ValueError / TypeError: an invalid model (the runtime would fail or silently compute
        garbage), with the reason.
      NotImplementedError: a valid model the runtime has no kernel for.
    """
    op = "unidirectional_sequence_lstm_integer" if sequence else "lstm_integer"
    if runtime not in RUNTIMES:
        raise ValueError(f"{op}: runtime must be one of {RUNTIMES}, got {runtime!r}")
    if activations not in ("int8", "int16"):
        raise TypeError(f"{op}: integer LSTMs take int8 or int16 inputs, got {activations}")
    if any(getattr(weights, f"aux_input_to_{g}_weights") is not None for g in GATES):
        raise ValueError(f"{op}: aux_input_to_*_weights belong to the bidirectional op, which has no integer kernel")
    if any(len(getattr(weights, f"recurrent_to_{g}_weights").shape) == 1 for g in weights.gates):
        raise NotImplementedError(f"{op}: diagonal recurrent weights have no integer kernel")
    # The structural rules of the float op, on the weights' shapes (the activation is checked per runtime).
    check_weights(op, _shape_view(weights), options.replace(fused_activation_function="TANH"), weights.n_input)
    if runtime == "litert":
        return _prepare_litert(op, weights, quantization, options, activations, sequence)
    return _prepare_micro(op, weights, quantization, options, activations, sequence)


def _shape_view(weights: LSTMWeights) -> LSTMWeights:
    """The weights as float shapes, for the float op's structural checks."""
    return weights.replace(
        **{
            f.name: jax.ShapeDtypeStruct(tuple(v.shape), jnp.float32)
            for f in dataclasses.fields(weights)
            if (v := getattr(weights, f.name)) is not None
        }
    )


def _dtype(value) -> str:
    v = value.values if isinstance(value, QuantizedTensor) else value
    return jnp.dtype(v.dtype).name


def _check_types(op: str, weights: LSTMWeights, bias_dtype: str) -> None:
    """Weights int8 (peephole and layer norm int16) with one scale each; biases `bias_dtype`
    (the projection bias int32)."""
    for f in dataclasses.fields(weights):
        value = getattr(weights, f.name)
        if value is None:
            continue
        if f.name.endswith("bias"):
            expected = "int32" if f.name == "projection_bias" else bias_dtype
        else:
            expected = "int16" if f.name.startswith("cell_to") or f.name.endswith("coefficients") else "int8"
            if not isinstance(value, QuantizedTensor):
                raise TypeError(f"{op}: {f.name} must be a QuantizedTensor ({expected} values with a scale)")
            if np.size(value.scale) != 1:
                raise NotImplementedError(
                    f"{op}: {f.name} has per-channel scales; the integer LSTM kernels read one scale per tensor"
                )
        if _dtype(value) != expected:
            raise TypeError(f"{op}: {f.name} has dtype {_dtype(value)}, expected {expected}")


def _scale(op: str, weights: LSTMWeights, name: str) -> np.float32:
    """The float32 scale of weight `name` (1.0 when absent, as Prepare defaults it)."""
    value = getattr(weights, name)
    if value is None:
        return np.float32(1)
    try:
        return np.float32(np.asarray(value.scale).reshape(()))
    except jax.errors.TracerArrayConversionError as e:
        raise TypeError(
            f"{op}: the scale of {name} is traced; integer kernels derive their multipliers from "
            "concrete scales on the host (keep QuantizedTensor scales out of jit arguments)"
        ) from e


def _cell_scale_power(op: str, scale: float) -> int:
    power, is_power_of_two = fp.checked_log2(scale)
    if not is_power_of_two:
        raise ValueError(
            f"{op}: the cell state scale {scale} is not a power of two; the integer kernels "
            "need one (LiteRT silently outputs zeros, TFLite Micro mis-scales tanh)"
        )
    return power


def _check_quantization(op: str, name: str, q: QuantParams, dtype: str) -> None:
    low, high = fp.INT8 if dtype == "int8" else fp.INT16
    if not (np.isfinite(q.scale) and q.scale > 0):
        raise ValueError(f"{op}: {name} has an invalid scale {q.scale}")
    if not low <= q.zero_point <= high:
        raise ValueError(f"{op}: {name} has zero point {q.zero_point}, outside the {dtype} range [{low}, {high}]")


def _prepare_litert(
    op: str, w: LSTMWeights, q: LSTMQuantization, options: LSTMOptions, activations: str, sequence: bool
) -> LiteRTPlan:
    """lstm.cc PopulateQuantizedLstmParams8x8_16, with its float32/float64 arithmetic."""
    if activations != "int8":
        raise NotImplementedError(
            f"{op}: LiteRT has no LSTM kernel for {activations} activations (TFLite Micro runs "
            "int16 ones: runtime='tflite-micro')"
        )
    _check_types(op, w, "int32")
    for name in ("input", "output_state", "output"):
        _check_quantization(op, name, getattr(q, name), "int8")
    if len(q.intermediates) == 12 and not sequence:
        raise NotImplementedError(f"{op}: 12 intermediate tensors select LiteRT's experimental 8x8_8 kernel")
    if len(q.intermediates) != 5:
        raise ValueError(f"{op}: LiteRT's integer LSTM needs 5 intermediate tensors, got {len(q.intermediates)}")
    hidden = q.intermediates[4]
    if hidden is None:
        raise ValueError(f"{op}: intermediate 4 (the hidden o * tanh(c)) has no quantization; LiteRT requires it")
    _check_quantization(op, "intermediate 4", hidden, "int8")
    cell_scale = _cell_scale_power(op, q.cell_state)
    low, high = LITERT_CELL_SCALES
    if not low <= cell_scale <= high:
        raise ValueError(
            f"{op}: the cell state scale is 2^{cell_scale}; LiteRT's kernel needs 2^{low} to 2^{high} "
            "(outside it returns garbage)"
        )
    if w.use_peephole and w.n_output > w.n_cell:
        raise ValueError(
            f"{op}: peephole with n_output={w.n_output} > n_cell={w.n_cell}: LiteRT's kernel reads "
            "the peephole weights with n_output as their size, out of bounds"
        )
    layer_norm = w.use_layer_norm
    unquantized = [k for k in range(4) if q.intermediates[k] is None]
    if layer_norm and unquantized:
        raise ValueError(
            f"{op}: with layer norm LiteRT reads the scales of intermediates 0-3 (even the input "
            f"gate's under CIFG); {unquantized} have no quantization, and Prepare would stop there"
        )
    f32 = np.float32
    s_x, s_h = f32(q.input.scale), f32(q.output_state.scale)
    gates = []
    for index, g in enumerate(GATES):
        if g not in w.gates:
            continue
        if layer_norm:
            inter = f32(q.intermediates[index].scale)
        else:
            inter = f32(2.0**-12)  # ignored without layer norm: the gate is directly Q3.12
        peephole = None
        if w.use_peephole and g != "cell":
            # pow() is double: the product and quotient are double, stored to float.
            real = 2.0**cell_scale * float(_scale(op, w, f"cell_to_{g}_weights")) / float(inter)
            peephole = quantize_multiplier(float(f32(real)))
        ln_scale = _scale(op, w, f"{g}_layer_norm_coefficients")
        gates.append(
            (
                g,
                _LiteRTGate(
                    input=quantize_multiplier(float(_scale(op, w, f"input_to_{g}_weights") * s_x / inter)),
                    recurrent=quantize_multiplier(float(_scale(op, w, f"recurrent_to_{g}_weights") * s_h / inter)),
                    peephole=peephole,
                    layer_norm=quantize_multiplier(float(ln_scale)) if layer_norm else None,
                    variance_guard=int(np.clip(f32(10000) * ln_scale, 1, fp.INT32[1])),
                ),
            )
        )
    s_hidden = f32(hidden.scale)
    return LiteRTPlan(
        gates=tuple(gates),
        input_zp=int(q.input.zero_point),
        output_state_zp=int(q.output_state.zero_point),
        cell_scale=cell_scale,
        cell_clip=_litert_clip(options.cell_clip, q.cell_state, fp.INT16),  # the cell tensor's float scale
        hidden=quantize_multiplier(float(f32(2.0**-15 / float(s_hidden) * 2.0**-15))),
        hidden_zp=int(hidden.zero_point),
        projection=(
            quantize_multiplier(float(_scale(op, w, "projection_weights") * s_hidden / s_h))
            if w.use_projection
            else None
        ),
        proj_clip=_litert_clip(options.proj_clip, q.output.scale, fp.INT8),  # ignores the output's zero point
    )


def _litert_clip(clip: float, scale: float, bounds: tuple[int, int]) -> int | None:
    """The quantized clip bound: ``trunc(clamp(clip / scale))`` in float32; None (no
    clipping) unless positive, as the kernel clips only with a positive bound."""
    if not clip > 0:
        return None
    bound = int(np.clip(np.float32(clip) / np.float32(scale), *bounds))
    return bound if bound > 0 else None


def _prepare_micro(
    op: str, w: LSTMWeights, q: LSTMQuantization, options: LSTMOptions, activations: str, sequence: bool
) -> MicroPlan:
    """lstm_eval_common.cc UnidirectionalSequenceLstmPrepare (integer part)."""
    if not sequence:
        raise NotImplementedError(f"{op}: TFLite Micro has no kernel for the single-step LSTM op")
    unsupported = [
        name
        for name, used in (
            ("CIFG", w.use_cifg),
            ("peephole", w.use_peephole),
            ("projection", w.use_projection),
            ("layer norm", w.use_layer_norm),
        )
        if used
    ]
    if unsupported:
        raise NotImplementedError(f"{op}: TFLite Micro's LSTM kernel supports none of {unsupported}")
    if options.fused_activation_function != "TANH":
        raise ValueError(
            f"{op}: TFLite Micro computes the cell gate with the op's activation and supports "
            f"only TANH, got {options.fused_activation_function!r}"
        )
    _check_types(op, w, "int64" if activations == "int16" else "int32")
    for name in ("input", "output_state"):
        _check_quantization(op, name, getattr(q, name), activations)
        if activations == "int16" and getattr(q, name).zero_point != 0:
            raise ValueError(
                f"{op}: int16 activations are symmetric; {name} has zero point {getattr(q, name).zero_point}"
            )
    f32 = np.float32
    gate_scale = 2.0**-12  # the gates' matmul outputs are Q3.12

    def fc(weight: str, activation: QuantParams) -> Multiplier:
        # GetQuantizedConvolutionMultipler (kernel_util.cc): the scales' product in double,
        # not float. It matters for 16x8: the 16-bit reduced multiplier of the int64 rescale
        # turns a 1-ulp difference in the multiplier into a 1-LSB difference at its ties.
        return quantize_multiplier(float(f32(activation.scale)) * float(_scale(op, w, weight)) / gate_scale)

    gates = tuple(
        (g, (fc(f"input_to_{g}_weights", q.input), fc(f"recurrent_to_{g}_weights", q.output_state))) for g in GATES
    )
    s_c = float(f32(q.cell_state))
    cell_clip = None
    if options.cell_clip > 0:  # double arithmetic here; TFLite Micro clips even to 0
        cell_clip = int(np.clip(float(f32(options.cell_clip)) / s_c, *fp.INT16))
    return MicroPlan(
        gates=gates,
        input_zp=int(q.input.zero_point),
        output_state_zp=int(q.output_state.zero_point),
        cell_scale_power=_cell_scale_power(op, q.cell_state),
        cell_clip=cell_clip,
        forget_times_cell=quantize_multiplier(2.0**-15 * s_c / s_c),
        input_times_cell_gate=quantize_multiplier(2.0**-15 * 2.0**-15 / s_c),
        hidden=quantize_multiplier(2.0**-15 * 2.0**-15 / float(f32(q.output_state.scale))),
    )


# ----------------------------------------------------------------------------- the ops


def unidirectional_sequence_lstm_integer(
    x: jax.Array,
    weights: LSTMWeights,
    state: LSTMState,
    quantization: LSTMQuantization,
    options: LSTMOptions = LSTMOptions(),
    *,
    runtime: str = "litert",
) -> tuple[jax.Array, LSTMState]:
    """UNIDIRECTIONAL_SEQUENCE_LSTM with integer activations, as `runtime` computes it.

    x: [B, T, I] (time_major: [T, B, I]) -> (y: same layout with n_output features,
    LSTMState(h [B, n_output], c [B, n_cell])).

    Args:
      x: int8 [B, T, n_input] (int16 for TFLite Micro's 16x8), quantized by
        ``quantization.input``.
      weights: integer `LSTMWeights` (see the module docstring); their scales must be
        concrete (they are static to the kernel).
      state: h int8 (int16) [B, n_output], c int16 [B, n_cell]. A fresh interpreter starts
        from h = the output state's zero point and c = 0.
      quantization: the activations' quantization (`LSTMQuantization`).
      options: cell_clip, proj_clip and time_major are read; LiteRT ignores the activation.
      runtime: ``"litert"`` or ``"tflite-micro"``: whose kernel to reproduce bit for bit.

    Returns:
      (y, final state), integers of the input's type (c int16).

    Raises:
      ValueError / TypeError: invalid weights, quantization or shapes (see `prepare`).
      NotImplementedError: a configuration `runtime` has no kernel for.
    """
    op = "unidirectional_sequence_lstm_integer"
    _checks.check_rank(op, "x", x, (3,), "[B, T, n_input] or [T, B, n_input]")
    plan = prepare(weights, quantization, options, runtime=runtime, activations=jnp.dtype(x.dtype).name, sequence=True)
    batch = x.shape[1] if options.time_major else x.shape[0]
    _check_state(op, state, batch, weights, jnp.dtype(x.dtype).name)
    with jax.enable_x64(True):  # keeps int64 biases int64 through the jit boundary
        return _run(x, _values(weights), state, plan=plan, time_major=options.time_major)


def lstm_integer(
    x: jax.Array,
    weights: LSTMWeights,
    state: LSTMState,
    quantization: LSTMQuantization,
    options: LSTMOptions = LSTMOptions(),
    *,
    runtime: str = "litert",
) -> tuple[jax.Array, LSTMState]:
    """The LSTM op (one step) with integer activations: x [B, I] -> (h [B, n_output], state).

    Arguments as `unidirectional_sequence_lstm_integer` (without time_major). LiteRT runs
    it as one time-major step; TFLite Micro has no kernel for it.
    """
    op = "lstm_integer"
    _checks.check_rank(op, "x", x, (2,), "[B, n_input]")
    plan = prepare(weights, quantization, options, runtime=runtime, activations=jnp.dtype(x.dtype).name, sequence=False)
    _check_state(op, state, x.shape[0], weights, jnp.dtype(x.dtype).name)
    with jax.enable_x64(True):
        y, final = _run(x[None], _values(weights), state, plan=plan, time_major=True)
    return y[0], final


def _check_state(op: str, state: LSTMState, batch: int, w: LSTMWeights, activations: str) -> None:
    h, c = state
    _checks.check_shape(op, "output_state", h, (batch, w.n_output), f"(n_batch={batch}, n_output={w.n_output})")
    _checks.check_shape(op, "cell_state", c, (batch, w.n_cell), f"(n_batch={batch}, n_cell={w.n_cell})")
    if jnp.dtype(h.dtype).name != activations or jnp.dtype(c.dtype).name != "int16":
        raise TypeError(
            f"{op}: the state is ({h.dtype}, {c.dtype}); expected ({activations}, int16) for {activations} inputs"
        )


def _values(weights: LSTMWeights) -> LSTMWeights:
    """The integer values alone (the scales are in the plan)."""
    return weights.replace(
        **{
            f.name: v.values
            for f in dataclasses.fields(weights)
            if isinstance(v := getattr(weights, f.name), QuantizedTensor)
        }
    )


@functools.partial(jax.jit, static_argnames=("plan", "time_major"))
def _run(
    x: jax.Array, w: LSTMWeights, state: LSTMState, *, plan: LiteRTPlan | MicroPlan, time_major: bool
) -> tuple[jax.Array, LSTMState]:
    xs = x if time_major else jnp.swapaxes(x, 0, 1)  # [T, B, I]
    if isinstance(plan, LiteRTPlan):
        # LiteRT steps a batch-major sequence one row at a time: only the peephole (with its
        # n_output bug) sees the difference between a row and the whole batch.
        peephole_rows = xs.shape[1] if time_major else 1
        step = functools.partial(_litert_step, plan, _litert_tensors(plan, w), peephole_rows)
    else:
        step = functools.partial(_micro_step, plan, w)
    with jax.named_scope("jaxlstm.lstm_integer"):
        (h, c), ys = lax.scan(step, (state.output_state, state.cell_state), xs)
    return (ys if time_major else jnp.swapaxes(ys, 0, 1)), LSTMState(h, c)


# ----------------------------------------------------------------------------- LiteRT 8x8_16


class _LiteRTGateTensors(NamedTuple):
    input_weights: jax.Array  # int8 [n_cell, n_input]
    recurrent_weights: jax.Array  # int8 [n_cell, n_output]
    input_bias: jax.Array  # int32 [n_cell], zero point folded in
    recurrent_bias: jax.Array  # int32 [n_cell], zero point folded in
    peephole: jax.Array | None  # int16 [n_cell]
    layer_norm: jax.Array | None  # int16 [n_cell]
    layer_norm_bias: jax.Array | None  # int32 [n_cell], the gate bias


class _LiteRTTensors(NamedTuple):
    gates: dict[str, _LiteRTGateTensors]
    projection_weights: jax.Array | None  # int8 [n_output, n_cell]
    projection_bias: jax.Array | None  # int32 [n_output], hidden zero point folded in


def _row_sums(w: jax.Array) -> jax.Array:
    return jnp.sum(w.astype(jnp.int32), axis=1)


def _litert_tensors(plan: LiteRTPlan, w: LSTMWeights) -> _LiteRTTensors:
    """The weights with the zero points folded into the biases, as Prepare precomputes them
    (lstm.cc PopulatePrecomputedZPTimesWeightsWithBias; int32, wrapping):

    b'_x = bias - z_x * rowsum(W_x) (no bias with layer norm, which adds it itself),
    b'_h = -z_h * rowsum(W_h), b'_proj = proj_bias + z_hidden * rowsum(W_proj) (plus: the
    hidden is stored with -z_hidden, see `_litert_hidden`).
    """
    gates = {}
    for g, p in plan.gates:
        w_x, w_h = getattr(w, f"input_to_{g}_weights"), getattr(w, f"recurrent_to_{g}_weights")
        bias = jnp.asarray(getattr(w, f"{g}_gate_bias"), jnp.int32)
        layer_norm = p.layer_norm is not None
        gates[g] = _LiteRTGateTensors(
            input_weights=w_x,
            recurrent_weights=w_h,
            input_bias=(0 if layer_norm else bias) - plan.input_zp * _row_sums(w_x),
            recurrent_bias=-plan.output_state_zp * _row_sums(w_h),
            peephole=getattr(w, f"cell_to_{g}_weights") if p.peephole is not None else None,
            layer_norm=getattr(w, f"{g}_layer_norm_coefficients") if layer_norm else None,
            layer_norm_bias=bias if layer_norm else None,
        )
    projection_bias = None
    if plan.projection is not None:
        base = 0 if w.projection_bias is None else jnp.asarray(w.projection_bias, jnp.int32)
        projection_bias = base + plan.hidden_zp * _row_sums(w.projection_weights)
    return _LiteRTTensors(gates, w.projection_weights, projection_bias)


def _litert_step(
    plan: LiteRTPlan, t: _LiteRTTensors, peephole_rows: int, carry: tuple[jax.Array, jax.Array], x: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One LstmStepInteger8x8_16 (lstm_eval.cc): x int8 [B, I], h int8, c int16."""
    h, c = carry
    gate = functools.partial(_litert_gate, plan, t, peephole_rows, x, h)
    i = None if "input" not in t.gates else fp.apply_sigmoid(gate("input", c))
    f = fp.apply_sigmoid(gate("forget", c))
    g = fp.apply_tanh(3, gate("cell", c))
    c = _litert_cell(plan, c, i, f, g)
    o = fp.apply_sigmoid(gate("output", c))  # its peephole reads the new c
    h = _litert_hidden(plan, t, c, o)
    return (h, c), h


def _litert_gate(
    plan: LiteRTPlan, t: _LiteRTTensors, peephole_rows: int, x: jax.Array, h: jax.Array, name: str, c: jax.Array
) -> jax.Array:
    """z = sat(sat(M(W_x x + b'_x)) + M(W_h h + b'_h)) [+ peephole] [-> layer norm], int16
    (CalculateLstmGateInteger8x8_16): Q3.12, or the intermediate's scale before layer norm.

    The x part saturates before the h part is added: two accumulating matmul calls.
    """
    p, tg = plan.gate(name), t.gates[name]
    z = jnp.zeros((x.shape[0], tg.input_weights.shape[0]), jnp.int16)
    z = fp.matrix_batch_vector_multiply_accumulate(x, tg.input_weights, tg.input_bias, p.input, 0, z)
    z = fp.matrix_batch_vector_multiply_accumulate(h, tg.recurrent_weights, tg.recurrent_bias, p.recurrent, 0, z)
    if tg.peephole is not None:
        z = _litert_peephole(z, c, tg.peephole, p.peephole, h.shape[1], peephole_rows)
    if tg.layer_norm is not None:
        z = fp.apply_layer_norm(z, tg.layer_norm, tg.layer_norm_bias, p.layer_norm, p.variance_guard)
    return z


def _litert_peephole(
    z: jax.Array, c: jax.Array, weights: jax.Array, scale: Multiplier, n_output: int, rows: int
) -> jax.Array:
    """z += M(p * c), but as LiteRT computes it: the kernel passes n_output, not n_cell, as
    the peephole's length (lstm_eval.cc CalculateLstmGateInteger8x8_16). Within each block
    of `rows` rows (the whole batch; one row for a batch-major sequence), only the first
    rows * n_output flat elements get a term, from weight k mod n_output and flat cell k.
    With n_output == n_cell this is the plain peephole."""
    batch, n_cell = z.shape
    shape = (batch // rows, rows * n_cell)

    def block(z_block: jax.Array, c_block: jax.Array) -> jax.Array:
        return fp.vector_batch_vector_cwise_product_accumulate(weights[:n_output], c_block, rows, scale, z_block)

    return jax.vmap(block)(z.reshape(shape), c.reshape(shape)).reshape(batch, n_cell)


def _litert_cell(plan: LiteRTPlan, c: jax.Array, i: jax.Array | None, f: jax.Array, g: jax.Array) -> jax.Array:
    """c' = clip(sat((f c) >> 15 + (i g) >> (30 + log2 s_c))), i = 1 - f under CIFG
    (UpdateLstmCellInteger). The rounding shifts wrap to int16 without saturating."""
    c = fp.cwise_mul(f, c, 15)
    i = fp.sub1_vector(f) if i is None else i
    c = fp.saturating_add(c, fp.cwise_mul(i, g, 30 + plan.cell_scale))
    return c if plan.cell_clip is None else fp.cwise_clipping(c, plan.cell_clip)


def _litert_hidden(plan: LiteRTPlan, t: _LiteRTTensors, c: jax.Array, o: jax.Array) -> jax.Array:
    """h' (CalculateLstmOutputInteger8x8_16), int8:

    * no projection: ``sat8(M(o * tanh(c)) + z_hidden)``, quantized as intermediate 4 (which
      a consistent model gives output_state's quantization);
    * projection: ``hid = sat8(M(o * tanh(c)) - z_hidden)`` (the minus is upstream's,
      b/246629213, matched by +z_hidden in b'_proj), then
      ``clip(sat8(M(W_proj hid + b'_proj) + z_h))``.
    """
    tanh_c = fp.apply_tanh(15 + plan.cell_scale, c)  # c read as Q(15 + log2 s_c)
    if plan.projection is None:
        return fp.cwise_mul_quantized(o, tanh_c, plan.hidden, plan.hidden_zp)
    hidden = fp.cwise_mul_quantized(o, tanh_c, plan.hidden, -plan.hidden_zp)
    h = jnp.zeros((c.shape[0], t.projection_weights.shape[0]), jnp.int8)
    h = fp.matrix_batch_vector_multiply_accumulate(
        hidden, t.projection_weights, t.projection_bias, plan.projection, plan.output_state_zp, h
    )
    return h if plan.proj_clip is None else fp.cwise_clipping(h, plan.proj_clip)


# ----------------------------------------------------------------------------- TFLite Micro


def _micro_step(
    plan: MicroPlan, w: LSTMWeights, carry: tuple[jax.Array, jax.Array], x: jax.Array
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """One TFLite Micro LstmStep (lstm_eval.h): x int8/int16 [B, I], h like x, c int16.

    z_X = sat(FC(x) + FC(h)), each FC saturated to int16 (Q3.12); f, i, o from the
    table sigmoid, g from the table tanh; c' = clip(sat(sat(M(f c)) + sat(M(i g))));
    h' = sat(M(tanh(c') o) + z_h).
    """
    h, c = carry

    def gate(name: str) -> jax.Array:
        to_gate, recurrent_to_gate = plan.gate(name)
        z_x = fp.fully_connected(
            x, getattr(w, f"input_to_{name}_weights"), getattr(w, f"{name}_gate_bias"), plan.input_zp, to_gate
        )
        z_h = fp.fully_connected(
            h, getattr(w, f"recurrent_to_{name}_weights"), None, plan.output_state_zp, recurrent_to_gate
        )
        return fp.saturating_add(z_x, z_h)

    f = fp.tflm_logistic(gate("forget"))
    i = fp.tflm_logistic(gate("input"))
    g = fp.tflm_tanh(gate("cell"), -12)
    c = fp.saturating_add(
        fp.mul_elementwise(f, c, plan.forget_times_cell, 0, jnp.int16),
        fp.mul_elementwise(i, g, plan.input_times_cell_gate, 0, jnp.int16),
    )
    if plan.cell_clip is not None:
        c = fp.cwise_clipping(c, plan.cell_clip)
    o = fp.tflm_logistic(gate("output"))
    h = fp.mul_elementwise(fp.tflm_tanh(c, plan.cell_scale_power), o, plan.hidden, plan.output_state_zp, h.dtype)
    return (h, c), h
