"""The model: one TFLite subgraph held in Python and run in JAX.

A `Model` is the meeting point of the library: the `.tflite` importer produces one, the
converters and Flax modules build one (`ModelBuilder`), the exporter serializes one, and
`apply` runs it with the `jaxlstm.ops` kernels, purely and differentiably.

    m.params                       # {tensor name: array | QuantizedTensor}, the constants
    state = m.init_state()         # {tensor name: array}, the variable tensors (RNN/LSTM state)
    outputs, state = m.apply(m.params, state, *inputs)
    outputs = m(*inputs)           # fresh state, like a newly allocated interpreter
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm.ops._quant import QuantizedTensor
from jaxlstm.ops.lstm_integer import RUNTIMES

NO_TENSOR = -1  # an absent optional operator input
# The most elements `Model.init_state` allocates for one state tensor (1 GiB of float32),
# far beyond any real recurrent state: a larger one comes from a corrupt shape or batch_size.
MAX_STATE_ELEMENTS = 2**28


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One tensor of the subgraph.

    Attributes:
      name: unique name; the key of `Model.params` / `Model.init_state()`.
      shape: the shape signature; -1 marks a dynamic dimension (batch or time).
      dtype: numpy dtype name ("float32", "int8", "int32", ...).
      scale: the quantization scale of an integer tensor (a float, or a tuple of floats
        for per-channel weights), else None.
      zero_point: the quantization zero point (0 for weights): real = scale * (q - zero_point).
      is_variable: a state tensor that operators update in place (TFLite variable tensor).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    scale: float | tuple[float, ...] | None = None
    zero_point: int = 0
    is_variable: bool = False


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator: a builtin opcode name, tensor indices and static options.

    Attributes:
      opcode: the schema `BuiltinOperator` name, e.g. "UNIDIRECTIONAL_SEQUENCE_LSTM".
      inputs: tensor indices; `NO_TENSOR` (-1) for an absent optional input.
      outputs: tensor indices.
      options: the builtin options as sorted (snake_case schema field, value) pairs.
      intermediates: tensor indices of the operator's intermediate tensors, which carry
        only quantization parameters (the integer LSTM kernels read their scales).
    """

    opcode: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()
    intermediates: tuple[int, ...] = ()

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)


