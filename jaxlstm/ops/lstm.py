"""TFLite's LSTM family: LSTM (FULL and BASIC kernels), UNIDIRECTIONAL_SEQUENCE_LSTM and
BIDIRECTIONAL_SEQUENCE_LSTM, float and hybrid (int8 weights).

One step (tflite/kernels/lstm_eval.cc, LstmStepFloat), per batch row, for each gate
X in (i, f, c, o):

.. math::

    z_X &= W_{xX} x + W_{aX} a + W_{hX} h \\quad(\\text{the matmul half; aux input } a \\text{ optional})\\\\
    \\hat z_X &= z_X + p_X \\odot c + b_X
        \\quad(\\text{layer norm: } \\mathrm{LN}(z_X + p_X \\odot c) \\odot \\gamma_X + b_X)\\\\
    i &= \\sigma(\\hat z_i)\\ (\\text{CIFG: } 1 - f),\\quad f = \\sigma(\\hat z_f),\\quad g = \\mathrm{act}(\\hat z_c)\\\\
    c' &= \\mathrm{clip}(f \\odot c + i \\odot g, \\text{cell\\_clip})\\\\
    o &= \\sigma(\\hat z_o)\\ (\\text{its peephole reads } c'),\\quad m = o \\odot \\mathrm{act}(c')\\\\
    h' &= \\mathrm{clip}(W_{proj} m + b_{proj}, \\text{proj\\_clip})\\ (\\text{or } m \\text{ without a projection})

with peephole vectors p for the input, forget and output gates only. Gate order everywhere is
`GATES` = (input, forget, cell, output).

This module is the spec. `lstm_cell` is one plain step: the matmul half, one matmul per gate
in TFLite's layout, then the kernel's three functions `lstm_gate`, `update_cell` and
`lstm_output` (lstm_eval.cc CalculateLstmGateFloat, UpdateLstmCellFloat,
CalculateLstmOutputFloat, whose projection is `lstm_projection`). The sequence ops validate
their arguments and run the same functions in the loops of `jaxlstm.ops._lstm_engine`, which
lays out the matmul half for speed. A weight given as a `QuantizedTensor` switches to TFLite's
hybrid path (see `_quant`). The NumPy loop the ops are checked against is
`jaxlstm.reference.np_lstm`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.ops import _checks, _lstm_engine
from jaxlstm.ops._activations import activation, clip
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._quant import QuantizedTensor, hybrid_matmul

GATES = ("input", "forget", "cell", "output")
# The fused activations the float kernel computes right: with NONE it leaves the activation
# buffer unwritten and outputs h = o * g (lstm_eval.cc CalculateLstmOutputFloat).
LSTM_ACTIVATIONS = ("RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LSTMWeights:
    """The constant tensors of one LSTM direction, named as TFLite names them.

    Shapes: ``input_to_*`` [n_cell, n_input]; ``recurrent_to_*`` [n_cell, n_output] (or
    [n_cell] for a diagonal recurrence); ``cell_to_*``, ``*_gate_bias`` and
    ``*_layer_norm_coefficients`` [n_cell]; ``projection_weights`` [n_output, n_cell];
    ``projection_bias`` [n_output]; ``aux_input_to_*`` [n_cell, n_aux] (bidirectional op only).
    ``None`` marks an absent optional tensor: no input-gate tensors = CIFG; ``cell_to_*`` =
    peephole; ``projection_weights`` = projection; ``*_layer_norm_coefficients`` = layer norm.
    Matrices may be `QuantizedTensor`s (hybrid path); biases and layer-norm stay float.
    `jaxlstm.convert.lstm_weights_from_fused` splits a framework's packed gate matrices.
    """

    input_to_forget_weights: jax.Array
    input_to_cell_weights: jax.Array
    input_to_output_weights: jax.Array
    recurrent_to_forget_weights: jax.Array
    recurrent_to_cell_weights: jax.Array
    recurrent_to_output_weights: jax.Array
    forget_gate_bias: jax.Array
    cell_gate_bias: jax.Array
    output_gate_bias: jax.Array
    input_to_input_weights: jax.Array | None = None
    recurrent_to_input_weights: jax.Array | None = None
    input_gate_bias: jax.Array | None = None
    cell_to_input_weights: jax.Array | None = None
    cell_to_forget_weights: jax.Array | None = None
    cell_to_output_weights: jax.Array | None = None
    projection_weights: jax.Array | None = None
    projection_bias: jax.Array | None = None
    input_layer_norm_coefficients: jax.Array | None = None
    forget_layer_norm_coefficients: jax.Array | None = None
    cell_layer_norm_coefficients: jax.Array | None = None
    output_layer_norm_coefficients: jax.Array | None = None
    aux_input_to_input_weights: jax.Array | None = None
    aux_input_to_forget_weights: jax.Array | None = None
    aux_input_to_cell_weights: jax.Array | None = None
    aux_input_to_output_weights: jax.Array | None = None

    replace = dataclasses.replace

    @property
    def use_cifg(self) -> bool:
        return self.input_to_input_weights is None

    @property
    def use_peephole(self) -> bool:
        return self.cell_to_forget_weights is not None

    @property
    def use_projection(self) -> bool:
        return self.projection_weights is not None

    @property
    def use_layer_norm(self) -> bool:
        return self.forget_layer_norm_coefficients is not None

    @property
    def use_aux_weights(self) -> bool:
        return self.aux_input_to_forget_weights is not None

    @property
    def is_hybrid(self) -> bool:
        return isinstance(self.input_to_forget_weights, QuantizedTensor)

    @property
    def n_cell(self) -> int:
        return int(self.input_to_output_weights.shape[0])

    @property
    def n_input(self) -> int:
        return int(self.input_to_output_weights.shape[1])

    @property
    def n_output(self) -> int:
        r = self.recurrent_to_output_weights
        return int(r.shape[0] if len(r.shape) == 1 else r.shape[1])

    @property
    def gates(self) -> tuple[str, ...]:
        """The gates this cell computes: all four, or (forget, cell, output) under CIFG."""
        return GATES[1:] if self.use_cifg else GATES


@dataclasses.dataclass(frozen=True)
class LSTMOptions:
    """Static options of the LSTM ops (schema `UnidirectionalSequenceLSTMOptions` names).

    Attributes:
      fused_activation_function: the cell and output activation, a schema name ("TANH").
      cell_clip: clip the cell state to [-cell_clip, cell_clip]; 0 means no clipping.
      proj_clip: clip the projection output likewise; 0 means no clipping.
      time_major: input is [T, B, I] instead of [B, T, I] (sequence ops only).
      asymmetric_quantize_inputs: hybrid path only: quantize activations asymmetrically.
    """

    fused_activation_function: str = "TANH"
    cell_clip: float = 0.0
    proj_clip: float = 0.0
    time_major: bool = False
    asymmetric_quantize_inputs: bool = False

    replace = dataclasses.replace


class LSTMState(NamedTuple):
    """The variable tensors of one LSTM direction: h [B, n_output] and c [B, n_cell]."""

    output_state: jax.Array
    cell_state: jax.Array


def zero_state(weights: LSTMWeights, batch: int, dtype=jnp.float32) -> LSTMState:
    """An all-zero `LSTMState` for `batch` rows, like a freshly allocated interpreter."""
    return LSTMState(jnp.zeros((batch, weights.n_output), dtype), jnp.zeros((batch, weights.n_cell), dtype))


# ----------------------------------------------------------------------------- validation


# Every LSTM has these (lstm.cc CheckInputTensorDimensions); the rest are optional features.
_REQUIRED_WEIGHTS = (
    *(f"input_to_{g}_weights" for g in GATES[1:]),
    *(f"recurrent_to_{g}_weights" for g in GATES[1:]),
    *(f"{g}_gate_bias" for g in GATES[1:]),
)


def check_weights(op: str, w: LSTMWeights, options: LSTMOptions, n_input: int) -> None:
    """Validates `w` against TFLite's Prepare rules (lstm.cc CheckInputTensorDimensions)."""
    _checks.check_activation(op, options.fused_activation_function, LSTM_ACTIVATIONS)
    _checks.check_clip(op, "cell_clip", options.cell_clip)
    _checks.check_clip(op, "proj_clip", options.proj_clip)
    missing = [name for name in _REQUIRED_WEIGHTS if getattr(w, name) is None]
    _checks.require(
        op,
        not missing,
        f"required weights {missing} are None; every LSTM needs the forget, cell "
        "and output gates' input_to_*, recurrent_to_* weights and *_gate_bias",
    )
    n_cell = w.n_cell
    if n_cell == 0:
        raise ValueError(f"{op}: input_to_output_weights has n_cell=0 rows; n_cell must be > 0")
    n_output = w.n_output
    cifg = w.use_cifg
    _checks.require(
        op,
        (w.input_to_input_weights is None) == (w.recurrent_to_input_weights is None),
        "input_to_input_weights and recurrent_to_input_weights must both be given (full LSTM) or both be None (CIFG)",
    )
    _checks.require(
        op,
        (w.input_gate_bias is None) == cifg,
        "input_gate_bias must be None under CIFG (no input_to_input_weights) and given otherwise",
    )
    peep = (w.cell_to_forget_weights, w.cell_to_output_weights)
    _checks.require(
        op,
        (peep[0] is None) == (peep[1] is None)
        and (w.cell_to_input_weights is None or peep[0] is not None)
        and (cifg or (w.cell_to_input_weights is None) == (peep[0] is None)),
        "peephole weights must be given for every gate (cell_to_input_weights may be omitted under CIFG) or for none",
    )
    _checks.require(
        op,
        w.projection_bias is None or w.projection_weights is not None,
        "projection_bias is given without projection_weights",
    )
    ln = (
        w.forget_layer_norm_coefficients,
        w.cell_layer_norm_coefficients,
        w.output_layer_norm_coefficients,
    )
    if any(v is not None for v in ln) or w.input_layer_norm_coefficients is not None:
        _checks.require(
            op,
            all(v is not None for v in ln) and (w.input_layer_norm_coefficients is None) == cifg,
            "layer norm needs forget, cell and output layer_norm_coefficients, and "
            "input_layer_norm_coefficients exactly when the input gate exists (no CIFG)",
        )
    if not w.use_projection:
        _checks.require(
            op,
            n_output == n_cell,
            f"without projection_weights, n_output (recurrent_to_output_weights dim, {n_output}) "
            f"must equal n_cell ({n_cell})",
        )
    aux = [getattr(w, f"aux_input_to_{g}_weights") for g in GATES]
    if any(a is not None for a in aux[1:]):
        _checks.require(
            op,
            all(a is not None for a in aux[1:]) and (aux[0] is None) == cifg,
            "aux_input_to_*_weights must be given for every computed gate or for none",
        )

    cell, inp, out = f"n_cell={n_cell}", f"n_input={n_input}", f"n_output={n_output}"
    for gate in GATES:
        x = getattr(w, f"input_to_{gate}_weights")
        if x is not None:
            _checks.check_shape(op, f"input_to_{gate}_weights", x, (n_cell, n_input), f"({cell}, {inp})")
        r = getattr(w, f"recurrent_to_{gate}_weights")
        if r is not None:
            if len(r.shape) == 1:
                _checks.check_shape(op, f"recurrent_to_{gate}_weights", r, (n_cell,), f"({cell},) (diagonal)")
                _checks.require(op, n_output == n_cell, "diagonal recurrent weights need n_output == n_cell")
            else:
                _checks.check_shape(op, f"recurrent_to_{gate}_weights", r, (n_cell, n_output), f"({cell}, {out})")
        for name in (f"{gate}_gate_bias", f"{gate}_layer_norm_coefficients"):
            v = getattr(w, name)
            if v is not None:
                _checks.check_shape(op, name, v, (n_cell,), f"({cell},)")
                _checks.check_float(op, name, v)
        if gate != "cell":
            p = getattr(w, f"cell_to_{gate}_weights")
            if p is not None:
                _checks.check_shape(op, f"cell_to_{gate}_weights", p, (n_cell,), f"({cell},)")
    if w.use_projection:
        _checks.check_shape(op, "projection_weights", w.projection_weights, (n_output, n_cell), f"({out}, {cell})")
    if w.projection_bias is not None:
        _checks.check_shape(op, "projection_bias", w.projection_bias, (n_output,), f"({out},)")
    hybrid = w.is_hybrid
    for field in dataclasses.fields(w):
        v = getattr(w, field.name)
        if v is None or field.name.endswith(("bias", "coefficients")):
            continue
        if not isinstance(v, QuantizedTensor):
            _checks.check_float(op, field.name, v)
        if isinstance(v, QuantizedTensor) != hybrid and not (field.name.startswith("recurrent") and len(v.shape) == 1):
            raise TypeError(
                f"{op}: {field.name} is {'int8' if isinstance(v, QuantizedTensor) else 'float'} "
                f"but input_to_forget_weights is {'int8' if hybrid else 'float'}; all weight "
                "matrices must share one type"
            )


