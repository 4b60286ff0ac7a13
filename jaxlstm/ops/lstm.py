"""TFLite's LSTM family: LSTM (FULL and BASIC kernels), UNIDIRECTIONAL_SEQUENCE_LSTM and
BIDIRECTIONAL_SEQUENCE_LSTM, float and hybrid (int8 weights), as jitted `lax.scan` loops.

Float math of one step (tflite/kernels/lstm_eval.cc, LstmStepFloat), per batch row:

.. math::

    z_X &= b_X + W_{xX} x + W_{aX} a + W_{hX} h + p_X \\odot c  \\quad(\\text{peephole for } X \\in \\{i, f\\})\\\\
    z_X &\\leftarrow \\mathrm{LN}(z_X - b_X) \\odot \\gamma_X + b_X  \\quad(\\text{layer norm: bias after})\\\\
    i &= \\sigma(z_i)\\ (\\text{CIFG: } 1 - f),\\quad f = \\sigma(z_f),\\quad g = \\mathrm{act}(z_g)\\\\
    c' &= \\mathrm{clip}(f \\odot c + i \\odot g, \\text{cell\\_clip})\\\\
    o &= \\sigma(z_o + p_o \\odot c'),\\quad m = o \\odot \\mathrm{act}(c')\\\\
    h' &= \\mathrm{clip}(W_{proj} m + b_{proj}, \\text{proj\\_clip})\\ (\\text{or } m)

Gate order everywhere is `GATES` = (input, forget, cell, output). A weight given as a
`QuantizedTensor` switches the op to TFLite's hybrid path (see `_quant`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxlstm.ops import _checks
from jaxlstm.ops._activations import activation, clip
from jaxlstm.ops._low_precision import low_precision_contract
from jaxlstm.ops._precision import FLOAT32
from jaxlstm.ops._quant import QuantizedTensor, hybrid_matmul
from jaxlstm.ops._shard_map import vary_like

GATES = ("input", "forget", "cell", "output")
# Float LSTMs with full recurrent weights run their forward loop batch-minor from this batch
# size on (`_Cell.batch_minor`, set in `_lstm_scan`).
_BATCH_MINOR_FROM = 8
# From this batch size on, the float custom JVP computes the terms linear in the weight,
# input and bias tangents inside its tangent loop (`_float_recurrence_jvp`).
_LINEAR_TERMS_PER_STEP_FROM = 64
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

    @classmethod
    def from_fused(
        cls,
        kernel: jax.Array,
        recurrent_kernel: jax.Array,
        bias: jax.Array,
        gate_order: str = "ifco",
    ) -> LSTMWeights:
        """Splits packed gate matrices (Keras layout) into per-gate TFLite tensors.

        Args:
          kernel: [n_input, 4 * n_cell], used as ``x @ kernel``.
          recurrent_kernel: [n_output, 4 * n_cell].
          bias: [4 * n_cell].
          gate_order: the order of the packed blocks, as letters of ``i f c o``
            (Keras/PyTorch ``"ifco"``, TF1 LSTMCell ``"icfo"``, Lingvo ``"cifo"``).

        Returns:
          `LSTMWeights` without peephole, projection or layer norm.
        """
        if sorted(gate_order) != sorted("ifco"):
            raise ValueError(f"gate_order must be a permutation of 'ifco', got {gate_order!r}")
        blocks = {}
        for name, letter in zip(GATES, "ifco"):
            k = gate_order.index(letter)
            n = kernel.shape[1] // 4
            blocks[name] = (
                jnp.asarray(kernel)[:, k * n : (k + 1) * n].T,
                jnp.asarray(recurrent_kernel)[:, k * n : (k + 1) * n].T,
                jnp.asarray(bias)[k * n : (k + 1) * n],
            )
        fields = {}
        for name, (w, r, b) in blocks.items():
            fields[f"input_to_{name}_weights"] = w
            fields[f"recurrent_to_{name}_weights"] = r
            fields[f"{name}_gate_bias"] = b
        return cls(**fields)

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


# ----------------------------------------------------------------------------- the step
#
# Speed (measured with experiments/bench_ops.py and bench.py on XLA:CPU):
# * inside the scan, a dot that contracts a weight's last axis (TFLite's [m, k] layout)
#   made XLA transpose the whole matrix at every step once B > 1: the weights are made
#   row-major [k, m] once, before the scan (B = 1 keeps TFLite's layout, see
#   `_float_matmuls`);
# * with B > 1 the input projection runs inside the step, fused with the recurrent one as
#   ``[x_t, h] @ [W_x, W_h]^T``; with B = 1 it is hoisted out of the loop, one matmul per
#   gate (see `_float_matmuls`);
# * z travels through the loop as G per-gate arrays, never as slices of one stacked
#   [T, B, G * n_cell] array: XLA:CPU's code for a dynamic slice (the step's row) of a
#   slice (the gate) was several times slower than the gate math itself;
# * the float path has a custom JVP (`_float_recurrence`) whose weight and input terms are
#   computed for all steps at once, outside the loop, so reverse mode carries only
#   (dh, dc) backwards, with one matmul per step.


@dataclasses.dataclass(frozen=True)
class _Cell:
    """The static structure of one LSTM step (which gates and optional parts exist)."""

    gates: tuple[str, ...]
    activation: str
    cell_clip: float
    proj_clip: float
    layer_norm: bool
    diagonal: bool  # recurrent weights are a [G * n_cell] vector
    projection: bool
    matmul_dtype: object = None  # operand dtype of the float weight matmuls; None: the input's
    # The loop's arrays are [n, B] and vectors [n, 1] (see `_run`), not [B, n] and [n].
    batch_minor: bool = False

    @property
    def feature_axis(self) -> int:
        """The units axis of the loop's arrays: 0 of [n, B] when `batch_minor`, else -1."""
        return 0 if self.batch_minor else -1

    def split(self, z: jax.Array) -> tuple[jax.Array, ...]:
        """[..., G * n_cell] -> G arrays [..., n_cell] along `feature_axis`, in `gates` order."""
        return tuple(jnp.split(z, len(self.gates), axis=self.feature_axis))

    def gate_outputs(self, z: tuple, c: jax.Array, vecs: dict) -> tuple[jax.Array, jax.Array]:
        """From the gates' matmul parts z (G arrays [B, n_cell]) and c [B, n_cell], returns
        (m = o * act(c'), c') [B, n_cell]; bias, peephole, layer norm and clip come from `vecs`."""
        act = activation(self.activation)
        z = dict(zip(self.gates, z))
        peephole = vecs["peephole"]

        def finish(g: str, z_g: jax.Array) -> jax.Array:
            if g in peephole and g != "output":
                z_g = z_g + peephole[g] * c
            if self.layer_norm:
                return _layer_norm(z_g, self.feature_axis) * vecs["layer_norm"][g] + vecs["bias"][g]
            return z_g + vecs["bias"][g]

        f = jax.nn.sigmoid(finish("forget", z["forget"]))
        g_cell = act(finish("cell", z["cell"]))
        i = 1.0 - f if "input" not in z else jax.nn.sigmoid(finish("input", z["input"]))
        c_new = clip(f * c + g_cell * i, self.cell_clip)
        z_o = z["output"] + peephole["output"] * c_new if "output" in peephole else z["output"]
        o = jax.nn.sigmoid(finish("output", z_o))
        return o * act(c_new), c_new

    def output(self, p: jax.Array, vecs: dict) -> jax.Array:
        """h [B, n_output] from the projection matmul p (bias and clip added here), or m itself."""
        if not self.projection:
            return p
        if "projection_bias" in vecs:
            p = vecs["projection_bias"] + p
        return clip(p, self.proj_clip)


