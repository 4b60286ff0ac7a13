"""The model: a TFLite model's subgraphs held in Python and run in JAX.

A `Model` is the meeting point of the library: the `.tflite` importer produces one, the
converters and Flax modules build one (`ModelBuilder`), the exporter serializes one, and
`apply` runs it with the `jaxlstm.ops` kernels, purely and differentiably.

    m.params                       # {tensor name: array | QuantizedTensor}, the constants
    outputs = m(*inputs)           # any batch: the state starts at zero, like Keras predict
    outputs, state = m.apply(m.params, None, *inputs)     # the same, pure: returns the new state
    outputs, state = m.apply(m.params, state, *inputs)    # continues from `state` (streaming)
    state = m.init_state(batch_size=B)                    # {tensor name: zeros}, the variable tensors

The model's own tensors and operators are the file's main subgraph (subgraph 0). Operators
such as WHILE call other subgraphs by their index in the file (``cond_subgraph_index``,
``body_subgraph_index``): those are `Subgraph` objects in `Model.subgraphs`, and
``m.subgraph(k)`` gives subgraph k (0: the main one). Their weights are params too, named
``subgraph_<k>/<tensor name>`` (`param_name`), so `jax.grad` over `m.params` reaches the
weights inside a loop body.

Besides the TFLite builtin operators, a model may hold a ``GRU`` operator (its inputs:
``jaxlstm.model.operators.OPERATORS["GRU"]``):
TFLite has no GRU, so the exporter unrolls it into builtin operators over a fixed length
(`jaxlstm.model.builder.unroll_gru`), while in JAX it runs `jaxlstm.ops.gru` at any length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._text import located, operator_location
from jaxlstm.model.operators import GRU as GRU
from jaxlstm.model.operators import NO_TENSOR, OPERATORS, batch_axis, state_slots
from jaxlstm.model.runtime import KernelContext, run_operator
from jaxlstm.ops.lstm_integer import RUNTIMES

# The most elements `Model.init_state` allocates for one state tensor (1 GiB of float32),
# far beyond any real recurrent state: a larger one comes from a corrupt shape or batch_size.
MAX_STATE_ELEMENTS = 2**28
# Options that name a subgraph by its index in the file (WhileOptions.cond_subgraph_index, ...).
SUBGRAPH_OPTION_SUFFIX = "_subgraph_index"


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


def param_name(subgraph: int, tensor_name: str) -> str:
    """The `Model.params` key of a weight of subgraph `subgraph` (> 0); the main subgraph's
    weights keep their tensor names."""
    return f"subgraph_{subgraph}/{tensor_name}"


def weight_indices(tensors: Sequence[Tensor], constants: Mapping[int, Any]) -> tuple[int, ...]:
    """The indices of the weights among `constants`: float or quantized integer constants.
    Plain integer constants (shapes, axes, slice bounds) are structure and stay static under jit."""
    return tuple(
        i
        for i in sorted(constants)
        if not tensors[i].is_variable and (tensors[i].dtype.startswith("float") or tensors[i].scale is not None)
    )


def subgraph_references(op: Operator) -> list[tuple[str, int]]:
    """(option, subgraph index) of each subgraph `op` calls, e.g. a WHILE's
    ``cond_subgraph_index`` and ``body_subgraph_index``."""
    return [(k, v) for k, v in op.options if k.endswith(SUBGRAPH_OPTION_SUFFIX)]


class Subgraph:
    """A subgraph that operators call by index (a WHILE's cond or body subgraph).

    Args:
      tensors, operators, inputs, outputs, constants: as in `Model` (inputs and outputs are
        what the calling operator passes in and gets back, in order).
      name: the subgraph's name in the file.

    Raises:
      ValueError: tensor names are not unique.
    """

    def __init__(
        self,
        tensors: Sequence[Tensor],
        operators: Sequence[Operator],
        inputs: Sequence[int],
        outputs: Sequence[int],
        constants: Mapping[int, Any],
        name: str = "",
    ):
        self.tensors = tuple(tensors)
        self.operators = tuple(operators)
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.name = name
        _check_unique_names(self.tensors)
        self._constants = dict(constants)
        self.weight_indices = weight_indices(self.tensors, self._constants)

    @property
    def constants(self) -> dict[int, Any]:
        """{tensor index: stored value} of the constant tensors (and initialized variables)."""
        return dict(self._constants)

    @property
    def opcodes(self) -> list[str]:
        return [op.opcode for op in self.operators]

    def replace(self, **changes: Any) -> Subgraph:
        """A copy with constructor arguments replaced (``operators=``, ...)."""
        args = {
            "tensors": self.tensors,
            "operators": self.operators,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "constants": self._constants,
            "name": self.name,
        }
        args.update(changes)
        return Subgraph(**args)

    def __repr__(self) -> str:
        return f"Subgraph({self.name!r}, inputs={list(self.inputs)}, outputs={list(self.outputs)}, operators={self.opcodes})"


class Model(Subgraph):
    """A TFLite model that runs in JAX: its main subgraph (a `Subgraph` named "main", with
    the signature, state and runtime), and the subgraphs its operators call (see the module
    docstring).

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
      stateful: what `export_tflite` writes by default: False (predict) zeroes the
        recurrent state at the start of every invoke; True (streaming) keeps it from one
        invoke to the next. Built and converted models are predict models; `load_tflite`
        sets it to what the file does.
      runtime: whose integer kernels `apply` reproduces where runtimes differ:
        ``"litert"`` or ``"tflite-micro"``. Float and hybrid models run the same in both.
      subgraphs: the file's other subgraphs, 1, 2, ... in order, which operators call by
        index (a WHILE's cond and body).

    Raises:
      ValueError: repeated tensor or param names, or an operator that calls a subgraph out
        of range or one that calls itself again (a cycle).
      NotImplementedError: a variable tensor outside the main subgraph.
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
        stateful: bool = False,
        runtime: str = "litert",
        subgraphs: Sequence[Subgraph] = (),
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        super().__init__(tensors, operators, inputs, outputs, constants, name="main")
        self.runtime = runtime
        self.stateful = bool(stateful)
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
        self._variables = tuple(i for i, t in enumerate(self.tensors) if t.is_variable)
        self.subgraphs = tuple(subgraphs)
        for k, graph in enumerate(self.subgraphs, 1):
            variables = [t.name for t in graph.tensors if t.is_variable]
            if variables:
                raise NotImplementedError(
                    f"subgraph {k} has variable tensors {variables[:3]}; jaxlstm keeps state tensors in the "
                    "main subgraph only"
                )
        if self.subgraphs or any(subgraph_references(op) for op in self.operators):
            self._check_subgraph_calls()
            taken = {self.tensors[i].name for i in self.weight_indices}
            clashes = sorted(taken.intersection(name for name, _, _ in self._subgraph_weights()))
            if clashes:
                raise ValueError(f"main subgraph tensor names clash with the names of subgraph weights: {clashes[:3]}")

    # -- the public contract -------------------------------------------------------------

    @property
    def input_names(self) -> list[str]:
        return [self.tensors[i].name for i in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [self.tensors[i].name for i in self.outputs]

    @property
    def params(self) -> dict[str, Any]:
        """The constant tensors (weights) by name, as a pytree: the main subgraph's under
        their tensor names, then those of every other subgraph (`param_name`)."""
        params = {self.tensors[i].name: self._constants[i] for i in self.weight_indices}
        params.update((name, graph._constants[i]) for name, graph, i in self._subgraph_weights())
        return params

    def subgraph(self, index: int) -> Subgraph:
        """Subgraph `index` of the file: 0 is the main one (this model's own tensors and
        operators), 1, 2, ... are `Model.subgraphs`.

        Raises:
          IndexError: no such subgraph.
        """
        if index == 0:
            return Subgraph(self.tensors, self.operators, self.inputs, self.outputs, self._constants, "main")
        if not 0 < index <= len(self.subgraphs):
            raise IndexError(f"subgraph {index} out of range: the model has {1 + len(self.subgraphs)} subgraphs")
        return self.subgraphs[index - 1]

    def _subgraph_weights(self) -> Iterator[tuple[str, Subgraph, int]]:
        """(param name, subgraph, tensor index) of each weight outside the main subgraph."""
        for k, graph in enumerate(self.subgraphs, 1):
            for i in graph.weight_indices:
                yield param_name(k, graph.tensors[i].name), graph, i

    def _check_subgraph_calls(self) -> None:
        """Every subgraph an operator calls exists, and none calls itself again (directly or
        through others), which would recurse forever."""
        count = 1 + len(self.subgraphs)
        calls: dict[int, list[tuple[str, str, int]]] = {}  # subgraph -> (calling operator, option, callee)
        for k, graph in enumerate((self, *self.subgraphs)):
            for position, op in enumerate(graph.operators):
                for option, callee in subgraph_references(op):
                    where = operator_location(k, position, op.opcode)
                    if not isinstance(callee, int) or not 0 <= callee < count:
                        raise ValueError(
                            f"{where}: {option} {callee} refers to no subgraph; the model has subgraphs 0 to {count - 1}"
                        )
                    calls.setdefault(k, []).append((where, option, callee))
        done: set[int] = set()

        def visit(k: int, path: list[int]) -> None:
            for where, option, callee in calls.get(k, ()):
                if callee in path:
                    cycle = " -> ".join(map(str, [*path[path.index(callee) :], callee]))
                    raise ValueError(
                        f"{where}: {option} {callee} calls subgraph {callee} again while it runs (cycle {cycle}); "
                        "subgraphs must not call themselves"
                    )
                if callee not in done:
                    visit(callee, [*path, callee])
            done.add(k)

        for k in range(count):
            if k not in done:
                visit(k, [k])

    def init_state(self, batch_size: int | None = None) -> dict[str, jax.Array]:
        """The variable tensors at their initial values: zeros (an int8 tensor's zero point,
        real 0, as LiteRT and TFLite Micro reset them) unless the file stores any.

        Args:
          batch_size: the batch for state tensors whose batch dimension is dynamic (-1);
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
        self, params: Mapping[str, Any], state: Mapping[str, jax.Array] | None, *inputs: jax.Array
    ) -> tuple[list[jax.Array], dict[str, jax.Array]]:
        """Runs the model (its main subgraph, which may call the others); pure and jittable.

        Args:
          params: the constant tensors by name (as `Model.params`).
          state: the variable tensors by name, sized for the inputs' batch (as
            ``init_state(batch_size=B)`` or a previous call's new state); None starts
            from the initial state at the inputs' batch.
          *inputs: the subgraph inputs in `input_names` order; dimensions that are -1 in
            the input tensor's shape take any size.

        Returns:
          (outputs in `output_names` order, the updated state), like one LiteRT `invoke`.

        Raises:
          TypeError: the wrong number of inputs.
          ValueError: an input that does not fit its tensor's shape (rank or a static
            dimension), or a state whose batch is not the inputs'.
        """
        self.check_inputs(*inputs)
        if state is None:
            state = self.init_state(self.input_batch(*inputs))
        values = _bind_constants(self.tensors, self._constants, self.weight_indices, params, lambda name: name)
        for i in self._variables:
            values[i] = state[self.tensors[i].name]
        for i, x in zip(self.inputs, inputs):
            values[i] = jnp.asarray(x)
        self._run(0, self.tensors, self.operators, values, params)
        new_state = {self.tensors[i].name: values[i] for i in self._variables}
        return [values[i] for i in self.outputs], new_state

    def call_subgraph(self, index: int, params: Mapping[str, Any], *inputs: Any) -> list[Any]:
        """Runs subgraph `index` (> 0) on its `inputs`, its weights taken from `params` (as
        `Model.params`); returns its outputs. A WHILE runs its cond and body this way."""
        graph = self.subgraph(index)
        values = _bind_constants(
            graph.tensors, graph._constants, graph.weight_indices, params, lambda name: param_name(index, name)
        )
        values.update(zip(graph.inputs, inputs))
        self._run(index, graph.tensors, graph.operators, values, params)
        return [values[i] for i in graph.outputs]

    def _run(
        self,
        index: int,
        tensors: Sequence[Tensor],
        operators: Sequence[Operator],
        values: dict[int, Any],
        params: Mapping[str, Any],
    ) -> None:
        """Runs the operators of subgraph `index` on `values` ({tensor index: value}, updated)."""
        context = KernelContext(tensors, self.runtime, self, params)
        for position, op in enumerate(operators):
            args = [None if i == NO_TENSOR else values[i] for i in op.inputs]
            if index == 0:
                self._check_state_batch(position, op, args)
            try:
                outputs, updates = run_operator(op, args, context)
            except (ValueError, TypeError, NotImplementedError) as e:
                raise located(operator_location(index, position, op.opcode), e) from e
            except (IndexError, KeyError, ArithmeticError) as e:  # malformed operands
                raise ValueError(f"{operator_location(index, position, op.opcode)}: invalid operands: {e!r}") from e
            for i, v in zip(op.outputs, outputs):
                values[i] = v
            for slot, v in updates.items():
                values[op.inputs[slot]] = v

    def __call__(self, *inputs: jax.Array) -> list[jax.Array]:
        """Runs from the initial (zero) state at the inputs' batch, like Keras ``predict``."""
        outputs, _ = self.apply(self.params, None, *inputs)
        return outputs

    def check_inputs(self, *inputs: jax.Array) -> None:
        """Checks `inputs` against the input tensors: count, rank and static dimensions.

        Raises:
          TypeError: the wrong number of inputs.
          ValueError: an input of the wrong rank, or a size that differs from a static
            (not -1) dimension; the message names the input tensor and the dimension.
        """
        if len(inputs) != len(self.inputs):
            raise TypeError(f"the model takes {len(self.inputs)} inputs {self.input_names}, got {len(inputs)}")
        axes = self.batch_axes()
        for i, x in zip(self.inputs, inputs):
            t, shape = self.tensors[i], tuple(int(d) for d in np.shape(x))
            expected = f"input {t.name!r} has shape {list(t.shape)} (-1: any size), got an array of shape {shape}"
            if len(shape) != len(t.shape):
                raise ValueError(f"{expected}: rank {len(shape)}, expected rank {len(t.shape)}")
            for axis, (want, got) in enumerate(zip(t.shape, shape)):
                if want >= 0 and want != got:
                    got_text = _dimension_text(axis, len(shape), axes.get(i, 0), got)
                    raise ValueError(f"{expected}: {got_text}, expected {want}")

    def input_batch(self, *inputs: jax.Array) -> int | None:
        """The batch size of `inputs` (the first input's batch axis), or None if it has none."""
        if not inputs or not self.inputs:
            return None
        axis = self.batch_axes().get(self.inputs[0], 0)
        shape = np.shape(inputs[0])
        return int(shape[axis]) if len(shape) > axis else None

    def _check_state_batch(self, position: int, op: Operator, args: list) -> None:
        """A recurrent operator's state must hold one row per batch row of its input."""
        slots = state_slots(op)
        if not slots or args[0] is None:
            return
        x = args[0]
        axis = batch_axis(op)
        if np.ndim(x) <= axis:
            return
        n_batch = int(np.shape(x)[axis])
        for slot in slots:
            s = args[slot] if slot < len(args) else None
            if s is None or np.ndim(s) != 2 or np.shape(s)[0] == n_batch:
                continue  # a flat (1-D) state is checked by the kernel
            t = self.tensors[op.inputs[slot]]
            if t.shape[0] >= 0:
                fix = (
                    f"the model fixes this state at batch {t.shape[0]}: feed batch {t.shape[0]}, or "
                    "convert the model again with a dynamic batch (the converters' default)"
                )
            else:
                fix = (
                    f"pass a state sized for the batch, model.init_state(batch_size={n_batch}), or "
                    "state=None to start from zeros"
                )
            raise ValueError(
                f"state tensor {t.name!r} has batch {np.shape(s)[0]} (shape {list(np.shape(s))}) but "
                f"operator {position} ({op.opcode}) runs on batch {n_batch} (its input "
                f"{self.tensors[op.inputs[0]].name!r} has shape {list(np.shape(x))}); {fix}"
            )

    def batch_axes(self) -> dict[int, int]:
        """{tensor index: batch axis} for tensors whose batch axis is not 0.

        The batch is axis 1 only for the sequence tensors of time-major recurrent ops
        (their input, aux input and sequence outputs); every other tensor has it first.
        """
        axes = {}
        for op in self.operators:
            if batch_axis(op) == 1:
                sequences = (op.inputs[s] for s in OPERATORS[op.opcode].sequence_slots if s < len(op.inputs))
                for i in (*sequences, *op.outputs):
                    if i != NO_TENSOR and len(self.tensors[i].shape) == 3:
                        axes[i] = 1
        return axes

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
            "stateful": self.stateful,
            "runtime": self.runtime,
            "subgraphs": self.subgraphs,
        }
        args.update(changes)
        return Model(**args)

    def constant(self, name: str) -> Any:
        """The stored value of constant or variable tensor `name` (a weight of another
        subgraph by its param name)."""
        for i, t in enumerate(self.tensors):
            if t.name == name:
                return self._constants.get(i)
        for key, graph, i in self._subgraph_weights():
            if key == name:
                return graph._constants[i]
        raise KeyError(name)

    def with_params(self, params: Mapping[str, Any]) -> Model:
        """A copy whose constant tensors take the values in `params` (e.g. after training)."""
        constants = dict(self._constants)
        index = {t.name: i for i, t in enumerate(self.tensors)}
        elsewhere = {key: (graph, i) for key, graph, i in self._subgraph_weights()}
        changed: dict[Subgraph, dict[int, Any]] = {}
        for name, v in params.items():
            if name in elsewhere:
                graph, i = elsewhere[name]
                changed.setdefault(graph, graph.constants)[i] = v
            else:
                constants[index[name]] = v
        subgraphs = [g.replace(constants=changed[g]) if g in changed else g for g in self.subgraphs]
        return self.replace(constants=constants, subgraphs=subgraphs)

    def __repr__(self) -> str:
        more = f", subgraphs={len(self.subgraphs)}" if self.subgraphs else ""
        return f"Model(inputs={self.input_names}, outputs={self.output_names}, operators={self.opcodes}{more})"


def _check_unique_names(tensors: Sequence[Tensor]) -> None:
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"tensor names must be unique; repeated: {dup[:5]}")


def _bind_constants(
    tensors: Sequence[Tensor], constants: Mapping[int, Any], weights: Sequence[int], params: Mapping[str, Any], key
) -> dict[int, Any]:
    """{tensor index: value} of a subgraph's constants: its weights from `params` (under
    ``key(tensor name)``), its structural constants as stored."""
    values: dict[int, Any] = {}
    weight_set = set(weights)
    for i, v in constants.items():
        if i in weight_set:
            values[i] = params[key(tensors[i].name)]
        elif not tensors[i].is_variable:
            values[i] = v
    return values


def _dimension_text(axis: int, rank: int, batch_axis: int, size: int) -> str:
    """An input dimension in words: the batch, time steps or features of a sequence
    [B, T, F] (or [T, B, F]) or of a step [B, F], else the axis number."""
    names = {3: {batch_axis: "batch", 1 - batch_axis: "time", 2: "features"}, 2: {0: "batch", 1: "features"}}
    name = names.get(rank, {}).get(axis)
    if name == "batch":
        return f"batch {size}"
    if name == "time":
        return f"{size} time steps"
    if name == "features":
        return f"{size} features"
    return f"axis {axis} of size {size}"