def _check_state(op: str, prefix: str, state: LSTMState, batch: int, w: LSTMWeights) -> None:
    _checks.check_shape(
        op,
        f"{prefix}output_state",
        state.output_state,
        (batch, w.n_output),
        f"(n_batch={batch}, n_output={w.n_output})",
    )
    _checks.check_shape(
        op,
        f"{prefix}cell_state",
        state.cell_state,
        (batch, w.n_cell),
        f"(n_batch={batch}, n_cell={w.n_cell})",
    )


def _check_matmul_dtype(op: str, matmul_dtype, weights: tuple[LSTMWeights, ...]) -> None:
    if matmul_dtype is None:
        return
    _checks.require(
        op,
        jnp.issubdtype(matmul_dtype, jnp.floating),
        f"matmul_dtype={matmul_dtype!r} is not a float dtype (e.g. jnp.bfloat16)",
    )
    _checks.require(
        op,
        not any(w.is_hybrid for w in weights),
        "matmul_dtype applies to float weights; hybrid (int8) weights use integer matmuls",
    )


def _check_aux_weights(op: str, prefix: str, w: LSTMWeights, aux_input: jax.Array) -> None:
    n_aux = aux_input.shape[-1]
    for g in w.gates:
        a = getattr(w, f"aux_input_to_{g}_weights")
        _checks.check_shape(
            op, f"{prefix}aux_input_to_{g}_weights", a, (w.n_cell, n_aux), f"(n_cell={w.n_cell}, n_aux={n_aux})"
        )