def _float_vector(v):
    return v.dequantize() if isinstance(v, QuantizedTensor) else v


def _layer_norm(z: jax.Array, axis: int = -1) -> jax.Array:
    """MeanStddevNormalization over `axis`: population variance, epsilon 1e-8 inside the sqrt."""
    mean = jnp.mean(z, axis=axis, keepdims=True)
    var = jnp.mean(jnp.square(z - mean), axis=axis, keepdims=True)
    return (z - mean) * (1.0 / jnp.sqrt(var + 1e-8))


def _contract(x: jax.Array, w: jax.Array, matmul_dtype=None) -> jax.Array:
    """``x [..., k] @ w.T`` for a weight in TFLite layout w [m, k]: [..., m]. With
    `matmul_dtype`, a `low_precision_contract`: operands cast to it, in reverse mode too."""
    if matmul_dtype is None:
        return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())), precision=FLOAT32)
    return low_precision_contract(x, w, matmul_dtype)


def _recurrent(h: jax.Array, r: jax.Array, matmul_dtype=None) -> jax.Array:
    """h [..., n_output] times the recurrent weights r [G * n_cell, n_output] or the diagonal
    [G * n_cell] (which needs n_output == n_cell): [..., G * n_cell]."""
    if r.ndim == 1:
        return jnp.tile(h, (1,) * (h.ndim - 1) + (r.shape[0] // h.shape[-1],)) * r
    return _contract(h, r, matmul_dtype)


def _hybrid(mats: list, asymmetric: bool):
    """Per-gate int8 matrices [n_cell, k] as one hybrid matmul ``x [N, k] -> [N, G * n_cell]``."""
    values = jnp.concatenate([m.values for m in mats])
    scales = jnp.concatenate([jnp.broadcast_to(jnp.asarray(m.scale, jnp.float32), m.shape[:1]) for m in mats])
    return lambda x: hybrid_matmul(x, values, scales, asymmetric)


def _run(
    cell: _Cell,
    preactivation,
    project,
    vecs: dict,
    xs: tuple,
    state: LSTMState,
    reverse: bool,
    unroll: int,
    residuals: bool = False,
):
    """The time loop shared by the float and hybrid paths.

    Args:
      preactivation: ``(xs_t, h) -> z``, the gates' matmuls: G arrays [B, n_cell]. With
        ``cell.batch_minor`` the loop holds the state as [n, B] and the vectors of `vecs`
        as [n, 1]: `preactivation` and `project` then take and return [n, B] arrays, and xs
        and the residuals are [T, ..., B].
      project: ``m -> p [B, n_output]``, the projection matmul (unused without projection).
      xs: what `preactivation` reads per step, stacked over time (leading axis T).
      residuals: also return what the derivative needs, stacked over steps: the step's
        input state h_in [T, B, n_output] and c_in [T, B, n_cell], z (G arrays [T, B, n_cell]) and,
        with a projection, m [T, B, n_cell] and p [T, B, n_output] (else None).

    Returns:
      (ys [T, B, n_output], final `LSTMState`, (h_in, z, c_in, m, p) or None).
    """

    if cell.batch_minor:
        vecs = jax.tree.map(lambda v: v[:, None], vecs)
        state = jax.tree.map(jnp.transpose, state)

    def step(carry: LSTMState, xs_t: tuple):
        h, c = carry
        z = preactivation(xs_t, h)
        m, c_new = cell.gate_outputs(z, c, vecs)
        p = project(m) if cell.projection else None
        h_new = cell.output(m if p is None else p, vecs)
        saved = (h, z, c, m if cell.projection else None, p) if residuals else None
        return LSTMState(h_new, c_new), (h_new, saved)

    final, (ys, per_step) = jax.lax.scan(step, state, xs, reverse=reverse, unroll=unroll)
    if cell.batch_minor:
        final, ys = jax.tree.map(jnp.transpose, final), jnp.swapaxes(ys, 1, 2)
    return ys, final, per_step


class _Matmuls(NamedTuple):
    """The weight matmuls of the float loop (see `_float_matmuls`)."""

    inputs: Callable  # xs -> what the loop reads per step (stacked over T)
    preactivation: Callable  # (inputs_t, h) -> z: G arrays [B, n_cell], all gate matmuls
    project: Callable  # m [B, n_cell] -> [B, n_output]
    # The tangent loop's, used by the JVP only, whose cell is batch-major:
    # dh [B, n_output] -> [B, G * n_cell] and dm [B, n_cell] -> [B, n_output]
    tangent_recurrent: Callable
    tangent_project: Callable


def _float_matmuls(cell: _Cell, mats: dict, batch: int) -> _Matmuls:
    """The matmuls from float weights in TFLite layout (see `_float_recurrence`).

    With ``cell.batch_minor`` (batch >= 8, full recurrent weights) the loop runs batch-minor
    (`_run`): one fused ``W @ [x_t; (aux_t;) h]`` per step, W in TFLite's layout
    [G * n_cell, k] as it is, a [G * n_cell, k] @ [k, B] GEMM whose gates are contiguous row
    blocks. On XLA:CPU (Intel) the forward pass was 1.05-1.45x faster at batch 8 to 128 than
    with the batch-major loop, and slower at batch 2 (experiments/README.md).

    Otherwise, with batch > 1, one fused ``[x_t, (aux_t,) h] @ W.T`` per step, its weights made
    row-major [k, m] once, before the loop (a dot contracting a weight's last axis made XLA
    transpose it at every step).

    With batch 1, the step's dots are matrix-vector products, as fast on TFLite's layout
    (and the copy would be the largest cost of short sequences); fusing the input ones
    into them gains nothing, so the input terms of all steps are computed before the loop
    instead, one [T, k] @ [k, n_cell] matmul per gate (1.2-1.4x faster). They enter the loop
    as G separate arrays: read as slices of one [T, 1, G * n_cell] array, XLA:CPU's code for
    the dynamic slice of a slice was several times slower than the step's gate math.

    The custom JVP's loops are batch-major at any batch (`_float_recurrence_jvp`); its
    tangent loop contracts the weights' last axis (TFLite's layout): reverse mode never runs
    that loop but its transpose, whose ``dz @ W`` then reads the weights row-major.

    With ``cell.matmul_dtype`` the weights and the activations entering each dot are cast
    to it; the dot accumulates in the input's dtype. The JVP's matmuls (which reverse mode
    transposes) are `low_precision_contract`, whose transposes are cast too. (XLA:CPU runs a
    bfloat16 dot whose operand is a transposed array in float32: the row-major copies stay
    plain dots.)
    """
    out_dtype = mats["inputs"][0].dtype
    G = len(cell.gates)
    batch_minor = cell.batch_minor
    row_major = batch > 1 and not batch_minor  # the batch-major loop's weights are transposed copies

    def cast(w: jax.Array) -> jax.Array:
        return w if cell.matmul_dtype is None else w.astype(cell.matmul_dtype)

    def times(w: jax.Array, transposed: bool = False) -> Callable:
        """``a [..., k] -> a @ w.T`` for w [m, k] (TFLite's layout), or ``a @ w`` for a
        transposed w [k, m]; when `batch_minor`, ``a [k, B] -> w @ a`` for w [m, k]: [m, B]."""

        def matmul(a: jax.Array) -> jax.Array:
            if batch_minor:
                return jax.lax.dot_general(
                    w, a.astype(w.dtype), (((1,), (0,)), ((), ())), precision=FLOAT32, preferred_element_type=out_dtype
                )
            if transposed:
                return jax.lax.dot_general(
                    a.astype(w.dtype),
                    w,
                    (((a.ndim - 1,), (0,)), ((), ())),
                    precision=FLOAT32,
                    preferred_element_type=out_dtype,
                )
            # TFLite's layout, the tangent loop's: with matmul_dtype, cast in reverse mode too
            return _contract(a, w, cell.matmul_dtype).astype(out_dtype)

        return matmul

    def transposed(w: jax.Array) -> Callable:
        return times(cast(w).T, transposed=True)

    # Cached: where the loop and the tangent loop share a layout, they share one weight copy.
    @functools.cache
    def weight_matmul(name: str, is_transposed: bool) -> Callable:
        return transposed(mats[name]) if is_transposed else times(cast(mats[name]))

    if cell.diagonal:
        recurrent = tangent_recurrent = functools.partial(_recurrent, r=mats["recurrent"])
    else:
        recurrent, tangent_recurrent = weight_matmul("recurrent", row_major), weight_matmul("recurrent", False)
    if cell.projection:
        project, tangent_project = weight_matmul("projection", row_major), weight_matmul("projection", False)
    else:
        project = tangent_project = None

    if batch == 1:
        per_gate = [[transposed(w_g) for w_g in jnp.split(w, G)] for w in mats["inputs"]]

        def inputs(xs: tuple) -> tuple[jax.Array, ...]:
            return tuple(functools.reduce(jnp.add, [w[g](x) for x, w in zip(xs, per_gate)]) for g in range(G))

        def preactivation(zx_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
            return tuple(map(jnp.add, zx_t, cell.split(recurrent(h))))
    elif batch_minor:

        def inputs(xs: tuple) -> tuple[jax.Array, ...]:
            return tuple(jnp.swapaxes(x, 1, 2) for x in xs)  # [T, k, B]: each step multiplies its own x_t

        fused = times(cast(jnp.concatenate(mats["inputs"] + (mats["recurrent"],), axis=1)))

        def preactivation(xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
            return cell.split(fused(jnp.concatenate(xs_t + (h,))))
    else:

        def inputs(xs: tuple) -> tuple:
            return xs  # each step multiplies its own x_t

        if cell.diagonal:
            input_matmul = transposed(jnp.concatenate(mats["inputs"], axis=1))

            def preactivation(xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
                return cell.split(input_matmul(jnp.concatenate(xs_t, axis=-1)) + recurrent(h))
        else:
            fused = transposed(jnp.concatenate(mats["inputs"] + (mats["recurrent"],), axis=1))

            def preactivation(xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
                return cell.split(fused(jnp.concatenate(xs_t + (h,), axis=-1)))

    return _Matmuls(inputs, preactivation, project, tangent_recurrent, tangent_project)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _float_recurrence(
    cell: _Cell, reverse: bool, unroll: int, mats: dict, vecs: dict, xs: tuple, state: LSTMState
) -> tuple[jax.Array, LSTMState]:
    """The float time loop; returns (ys [T, B, n_output], final state).

    mats: ``inputs`` (one [G * n_cell, k] per entry of xs), ``recurrent`` ([G * n_cell,
    n_output] or the diagonal [G * n_cell]) and ``projection`` ([n_output, n_cell] or None).
    """
    matmuls = _float_matmuls(cell, mats, batch=xs[0].shape[1])
    ys, final, _ = _run(cell, matmuls.preactivation, matmuls.project, vecs, matmuls.inputs(xs), state, reverse, unroll)
    return ys, final


def _is_zero(tangent) -> bool:
    return isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _float_recurrence_jvp(cell: _Cell, reverse: bool, unroll: int, primals, tangents):
    """JVP with the weight and input terms outside the loop.

    The terms linear in the tangents of the weight matrices, of xs and (without layer norm)
    of the gate biases are batched matmuls over all steps: their transposes, the weight,
    input and bias gradients, are one matmul or sum each. The loop left carries (dh, dc)
    through each step with the matrices held constant; transposed, it does one ``dz @ W_h``
    per step. The steps' elementwise parts are recomputed from the saved z and state
    (`_recomputed_jvp`), so only those, not every intermediate, are stacked over time.

    From batch `_LINEAR_TERMS_PER_STEP_FROM` on (float32 matmuls), each step of the tangent
    loop computes its own linear terms instead: reverse mode then accumulates the weight
    gradients step by step, with B-deep matmuls, and never stacks z's cotangents over time
    (on XLA:CPU the training step was 1.02-1.15x faster at batch 96 to 256 and on par at 64,
    but slower below: up to 8x at batch 1; and 0.93x with bfloat16 matmuls;
    experiments/README.md).

    The loops run batch-major at any batch: with the batch-minor loop the training step was
    up to 1.2x faster at n_cell >= 256 but 0.8-0.9x at n_cell = 128 (experiments/README.md).
    """
    cell = dataclasses.replace(cell, batch_minor=False)
    mats, vecs, xs, state = primals
    d_mats, d_vecs, d_xs, d_state = tangents
    matmuls = _float_matmuls(cell, mats, batch=xs[0].shape[1])
    ys, final, (h_in, z, c, m, p) = _run(
        cell,
        matmuls.preactivation,
        matmuls.project,
        vecs,
        matmuls.inputs(xs),
        state,
        reverse,
        unroll,
        residuals=True,
    )
    d_vecs = jax.tree.map(lambda v, d: jnp.zeros_like(v) if _is_zero(d) else d, vecs, d_vecs)
    d_xs = tuple(None if _is_zero(d) else d for d in d_xs)
    d_bias = d_vecs["bias"]
    G = len(cell.gates)
    # The weights and their tangents split into gates once, outside the loops.
    inputs = [jnp.split(w, G) for w in mats["inputs"]]
    d_inputs = [None if _is_zero(d_w) else jnp.split(d_w, G) for d_w in d_mats["inputs"]]
    d_recurrent = None if _is_zero(d_mats["recurrent"]) else jnp.split(d_mats["recurrent"], G)

    def linear_terms(xs, d_xs, h_in, m) -> tuple[tuple[jax.Array, ...], jax.Array | None]:
        """The terms of z (G arrays [..., B, n_cell]) and of p ([..., B, n_output] or None)
        that are linear in the tangents of the weight matrices, of xs and (without layer
        norm) of the gate biases, from xs, h_in and m, all steps' [T, B, ...] or one step's."""
        terms = [[] for _ in range(G)]  # per gate: kept as G arrays (see `_float_matmuls`)
        pairs = [(x, d_w) for x, d_w in zip(xs, d_inputs) if d_w is not None]
        pairs += [(d_x, w) for d_x, w in zip(d_xs, inputs) if d_x is not None]
        for a, w in pairs:
            for gate_terms, w_g in zip(terms, w):
                gate_terms.append(_contract(a, w_g, cell.matmul_dtype))
        if d_recurrent is not None:
            for gate_terms, r_g in zip(terms, d_recurrent):
                gate_terms.append(_recurrent(h_in, r_g, cell.matmul_dtype))
        if not cell.layer_norm:  # the bias adds straight to z
            for gate_terms, g in zip(terms, cell.gates):
                gate_terms.append(d_bias[g])
        zero = jnp.zeros(h_in.shape[:-1] + z[0].shape[-1:], z[0].dtype)
        dz = tuple(functools.reduce(jnp.add, gate_terms, zero) for gate_terms in terms)
        dp = None
        if cell.projection and not _is_zero(d_mats["projection"]):
            dp = _contract(m, d_mats["projection"], cell.matmul_dtype)
        return dz, dp

    if xs[0].shape[1] >= _LINEAR_TERMS_PER_STEP_FROM and cell.matmul_dtype is None:
        linear_in, linear = (xs, d_xs, h_in, m), (None, None)  # computed by each step
    else:
        linear_in, linear = None, linear_terms(xs, d_xs, h_in, m)
    if not cell.layer_norm:  # the gate bias tangents are in the linear terms
        d_vecs = {**d_vecs, "bias": jax.tree.map(jnp.zeros_like, vecs["bias"])}

    def tangent_step(d_carry: LSTMState, s: tuple):
        (dz_t, dp_t), linear_in_t, z_t, c_t, p_t = s  # per step: linear terms, then saved primals
        if linear_in_t is not None:
            dz_t, dp_t = linear_terms(*linear_in_t)
        dz = tuple(map(jnp.add, dz_t, cell.split(matmuls.tangent_recurrent(d_carry.output_state))))
        dm, dc = _recomputed_jvp(cell.gate_outputs, (z_t, c_t, vecs), (dz, d_carry.cell_state, d_vecs))
        dh = dm
        if cell.projection:
            dp = matmuls.tangent_project(dm)
            dh = _recomputed_jvp(cell.output, (p_t, vecs), (dp if dp_t is None else dp + dp_t, d_vecs))
        return LSTMState(dh, dc), dh

    d_state = jax.tree.map(lambda v, d: jnp.zeros_like(v) if _is_zero(d) else d, state, d_state)
    d_weights = [d for d in jax.tree.leaves(d_mats, is_leaf=_is_zero) if not _is_zero(d)]
    d_state = vary_like(d_state, linear, linear_in, d_weights, d_vecs)
    d_final, d_ys = jax.lax.scan(
        tangent_step,
        d_state,
        (linear, linear_in, z, c, p),
        reverse=reverse,
        unroll=unroll,
    )
    return (ys, final), (d_ys, d_final)


_float_recurrence.defjvp(_float_recurrence_jvp, symbolic_zeros=True)


def _recomputed_jvp(f: Callable, primals: tuple, tangents: tuple):
    """``jax.jvp(f, primals, tangents)[1]``, recomputed from `primals` when transposed."""
    return jax.checkpoint(lambda p, t: jax.jvp(f, p, t)[1])(primals, tangents)


def _lstm_scan(
    x: jax.Array,
    w: LSTMWeights,
    state: LSTMState,
    options: LSTMOptions,
    aux: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    matmul_dtype=None,
) -> tuple[jax.Array, LSTMState]:
    """Runs one direction over time-major `x` [T, B, I]; returns ([T, B, n_output], final state)."""
    dtype = x.dtype
    gates = w.gates

    def stacked(kind: str) -> list:
        return [getattr(w, kind.format(g)) for g in gates]

    xs, inputs = (x,), [stacked("input_to_{}_weights")]
    if aux is not None and w.use_aux_weights:
        xs, inputs = (x, aux), inputs + [stacked("aux_input_to_{}_weights")]
    recurrent = stacked("recurrent_to_{}_weights")
    diagonal = len(recurrent[0].shape) == 1
    cell = _Cell(
        gates,
        options.fused_activation_function,
        options.cell_clip,
        options.proj_clip,
        w.use_layer_norm,
        diagonal,
        projection=w.use_projection,
        matmul_dtype=matmul_dtype,
        batch_minor=x.shape[1] >= _BATCH_MINOR_FROM and not (diagonal or w.is_hybrid),
    )
    vecs = {
        "bias": {g: getattr(w, f"{g}_gate_bias").astype(dtype) for g in gates},
        "peephole": {
            g: _float_vector(getattr(w, f"cell_to_{g}_weights")).astype(dtype)
            for g in ("input", "forget", "output")
            if w.use_peephole and g in gates
        },
        "layer_norm": {g: getattr(w, f"{g}_layer_norm_coefficients").astype(dtype) for g in gates}
        if w.use_layer_norm
        else {},
    }
    if w.projection_bias is not None:
        vecs["projection_bias"] = w.projection_bias.astype(dtype)
    if cell.diagonal:  # ("IndyLSTM") float even in hybrid models
        recurrent = jnp.concatenate([_float_vector(r) for r in recurrent]).astype(dtype)

    state = vary_like(state, xs, w)
    if not w.is_hybrid:
        mats = {
            "inputs": tuple(jnp.concatenate(m).astype(dtype) for m in inputs),
            "recurrent": recurrent if cell.diagonal else jnp.concatenate(recurrent).astype(dtype),
            "projection": w.projection_weights.astype(dtype) if cell.projection else None,
        }
        return _float_recurrence(cell, reverse, unroll, mats, vecs, xs, state)

    asym = options.asymmetric_quantize_inputs
    input_matmuls = [_hybrid(m, asym) for m in inputs]
    recurrent_matmul = functools.partial(_recurrent, r=recurrent) if cell.diagonal else _hybrid(recurrent, asym)

    def preactivation(xs_t: tuple, h: jax.Array) -> tuple[jax.Array, ...]:
        return cell.split(sum(f(x_t) for f, x_t in zip(input_matmuls, xs_t)) + recurrent_matmul(h))

    project = _hybrid([w.projection_weights], asym) if cell.projection else None
    ys, final, _ = _run(cell, preactivation, project, vecs, xs, state, reverse, unroll)
    return ys, final


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
    LSTMState(h_T: [B, n_output], c_T: [B, n_cell]))``. Semantics are the NumPy loop in
    ``tests/reference/np_lstm.py``; the math is in this module's docstring.

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
      >>> w = LSTMWeights.from_fused(jnp.ones((3, 8)) * .1, jnp.ones((2, 8)) * .1, jnp.zeros(8))
      >>> y, (h, c) = unidirectional_sequence_lstm(jnp.ones((1, 5, 3)), w)
      >>> y.shape, h.shape
      ((1, 5, 2), (1, 2))

    References:
      tflite/kernels/unidirectional_sequence_lstm.cc, lstm_eval.cc (EvalFloat, EvalHybrid).
    """
    op = "unidirectional_sequence_lstm"
    _checks.check_rank(op, "input", input, (3,), "[B, T, n_input] (or [T, B, n_input] when time_major)")
    _checks.check_float(op, "input", input)
    n_input = input.shape[-1]
    check_weights(op, weights, options, n_input)
    _checks.require(op, not weights.use_aux_weights, "aux_input_to_*_weights belong to the bidirectional op")
    _check_matmul_dtype(op, matmul_dtype, (weights,))
    with jax.named_scope(f"jaxlstm.{op}"):
        x = _to_time_major(input, options.time_major)
        if state is None:
            state = zero_state(weights, x.shape[1], input.dtype)
        _check_state(op, "", state, x.shape[1], weights)
        y, final = _lstm_scan(x, weights, state, options, unroll=unroll, matmul_dtype=matmul_dtype)
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
    _checks.check_rank(op, "input", input, (2,), "[n_batch, n_input]")
    _checks.check_float(op, "input", input)
    check_weights(op, weights, options, input.shape[-1])
    _check_matmul_dtype(op, matmul_dtype, (weights,))
    with jax.named_scope(f"jaxlstm.{op}"):
        if state is None:
            state = zero_state(weights, input.shape[0], input.dtype)
        _check_state(op, "", state, input.shape[0], weights)
        y, final = _lstm_scan(input[None], weights, state, options.replace(time_major=True), matmul_dtype=matmul_dtype)
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
    _checks.check_rank(op, "input", input, (3,), "[T, B, n_input] (or [B, T, n_input])")
    _checks.check_float(op, "input", input)
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
    for prefix, w in (("fw_", fw_weights), ("bw_", bw_weights)):
        if cross_link:
            for g in w.gates:
                a = getattr(w, f"aux_input_to_{g}_weights")
                _checks.check_shape(
                    op,
                    f"{prefix}aux_input_to_{g}_weights",
                    a,
                    (w.n_cell, aux_input.shape[-1]),
                    f"(n_cell={w.n_cell}, n_aux={aux_input.shape[-1]})",
                )

    with jax.named_scope(f"jaxlstm.{op}"):
        x = _to_time_major(input, options.time_major)
        a = None if aux_input is None else _to_time_major(aux_input, options.time_major)
        B = x.shape[1]
        fw_state = zero_state(fw_weights, B, input.dtype) if fw_state is None else fw_state
        bw_state = zero_state(bw_weights, B, input.dtype) if bw_state is None else bw_state
        _check_state(op, "fw_", fw_state, B, fw_weights)
        _check_state(op, "bw_", bw_state, B, bw_weights)
        speed = dict(unroll=unroll, matmul_dtype=matmul_dtype)
        fw_y, fw_final = _lstm_scan(x, fw_weights, fw_state, options, a if cross_link else None, **speed)
        bw_x = a if bw_reads_aux else x
        bw_y, bw_final = _lstm_scan(
            bw_x, bw_weights, bw_state, options, a if cross_link else None, reverse=True, **speed
        )
        fw_y = _to_time_major(fw_y, options.time_major)
        bw_y = _to_time_major(bw_y, options.time_major)
        outputs = (jnp.concatenate([fw_y, bw_y], axis=-1),) if merge_outputs else (fw_y, bw_y)
        return outputs, (fw_final, bw_final)
