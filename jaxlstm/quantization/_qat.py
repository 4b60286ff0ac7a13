"""Quantization-aware training: fine-tune float weights through a fully integer model's forward pass.

`fake_quantized(integer_model)` pairs the integer `Model` that `quantize` made with a
float twin of the same graph. Its `FakeQuantized.apply` runs every operator twice: the
integer kernel on integer values (weights re-quantized from the float parameters at the
integer model's fixed scales), and the float kernel on the float values. Each output is
passed on as a straight-through estimator,

.. math::

    y = y_{float} - \\mathrm{sg}(y_{float}) + \\mathrm{sg}(\\mathrm{dequantize}(y_{int}))

whose value is the integer kernel's (dequantized, bit for bit) and whose gradient is the
float kernel's, evaluated on the integer model's (dequantized) inputs to that operator, and
zero where the float value lies outside the output's integer range (there the integer kernel
saturates, as TensorFlow's fake-quantization gradient does).
So the loss is the integer model's, and gradient steps on the float weights recover
accuracy lost to quantization; `FakeQuantized.integer_model` then gives the integer
model to export, whose outputs equal what `apply` computed.

    qat = fake_quantized(jaxlstm.quantize(model, calibration_data))
    params = model.params                       # float weights, by tensor name
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(qat.apply(p, x)[0], y).mean()
    ...                                         # jax.grad(loss), optax updates
    jaxlstm.export_tflite(qat.integer_model(params), "tuned_int8.tflite")

The activations' quantization (calibrated ranges) and the weights' scales stay fixed; a
weight that grows past its scale's range saturates (int8: +-127 steps).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.model.graph import NO_TENSOR, Model, Tensor
from jaxlstm.model.integer_kernels import dequantize
from jaxlstm.model.kernels import KernelContext
from jaxlstm.model.runtime import run_operator
from jaxlstm.ops._quant import QuantizedTensor, round_half_away

# Operators whose float twin is the identity: they only change the representation.
_CONVERSIONS = ("QUANTIZE", "DEQUANTIZE")


@dataclasses.dataclass(frozen=True)
class FakeQuantized:
    """A fully integer model trained through its float weights (see the module docstring).

    Attributes:
      quantized: the integer `Model` (from `jaxlstm.quantize`), whose graph, activation
        quantization and weight scales stay fixed.
    """

    quantized: Model

    def requantize(self, params: Mapping[str, Any]) -> dict[str, QuantizedTensor]:
        """The integer model's weights from float `params` at its fixed scales:
        ``clip(round(w * (1 / scale)))`` to the weight's type (int8 weights +-127, int16
        +-32767, int32/int64 biases). Weights missing from `params` keep their values."""
        integer = {}
        for name, value in self.quantized.params.items():
            if name not in params:
                integer[name] = value
                continue
            scale = np.asarray(value.scale, np.float32)
            inverse = (1.0 / scale.astype(np.float64)).astype(np.float32)
            limit = float(np.iinfo(value.values.dtype).max)  # exact in float64 up to int32
            with jax.enable_x64(True):  # int64 biases (16x8) stay int64, as the kernels take them
                q = round_half_away(jax.lax.stop_gradient(jnp.asarray(params[name], jnp.float32)) * inverse)
                q = jnp.clip(q.astype(jnp.float64), -limit, limit).astype(value.values.dtype)
            integer[name] = QuantizedTensor(q, value.scale)
        return integer

    def integer_model(self, params: Mapping[str, Any]) -> Model:
        """The integer model with its weights re-quantized from float `params` (to export)."""
        integer = {name: jax.tree.map(np.asarray, v) for name, v in self.requantize(params).items()}
        return self.quantized.with_params(integer)

    def apply(self, params: Mapping[str, Any], *inputs: jax.Array) -> list[jax.Array]:
        """The integer model's outputs as float arrays, with straight-through gradients.

        Runs from the initial (zero) state, like `Model.__call__`.

        Args:
          params: the float weights by tensor name (a float model's `Model.params`; the
            integer model's own weights are ``{name: value.dequantize()}``).
          *inputs: as the integer model takes them (float32 for ``io="float"``, integer
            arrays for ``io="integer"``).

        Returns:
          The outputs in `Model.output_names` order, float32: equal to the integer model's
          outputs with weights `requantize(params)` (integer outputs dequantized as the
          runtime's DEQUANTIZE would).
        """
        q = self.quantized
        q.check_inputs(*inputs)
        integer_params = self.requantize(params)
        integer: dict[int, Any] = {}
        real: dict[int, Any] = {}  # the float twin's values
        for i, value in q.constants.items():
            t = q.tensors[i]
            if t.is_variable:
                continue
            integer[i] = integer_params.get(t.name, value)
            if t.name in integer_params:  # a weight: the float twin reads the float parameter
                real[i] = params[t.name] if t.name in params else value.dequantize()
            else:  # structure: shapes, axes, slice bounds
                real[i] = value
        state = q.init_state(q.input_batch(*inputs))
        for i, t in enumerate(q.tensors):
            if t.is_variable:
                integer[i] = state[t.name]
                real[i] = jnp.zeros(state[t.name].shape, jnp.float32)
        for i, x in zip(q.inputs, inputs):
            integer[i] = jnp.asarray(x)
            real[i] = _real(q.tensors[i], integer[i], q.runtime)
        context = KernelContext(q.tensors, q.runtime)
        for op in q.operators:
            integer_out, _ = run_operator(op, [None if i == NO_TENSOR else integer[i] for i in op.inputs], context)
            real_args = [None if i == NO_TENSOR else real[i] for i in op.inputs]
            if op.opcode in _CONVERSIONS:
                real_out = real_args[:1]
            else:
                real_out, _ = run_operator(dataclasses.replace(op, intermediates=()), real_args)
            for i, y_int, y in zip(op.outputs, integer_out, real_out):
                integer[i] = y_int
                real[i] = _straight_through(q.tensors[i], y, y_int, q.runtime)
        return [real[i] for i in q.outputs]


def fake_quantized(quantized: Model) -> FakeQuantized:
    """`FakeQuantized` training for the integer model `quantized` (see the module docstring).

    Raises:
      ValueError: `quantized` has no integer weights (it is not a fully integer model).
    """
    if not any(isinstance(v, QuantizedTensor) for v in quantized.params.values()):
        raise ValueError("fake_quantized takes a fully integer model (from jaxlstm.quantize); this one has none")
    return FakeQuantized(quantized)


def _straight_through(t: Tensor, y: jax.Array, y_int: jax.Array, runtime: str) -> jax.Array:
    """The value of ``dequantize(y_int)`` with the gradient of the float `y` inside the
    range tensor `t` represents (zero outside it: the integer output saturates there)."""
    value = jax.lax.stop_gradient(_real(t, y_int, runtime))
    passes = y - jax.lax.stop_gradient(y)  # exactly 0, with y's gradient
    if t.scale is not None and not t.dtype.startswith("float"):
        info = np.iinfo(t.dtype)
        low, high = (np.float32(t.scale) * np.float32(v - t.zero_point) for v in (info.min, info.max))
        passes = jnp.where((y >= low) & (y <= high), passes, 0.0)
    return value + passes


def _real(t: Tensor, value: jax.Array, runtime: str) -> jax.Array:
    """The float value of tensor `t`: integer activations dequantized (as `runtime`'s
    DEQUANTIZE computes it), float ones as they are."""
    if t.scale is None or t.dtype.startswith("float"):
        return value
    return dequantize(value, float(t.scale), int(t.zero_point), runtime)