# ----------------------------------------------------------------------------- the step


class GateVectors(NamedTuple):
    """The vectors of one gate, [n_cell] each: ``*_gate_bias``, the peephole
    ``cell_to_*_weights`` and ``*_layer_norm_coefficients`` (None when absent)."""

    bias: jax.Array
    peephole: jax.Array | None = None
    layer_norm: jax.Array | None = None


class _StepVectors(NamedTuple):
    """What a step reads besides its matrices, cast to the input's dtype: per gate, by gate
    name, ``bias`` (``*_gate_bias``), ``layer_norm`` (``*_layer_norm_coefficients``; empty
    without layer norm) and ``peephole`` (``cell_to_*_weights`` of the input, forget and
    output gates; empty without peephole), all [n_cell]; ``projection_bias`` [n_output] or None."""

    bias: dict[str, jax.Array]
    layer_norm: dict[str, jax.Array]
    peephole: dict[str, jax.Array]
    projection_bias: jax.Array | None = None

    @classmethod
    def of(cls, w: LSTMWeights, dtype) -> _StepVectors:
        def vectors(name: str, gates: tuple[str, ...]) -> dict[str, jax.Array]:
            present = {g: getattr(w, name.format(g)) for g in gates}
            return {g: _float_vector(v).astype(dtype) for g, v in present.items() if v is not None}

        gates = w.gates
        return cls(
            vectors("{}_gate_bias", gates),
            vectors("{}_layer_norm_coefficients", gates),
            vectors("cell_to_{}_weights", tuple(g for g in gates if g != "cell")),  # no cell_to_cell_weights
            None if w.projection_bias is None else w.projection_bias.astype(dtype),
        )

    def gate(self, name: str) -> GateVectors:
        """The vectors of the gate called `name`."""
        return GateVectors(self.bias[name], self.peephole.get(name), self.layer_norm.get(name))