def options_tuple(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Options as a sorted, hashable tuple (lists become tuples)."""
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in options.items()))


class Model:
    """A TFLite subgraph that runs in JAX (see the module docstring).

    Args:
      tensors: all tensors, indexed by position.
      operators: in execution order (TFLite order is a valid topological order).
      inputs: indices of the subgraph inputs (non-variable), in order.
      outputs: indices of the subgraph outputs, in order.
      constants: {tensor index: value} for constant tensors (float arrays, int arrays, or
        `QuantizedTensor` for int8 weights) and initial values of variable tensors.
      signature_key: name of the signature def ("serving_default").
      signature_names: (input names, output names) of the signature def, in subgraph
        order; None uses the tensor names.
      runtime: whose integer kernels `apply` reproduces where runtimes differ:
        ``"litert"`` or ``"tflite-micro"``. Float and hybrid models run the same in both.
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        operators: Sequence[Operator],
        inputs: Sequence[int],
        outputs: Sequence[int],
        constants: Mapping[int, Any],
        signature_key: str = "serving_default",
        signature_names: tuple[Sequence[str], Sequence[str]] | None = None,
        runtime: str = "litert",
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        self.runtime = runtime
        self.tensors = tuple(tensors)
        self.operators = tuple(operators)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.signature_key = signature_key
        if signature_names is None:
            signature_names = (
                [self.tensors[i].name for i in self.inputs],
                [self.tensors[i].name for i in self.outputs],
            )
        self.signature_names = (tuple(signature_names[0]), tuple(signature_names[1]))
        if tuple(map(len, self.signature_names)) != (len(self.inputs), len(self.outputs)):
            raise ValueError(
                f"signature_names has {tuple(map(len, self.signature_names))} (inputs, outputs) "
                f"names, expected {(len(self.inputs), len(self.outputs))}"
            )
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"tensor names must be unique; repeated: {dup[:5]}")
        self._constants = dict(constants)
        self._variables = tuple(i for i, t in enumerate(self.tensors) if t.is_variable)
        # Weights (float or int8-quantized) are params; integer constants (shapes, axes,
        # slice bounds) are structure and stay static under jit.
        self._weight_indices = tuple(
            i
            for i in sorted(self._constants)
            if not self.tensors[i].is_variable
            and (self.tensors[i].dtype.startswith("float") or self.tensors[i].scale is not None)
        )

    # -- the public contract -------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        return [self.tensors[i].name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [self.tensors[i].name for i in self.outputs]

    @property
    def params(self) -> dict[str, Any]:
        """The constant tensors (weights) by name, as a pytree."""
        return {self.tensors[i].name: self._constants[i] for i in self._weight_indices}

    def init_state(self, batch_size: int | None = None) -> dict[str, jax.Array]:
        """The variable tensors at their initial values: zeros (an int8 tensor's zero point,
        real 0, as LiteRT and TFLite Micro reset them) unless the file stores any.

        Args:
          batch_size: the batch for state tensors whose first dimension is dynamic (-1);
            defaults to 1, the size TFLite allocates for a dynamic dimension.

        Raises:
          ValueError: a state tensor would have more than `MAX_STATE_ELEMENTS` elements.
        """
        state = {}
        for i in self._variables:
            t = self.tensors[i]
            shape = tuple((batch_size or 1) if d < 0 else d for d in t.shape)
            if math.prod(shape) > MAX_STATE_ELEMENTS:
                raise ValueError(
                    f"state tensor {t.name!r} would have shape {list(shape)} ({math.prod(shape)} "
                    f"elements), more than the {MAX_STATE_ELEMENTS} jaxlstm allocates; check the "
                    "tensor's shape in the file and batch_size"
                )
            init = self._constants.get(i)
            if init is None or tuple(np.shape(init)) != shape:
                init = np.full(shape, t.zero_point if t.dtype == "int8" else 0, t.dtype)
            state[t.name] = jnp.asarray(init)
        return state

    def apply(
        self, params: Mapping[str, Any], state: Mapping[str, jax.Array], *inputs: jax.Array
    ) -> tuple[list[jax.Array], dict[str, jax.Array]]:
        """Runs the subgraph; pure and jittable.

        Args:
          params: the constant tensors by name (as `Model.params`).
          state: the variable tensors by name (as `Model.init_state()`).
          *inputs: the subgraph inputs in `input_names` order.

        Returns:
          (outputs in `output_names` order, the updated state), like one LiteRT `invoke`.
        """
        from jaxlstm.model.kernels import KernelContext, run_operator

        if len(inputs) != len(self.inputs):
            raise TypeError(f"the model takes {len(self.inputs)} inputs {self.input_names}, got {len(inputs)}")
        values: dict[int, Any] = {}
        for i, v in self._constants.items():
            if i in self._weight_indices:
                values[i] = params[self.tensors[i].name]
            elif not self.tensors[i].is_variable:
                values[i] = v
        for i in self._variables:
            values[i] = state[self.tensors[i].name]
        for i, x in zip(self.inputs, inputs):
            values[i] = jnp.asarray(x)
        context = KernelContext(self.tensors, self.runtime)
        for position, op in enumerate(self.operators):
            args = [None if i == NO_TENSOR else values[i] for i in op.inputs]
            try:
                outputs, updates = run_operator(op, args, context)
            except (ValueError, TypeError, NotImplementedError) as e:
                raise type(e)(f"operator {position} ({op.opcode}): {e}") from None
            except (IndexError, KeyError, ArithmeticError) as e:  # malformed operands
                raise ValueError(f"operator {position} ({op.opcode}): invalid operands: {e!r}") from e
            for i, v in zip(op.outputs, outputs):
                values[i] = v
            for slot, v in updates.items():
                values[op.inputs[slot]] = v
        new_state = {self.tensors[i].name: values[i] for i in self._variables}
        return [values[i] for i in self.outputs], new_state

    def __call__(self, *inputs: jax.Array) -> list[jax.Array]:
        """Runs from a fresh state (`init_state`), like a newly allocated interpreter."""
        batch = None
        if inputs and self.inputs:
            first = self.inputs[0]
            axis = self.batch_axes().get(first, 0)
            if len(self.tensors[first].shape) > axis and self.tensors[first].shape[axis] < 0:
                batch = int(np.shape(inputs[0])[axis])
        outputs, _ = self.apply(self.params, self.init_state(batch), *inputs)
        return outputs

    def batch_axes(self) -> dict[int, int]:
        """{tensor index: batch axis} for tensors whose batch axis is not 0.

        The batch is axis 1 only for the sequence tensors of time-major recurrent ops
        (their input, aux input and outputs); every other tensor has it first.
        """
        axes = {}
        for op in self.operators:
            if op.opcode in _SEQUENCE_OPS and op.option("time_major", False):
                aux = _SEQUENCE_OPS[op.opcode]
                for i in (op.inputs[0], *(op.inputs[a] for a in aux if a < len(op.inputs)), *op.outputs):
                    if i != NO_TENSOR:
                        axes[i] = 1
        return axes

    @property
    def constants(self) -> dict[int, Any]:
        """{tensor index: stored value} of constant tensors and initialized variables."""
        return dict(self._constants)

    def replace(self, **changes: Any) -> Model:
        """A copy with constructor arguments replaced (``tensors=``, ``operators=``, ...)."""
        args = {
            "tensors": self.tensors,
            "operators": self.operators,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "constants": self._constants,
            "signature_key": self.signature_key,
            "signature_names": self.signature_names,
            "runtime": self.runtime,
        }
        args.update(changes)
        return Model(**args)

    def constant(self, name: str) -> Any:
        """The stored value of constant or variable tensor `name`."""
        for i, t in enumerate(self.tensors):
            if t.name == name:
                return self._constants.get(i)
        raise KeyError(name)

    def with_params(self, params: Mapping[str, Any]) -> Model:
        """A copy whose constant tensors take the values in `params` (e.g. after training)."""
        constants = dict(self._constants)
        index = {t.name: i for i, t in enumerate(self.tensors)}
        for name, v in params.items():
            constants[index[name]] = v
        return self.replace(constants=constants)

    @property
    def opcodes(self) -> list[str]:
        return [op.opcode for op in self.operators]

    def __repr__(self) -> str:
        return f"Model(inputs={self.input_names}, outputs={self.output_names}, operators={self.opcodes})"


# Sequence ops with a time_major option -> input positions of their aux (sequence) input.
_SEQUENCE_OPS = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (),
    "BIDIRECTIONAL_SEQUENCE_LSTM": (39,),
    "UNIDIRECTIONAL_SEQUENCE_RNN": (),
    "BIDIRECTIONAL_SEQUENCE_RNN": (9,),
}


def is_quantized(value: Any) -> bool:
    return isinstance(value, QuantizedTensor)