class _StepMatrices(NamedTuple):
    """The weight matrices of one step in TFLite's layout, one per gate in `gates` order;
    int8 `QuantizedTensor`s on the hybrid path, except a diagonal recurrence, which TFLite
    reads as float (it is dequantized here, to `dtype`)."""

    inputs: tuple[tuple[jax.Array, ...], ...]  # per input (x, then aux): ``*_to_{gate}_weights`` [n_cell, k]
    recurrent: tuple[jax.Array, ...]  # [n_cell, n_output], or the diagonal [n_cell]
    projection: jax.Array | None  # [n_output, n_cell]

    @classmethod
    def of(cls, w: LSTMWeights, dtype, aux: bool = False) -> _StepMatrices:
        def per_gate(name: str) -> tuple:
            return tuple(getattr(w, name.format(g)) for g in w.gates)

        inputs = (per_gate("input_to_{}_weights"),) + ((per_gate("aux_input_to_{}_weights"),) if aux else ())
        recurrent = per_gate("recurrent_to_{}_weights")
        if len(recurrent[0].shape) == 1:  # diagonal ("IndyLSTM")
            recurrent = tuple(_float_vector(r).astype(dtype) for r in recurrent)
        return cls(inputs, recurrent, w.projection_weights)


def _float_vector(v):
    return v.dequantize() if isinstance(v, QuantizedTensor) else v


def _layer_norm(z: jax.Array, axis: int = -1) -> jax.Array:
    """MeanStddevNormalization over `axis`: population variance, epsilon 1e-8 inside the sqrt."""
    mean = jnp.mean(z, axis=axis, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=axis, keepdims=True)
    return (z - mean) * (1.0 / jnp.sqrt(var + 1e-8))


def lstm_gate(z: jax.Array, c: jax.Array, v: GateVectors, activation_name: str, axis: int = -1) -> jax.Array:
    r"""One gate from its matmul terms (lstm_eval.cc CalculateLstmGateFloat).

    .. math::

        \mathrm{gate} = \mathrm{act}(z + p \odot c + b)
        \quad\text{or, with layer norm,}\quad
        \mathrm{act}(\mathrm{LN}(z + p \odot c) \odot \gamma + b)

    where :math:`z = W_x x + W_a a + W_h h` are the gate's matmuls (the caller's). The
    peephole p reads the old cell state for the input and forget gates, the new one for the
    output gate; the cell gate has none.

    Args:
      z: [B, n_cell] (or [n_cell, B] when `axis` is 0), the gate's matmul terms.
      c: the cell state the peephole reads, shaped like `z`.
      v: the gate's `GateVectors` ([n_cell], or [n_cell, 1] when `axis` is 0).
      activation_name: "SIGMOID" for the input, forget and output gates; the op's
        activation for the cell gate.
      axis: the units axis of `z`, which layer norm normalizes.

    Returns:
      The gate's activation, shaped like `z`.
    """
    if v.peephole is not None:
        z = z + v.peephole * c
    if v.layer_norm is not None:
        z = _layer_norm(z, axis) * v.layer_norm + v.bias
    else:
        z = z + v.bias
    return activation(activation_name)(z)


def update_cell(c: jax.Array, f: jax.Array, g: jax.Array, i: jax.Array | None, cell_clip: float) -> jax.Array:
    r"""The new cell state (lstm_eval.cc UpdateLstmCellFloat).

    .. math::

        c' = \mathrm{clip}(f \odot c + i \odot g, \text{cell\_clip}),
        \quad i = 1 - f \text{ under CIFG (i is None)}

    Args:
      c: the cell state [B, n_cell] (any layout; all arguments alike).
      f, g, i: the forget gate, the cell gate (candidate) and the input gate or None.
      cell_clip: clip to [-cell_clip, cell_clip]; 0 means no clipping.
    """
    if i is None:
        i = 1.0 - f
    return clip(f * c + g * i, cell_clip)


def lstm_output(o: jax.Array, c: jax.Array, activation_name: str) -> jax.Array:
    r"""The output state before any projection (lstm_eval.cc CalculateLstmOutputFloat).

    .. math::

        m = o \odot \mathrm{act}(c')

    It is the output state h' itself without a projection; with one, h' is
    `lstm_projection` of :math:`W_{proj} m`.
    """
    return o * activation(activation_name)(c)


def lstm_projection(p: jax.Array, projection_bias: jax.Array | None, proj_clip: float) -> jax.Array:
    r"""The output state with a projection (lstm_eval.cc CalculateLstmOutputFloat).

    .. math::

        h' = \mathrm{clip}(p + b_{proj}, \text{proj\_clip}), \quad p = W_{proj} m

    where p is the caller's matmul; no bias when `projection_bias` is None.
    """
    if projection_bias is not None:
        p = projection_bias + p
    return clip(p, proj_clip)


@dataclasses.dataclass(frozen=True)
class _Cell:
    """The static structure of one direction's step and its elementwise halves, split at the
    projection matmul: what `lstm_cell` runs and every loop layout of `_lstm_engine` calls."""

    gates: tuple[str, ...]
    activation: str
    cell_clip: float
    proj_clip: float
    layer_norm: bool
    projection: bool
    asymmetric_quantize_inputs: bool

    @classmethod
    def of(cls, w: LSTMWeights, options: LSTMOptions) -> _Cell:
        return cls(
            w.gates,
            options.fused_activation_function,
            options.cell_clip,
            options.proj_clip,
            w.use_layer_norm,
            w.use_projection,
            options.asymmetric_quantize_inputs,
        )

    def gates_and_cell(
        self, z: tuple[jax.Array, ...], c: jax.Array, v: _StepVectors, axis: int = -1
    ) -> tuple[jax.Array, jax.Array]:
        """(m, c') from the gates' matmul terms z (one array per gate, in `gates` order) and c."""
        z = dict(zip(self.gates, z))
        f = lstm_gate(z["forget"], c, v.gate("forget"), "SIGMOID", axis)
        g = lstm_gate(z["cell"], c, v.gate("cell"), self.activation, axis)
        i = lstm_gate(z["input"], c, v.gate("input"), "SIGMOID", axis) if "input" in z else None
        c_new = update_cell(c, f, g, i, self.cell_clip)
        o = lstm_gate(z["output"], c_new, v.gate("output"), "SIGMOID", axis)
        return lstm_output(o, c_new, self.activation), c_new

    def output_state(self, p: jax.Array, v: _StepVectors) -> jax.Array:
        """h' from the projection matmul p = W_proj m (used with a projection only)."""
        return lstm_projection(p, v.projection_bias, self.proj_clip)


def _matmul(a: jax.Array, w, asymmetric: bool, matmul_dtype=None) -> jax.Array:
    """``a [B, k] @ w.T`` for w [m, k] in TFLite's layout, i.e. W a per row; a diagonal w [m]
    multiplies elementwise; a `QuantizedTensor` takes the hybrid matmul; with `matmul_dtype`
    the operands are cast to it and the products summed in a's dtype."""
    if isinstance(w, QuantizedTensor):
        scales = jnp.broadcast_to(jnp.asarray(w.scale, jnp.float32), w.shape[:1])
        return hybrid_matmul(a, w.values, scales, asymmetric)
    if w.ndim == 1:
        return w.astype(a.dtype) * a
    dtype = a.dtype if matmul_dtype is None else matmul_dtype
    return jax.lax.dot_general(
        a.astype(dtype),
        w.astype(dtype),
        (((1,), (1,)), ((), ())),
        precision=FLOAT32,
        preferred_element_type=a.dtype,
    )


def lstm_cell(
    state: LSTMState,
    x_t: jax.Array,
    weights: LSTMWeights,
    *,
    options: LSTMOptions = LSTMOptions(),
    aux_input: jax.Array | None = None,
    matmul_dtype=None,
) -> tuple[LSTMState, jax.Array]:
    """One LSTM step, the plain way: one matmul per gate and weight, in TFLite's layout.

    ``(LSTMState(h: [B, n_output], c: [B, n_cell]), x_t: [B, n_input]) -> (LSTMState(h', c'),
    h')``, the carry and output of a `lax.scan` step: ``lax.scan(functools.partial(lstm_cell,
    weights=w, options=o), state, x)`` runs a time-major sequence. The math is in this
    module's docstring; the sequence ops compute the same steps with their matmuls laid out
    for speed.

    Args:
      state: `LSTMState` (h [B, n_output], c [B, n_cell]).
      x_t: float [B, n_input].
      weights: `LSTMWeights`; int8 `QuantizedTensor` matrices take TFLite's hybrid matmul.
      options: static `LSTMOptions` (``time_major`` does not apply).
      aux_input: [B, n_aux] read through the ``aux_input_to_*`` weights (which it needs).
      matmul_dtype: as in `unidirectional_sequence_lstm`.

    Returns:
      (the new `LSTMState`, h' [B, n_output]).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlstm.convert import lstm_weights_from_fused
      >>> w = lstm_weights_from_fused(jnp.ones((3, 8)) * .1, jnp.ones((2, 8)) * .1, jnp.zeros(8))
      >>> state, h = lstm_cell(zero_state(w, 1), jnp.ones((1, 3)), w)
      >>> h.shape, state.cell_state.shape
      ((1, 2), (1, 2))

    References:
      tflite/kernels/lstm_eval.cc (LstmStepFloat, LstmStepHybrid).
    """
    op = "lstm_cell"
    _checks.check_input(
        op, x_t, (2,), "[n_batch, n_input]", {"input_to_forget_weights": weights.input_to_forget_weights}
    )
    check_weights(op, weights, options, x_t.shape[-1])
    _checks.require(
        op,
        weights.use_aux_weights == (aux_input is not None),
        "aux_input and the aux_input_to_*_weights go together: give both or neither",
    )
    if aux_input is not None:
        _check_aux_weights(op, "", weights, aux_input)
    _check_matmul_dtype(op, matmul_dtype, (weights,))
    _check_state(op, "", state, x_t.shape[0], weights)
    cell = _Cell.of(weights, options)
    vectors = _StepVectors.of(weights, x_t.dtype)
    matrices = _StepMatrices.of(weights, x_t.dtype, aux=aux_input is not None)
    h, c = state

    def times(a, w):
        return _matmul(a, w, options.asymmetric_quantize_inputs, matmul_dtype)

    inputs = (x_t,) if aux_input is None else (x_t, aux_input)

    def gate_terms(k: int) -> jax.Array:  # W_x x (+ W_a a) + W_h h of the k-th gate
        products = [times(a, w[k]) for a, w in zip(inputs, matrices.inputs)] + [times(h, matrices.recurrent[k])]
        return functools.reduce(jnp.add, products)

    z = tuple(gate_terms(k) for k in range(len(cell.gates)))
    m, c_new = cell.gates_and_cell(z, c, vectors)
    h_new = cell.output_state(times(m, matrices.projection), vectors) if cell.projection else m
    return LSTMState(h_new, c_new), h_new


def lstm_cell_fused(
    weights: LSTMWeights,
    *,
    options: LSTMOptions = LSTMOptions(),
    dtype=jnp.float32,
    matmul_dtype=None,
) -> Callable[[LSTMState, jax.Array], tuple[LSTMState, jax.Array]]:
    """`lstm_cell` with `weights` bound and its matmuls laid out for speed, for loops that run
    one step at a time (as Flax keeps `OptimizedLSTMCell` beside `LSTMCell`).

    Returns ``step(state, x_t [B, n_input]) -> (new_state, h_t)``, the same step as
    ``lstm_cell(state, x_t, weights, options=options)`` (the same gate, cell and output
    functions), but with one ``[x_t, h] @ W`` per step, W laid out once, row-major, outside
    the loop (a dot on TFLite's [m, k] layout inside a loop makes XLA transpose the weight at
    every step). Int8 weights take the hybrid matmuls as `lstm_cell` does.

    Args:
      weights: `LSTMWeights` (no aux weights).
      options: static `LSTMOptions`.
      dtype: the dtype of the inputs and state the step will see.
      matmul_dtype: as in `unidirectional_sequence_lstm`.
    """
    op = "lstm_cell_fused"
    check_weights(op, weights, options, weights.n_input)
    _checks.require(op, not weights.use_aux_weights, "aux_input_to_*_weights belong to the bidirectional op")
    _check_matmul_dtype(op, matmul_dtype, (weights,))
    step = _lstm_engine.step(
        _Cell.of(weights, options),
        _StepMatrices.of(weights, dtype),
        _StepVectors.of(weights, dtype),
        dtype=dtype,
        matmul_dtype=matmul_dtype,
    )

    def fused_step(state: LSTMState, x_t: jax.Array) -> tuple[LSTMState, jax.Array]:
        (h, c), h_t = step(tuple(state), (x_t,))
        return LSTMState(h, c), h_t

    return fused_step


def _direction(
    x: jax.Array,
    w: LSTMWeights,
    state: LSTMState,
    options: LSTMOptions,
    aux: jax.Array | None = None,
    *,
    reverse: bool = False,
    unroll: int = 1,
    matmul_dtype=None,
    plan: _lstm_engine.Plan | None = None,
) -> tuple[jax.Array, LSTMState]:
    """One direction over time-major `x` [T, B, I] (and `aux` [T, B, n_aux] through the aux
    weights) in the engine's loops; returns ([T, B, n_output], final `LSTMState`). `plan`
    forces a loop layout (tests); by default `_lstm_engine.plan` picks it."""
    xs = (x,) if aux is None else (x, aux)
    vectors = _StepVectors.of(w, x.dtype)
    ys, final = _lstm_engine.run(
        _Cell.of(w, options),
        _StepMatrices.of(w, x.dtype, aux=aux is not None),
        vectors,
        xs,
        state,
        reverse=reverse,
        unroll=unroll,
        matmul_dtype=matmul_dtype,
        _plan=plan,
    )
    return ys, LSTMState(*final)


def _to_time_major(x: jax.Array, time_major: bool) -> jax.Array:
    return x if time_major else jnp.swapaxes(x, 0, 1)


# ----------------------------------------------------------------------------- public ops


@functools.partial(jax.jit, static_argnames=("options", "unroll", "matmul_dtype"))
def unidirectional_sequence_lstm(
    input: jax.Array,
    weights: LSTMWeights,
    state: LSTMState | None = None,
    *,
    options: LSTMOptions = LSTMOptions(),
    unroll: int = 1,
    matmul_dtype=None,
) -> tuple[jax.Array, LSTMState]:
    """TFLite UNIDIRECTIONAL_SEQUENCE_LSTM.

    ``input: [B, T, n_input] (or [T, B, n_input] if time_major) -> (output: [B, T, n_output],
    LSTMState(h_T: [B, n_output], c_T: [B, n_cell]))``: `lstm_cell` over the time steps (the
    math is in this module's docstring); semantics are the NumPy loop
    `jaxlstm.reference.np_lstm.unidirectional_sequence_lstm`.

    Args:
      input: float [B, T, n_input], or [T, B, n_input] when ``options.time_major``.
      weights: `LSTMWeights` (no aux weights).
      state: initial `LSTMState` (the op's variable tensors 18 and 19); zeros if None.
      options: static `LSTMOptions`.
      unroll: `lax.scan` unroll factor (speed only).
      matmul_dtype: None (TFLite's float math), or a float dtype such as ``jnp.bfloat16``
        that the weights and activations are cast to for the weight matmuls (float weights
        only). Products accumulate, and the gates and state stay, in the input's dtype:
        faster on hardware with bfloat16 units, at bfloat16 rounding (about 1e-2 relative
        in the gate pre-activations); the .tflite ops stay float32.

    Returns:
      (output sequence in the input's layout, final `LSTMState`).

    Raises:
      ValueError / TypeError: a tensor with the wrong shape or dtype, a missing or
        inconsistent optional tensor, a negative clip, or activation NONE (which the
        upstream kernel mishandles: it leaves h = o * g).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxlstm.convert import lstm_weights_from_fused
      >>> w = lstm_weights_from_fused(jnp.ones((3, 8)) * .1, jnp.ones((2, 8)) * .1, jnp.zeros(8))
      >>> y, (h, c) = unidirectional_sequence_lstm(jnp.ones((1, 5, 3)), w)
      >>> y.shape, h.shape
      ((1, 5, 2), (1, 2))

    References:
      tflite/kernels/unidirectional_sequence_lstm.cc, lstm_eval.cc (EvalFloat, EvalHybrid).
    """
    op = "unidirectional_sequence_lstm"
    _checks.check_input(
        op,
        input,
        (3,),
        "[B, T, n_input] (or [T, B, n_input] when time_major)",
        {"input_to_forget_weights": weights.input_to_forget_weights},
    )
    check_weights(op, weights, options, input.shape[-1])
    _checks.require(op, not weights.use_aux_weights, "aux_input_to_*_weights belong to the bidirectional op")
    _check_matmul_dtype(op, matmul_dtype, (weights,))
    with jax.named_scope(f"jaxlstm.{op}"):
        x = _to_time_major(input, options.time_major)
        if state is None:
            state = zero_state(weights, x.shape[1], input.dtype)
        _check_state(op, "", state, x.shape[1], weights)
        y, final = _direction(x, weights, state, options, unroll=unroll, matmul_dtype=matmul_dtype)
        return _to_time_major(y, options.time_major), final


@functools.partial(jax.jit, static_argnames=("options", "matmul_dtype"))
def lstm(
    input: jax.Array,
    weights: LSTMWeights,
    state: LSTMState | None = None,
    *,
    options: LSTMOptions = LSTMOptions(),
    matmul_dtype=None,
) -> tuple[jax.Array, LSTMState]:
    """TFLite LSTM (FULL kernel): one time step.

    ``input: [B, n_input] -> (output: [B, n_output], LSTMState(h: [B, n_output], c: [B, n_cell]))``.
    Same math and arguments (``matmul_dtype`` too) as `unidirectional_sequence_lstm` with
    T = 1; ``options.time_major`` is ignored (the kernel always runs time-major).

    References:
      tflite/kernels/lstm.cc (Eval, FULL kernel) and lstm_eval.cc.
    """
    op = "lstm"
    _checks.check_input(
        op, input, (2,), "[n_batch, n_input]", {"input_to_forget_weights": weights.input_to_forget_weights}
    )
    check_weights(op, weights, options, input.shape[-1])
    _check_matmul_dtype(op, matmul_dtype, (weights,))
    with jax.named_scope(f"jaxlstm.{op}"):
        if state is None:
            state = zero_state(weights, input.shape[0], input.dtype)
        _check_state(op, "", state, input.shape[0], weights)
        y, final = _direction(input[None], weights, state, options.replace(time_major=True), matmul_dtype=matmul_dtype)
        return y[0], final


@jax.jit
def basic_lstm_cell(
    input: jax.Array,
    prev_activation: jax.Array,
    weights: jax.Array,
    bias: jax.Array,
    prev_state: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """TFLite LSTM with ``kernel_type=BASIC``: one step with one packed weight matrix.

    ``input: [B, I], prev_activation: [B, D], weights: [4D, I + D], bias: [4D],
    prev_state: [B, D] -> (activation: [B, D], state: [B, D])``. The packed blocks are
    input gate, candidate, forget gate, output gate; tanh is fixed; no clip or peephole.

    References:
      tflite/kernels/internal/reference/lstm_cell.h (LstmCell).
    """
    op = "lstm (BASIC kernel)"
    _checks.check_rank(op, "input", input, (2,), "[n_batch, n_input]")
    B, I = input.shape
    D = prev_activation.shape[-1]
    _checks.check_shape(op, "prev_activation", prev_activation, (B, D), f"(n_batch={B}, n_output)")
    _checks.check_shape(op, "weights", weights, (4 * D, I + D), f"(4*n_output={4 * D}, n_input+n_output={I + D})")
    _checks.check_shape(op, "bias", bias, (4 * D,), f"(4*n_output={4 * D},)")
    _checks.check_shape(op, "prev_state", prev_state, (B, D), f"(n_batch={B}, n_output={D})")
    z = jnp.matmul(jnp.concatenate([input, prev_activation], axis=-1), weights.T, precision=FLOAT32) + bias
    i, g, f, o = jnp.split(z, 4, axis=-1)
    state = jax.nn.sigmoid(i) * jnp.tanh(g) + jax.nn.sigmoid(f) * prev_state
    return jax.nn.sigmoid(o) * jnp.tanh(state), state


@functools.partial(jax.jit, static_argnames=("options", "merge_outputs", "unroll", "matmul_dtype"))
def bidirectional_sequence_lstm(
    input: jax.Array,
    fw_weights: LSTMWeights,
    bw_weights: LSTMWeights,
    fw_state: LSTMState | None = None,
    bw_state: LSTMState | None = None,
    aux_input: jax.Array | None = None,
    *,
    options: LSTMOptions = LSTMOptions(time_major=True),
    merge_outputs: bool = False,
    unroll: int = 1,
    matmul_dtype=None,
) -> tuple[tuple[jax.Array, ...], tuple[LSTMState, LSTMState]]:
    """TFLite BIDIRECTIONAL_SEQUENCE_LSTM.

    ``input: [T, B, I] (time_major, the op's default) or [B, T, I] -> ((fw_output, bw_output)
    or (merged,), (fw_state, bw_state))``. The backward direction runs t = T-1 .. 0 and
    writes each output at its own time index; ``merge_outputs`` concatenates
    [fw | bw] on the last axis. Both directions share `options`; there is no layer norm.
    Semantics are the NumPy loop `jaxlstm.reference.np_lstm.bidirectional_sequence_lstm`.

    Aux input modes (bidirectional_sequence_lstm.cc):
      * no `aux_input`: both directions read `input`;
      * `aux_input` and ``fw_weights.aux_input_to_*`` given (cross-linking): both read
        `input` plus `aux_input` through their own aux weights;
      * `aux_input` without aux weights: fw reads `input`, bw reads `aux_input`.

    Args:
      input: float [T, B, I] or [B, T, I].
      fw_weights, bw_weights: `LSTMWeights`, optionally with ``aux_input_to_*`` weights.
      fw_state, bw_state: initial `LSTMState`s (variable tensors 35-38); zeros if None.
      aux_input: optional float [T, B, n_aux] (same layout as `input`).
      options: static `LSTMOptions`.
      merge_outputs: return one output [.., n_fw_output + n_bw_output].
      unroll, matmul_dtype: as in `unidirectional_sequence_lstm`.

    Returns:
      (outputs, (fw_state, bw_state)); outputs is (fw, bw) or (merged,).
    """
    op = "bidirectional_sequence_lstm"
    _checks.check_input(
        op,
        input,
        (3,),
        "[T, B, n_input] (or [B, T, n_input])",
        {
            "fw_input_to_forget_weights": fw_weights.input_to_forget_weights,
            "bw_input_to_forget_weights": bw_weights.input_to_forget_weights,
        },
    )
    for prefix, w in (("fw_", fw_weights), ("bw_", bw_weights)):
        _checks.require(op, not w.use_layer_norm, f"{prefix}weights: the bidirectional op has no layer norm inputs")
    _checks.require(
        op,
        fw_weights.use_aux_weights == bw_weights.use_aux_weights,
        "aux weights must be given for both directions or for neither",
    )
    if fw_weights.use_aux_weights:
        _checks.require(op, aux_input is not None, "aux_input_to_*_weights are given but aux_input is None")
    cross_link = aux_input is not None and fw_weights.use_aux_weights
    bw_reads_aux = aux_input is not None and not fw_weights.use_aux_weights
    if aux_input is not None:
        _checks.check_rank(op, "aux_input", aux_input, (3,), "the input's layout [T, B, n_aux]")
        if bw_reads_aux:
            _checks.check_shape(
                op,
                "aux_input",
                aux_input,
                input.shape,
                f"{tuple(input.shape)} (the input's shape: bw reads it as its input)",
            )
        else:
            _checks.check_shape(
                op,
                "aux_input",
                aux_input,
                input.shape[:2] + aux_input.shape[2:],
                f"{tuple(input.shape[:2])} + (n_aux,)",
            )
    check_weights(op, fw_weights, options, input.shape[-1])
    check_weights(op, bw_weights, options, input.shape[-1])
    _check_matmul_dtype(op, matmul_dtype, (fw_weights, bw_weights))
    # bidirectional_sequence_lstm.cc checks the backward tensors against the forward sizes.
    _checks.require(
        op,
        (bw_weights.n_cell, bw_weights.n_output) == (fw_weights.n_cell, fw_weights.n_output),
        f"bw_weights have (n_cell, n_output) = {(bw_weights.n_cell, bw_weights.n_output)}, but TFLite "
        f"requires the forward sizes {(fw_weights.n_cell, fw_weights.n_output)}",
    )
    if cross_link:
        for prefix, w in (("fw_", fw_weights), ("bw_", bw_weights)):
            _check_aux_weights(op, prefix, w, aux_input)

    with jax.named_scope(f"jaxlstm.{op}"):
        x = _to_time_major(input, options.time_major)
        a = None if aux_input is None else _to_time_major(aux_input, options.time_major)
        B = x.shape[1]
        fw_state = zero_state(fw_weights, B, input.dtype) if fw_state is None else fw_state
        bw_state = zero_state(bw_weights, B, input.dtype) if bw_state is None else bw_state
        _check_state(op, "fw_", fw_state, B, fw_weights)
        _check_state(op, "bw_", bw_state, B, bw_weights)
        speed = dict(unroll=unroll, matmul_dtype=matmul_dtype)
        fw_y, fw_final = _direction(x, fw_weights, fw_state, options, a if cross_link else None, **speed)
        bw_x = a if bw_reads_aux else x
        bw_y, bw_final = _direction(
            bw_x, bw_weights, bw_state, options, a if cross_link else None, reverse=True, **speed
        )
        fw_y = _to_time_major(fw_y, options.time_major)
        bw_y = _to_time_major(bw_y, options.time_major)
        outputs = (jnp.concatenate([fw_y, bw_y], axis=-1),) if merge_outputs else (fw_y, bw_y)
        return outputs, (fw_final, bw_final)
