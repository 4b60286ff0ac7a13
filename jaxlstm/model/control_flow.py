"""The WHILE operator (tflite/kernels/while.cc): a loop over two subgraphs, run as `lax.scan`
when the graph fixes its trip count, else as a bounded `lax.while_loop`.

A WHILE hands its inputs, the loop carries, to its cond subgraph, which returns one bool;
while that is true, the body subgraph maps the carries to their next values. The WHILE's
outputs are the last carries. TensorFlow's converter writes each Keras 3 recurrent layer
this way: the cond is ``LOGICAL_AND(LESS(time, T), LESS(counter, T))`` and the body one cell
step that adds 1 to both counters (and writes its output into a [T, B, H] buffer carry).

`analyze_while` reads the trip count off the graph, never by running it: when the cond is
``LESS(carry, constant)`` (or LESS_EQUAL, or GREATER / GREATER_EQUAL with the constant
first), or a LOGICAL_AND of such comparisons, and each compared carry starts at a constant
and the body adds a positive constant to it, the loop runs a known number of times: it
becomes `lax.scan` of that length, differentiable like any scan. Otherwise it runs as a
`lax.while_loop` of at most `MAX_WHILE_ITERATIONS` iterations, which JAX cannot
differentiate in reverse mode: `jax.grad` through it raises NotImplementedError, and a loop
that reaches the cap raises ValueError when run eagerly (under `jax.jit`, where no
exception can depend on values, its float outputs become NaN instead). Carries that the body
passes through unchanged (the input sequence) are closed over rather than carried.

`check_loops` runs at load time: a loop that provably never ends (a constant true cond, a
counter that does not move), a body whose outputs differ in shape or dtype from its inputs,
and carry counts that do not match are ValueErrors naming the operator and subgraphs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlstm._text import operator_location
from jaxlstm.model.kernels import KernelContext, kernel
from jaxlstm.model.operators import NO_TENSOR
from jaxlstm.ops._quant import QuantizedTensor

if TYPE_CHECKING:
    from jaxlstm.model.graph import Model, Operator, Subgraph

# The most iterations of a loop whose trip count the graph does not fix (a bounded loop).
MAX_WHILE_ITERATIONS = 2**20
# Comparisons a loop counter may stand in: opcode -> (the counter's side, inclusive bound).
# GREATER(bound, counter) is LESS(counter, bound).
_COMPARISONS = {"LESS": (0, False), "LESS_EQUAL": (0, True), "GREATER": (1, False), "GREATER_EQUAL": (1, True)}


@dataclasses.dataclass(frozen=True)
class LoopCounter:
    """A carry that ends the loop: it starts at `start`, the body adds `step` to it, and the
    cond requires it to stay below `bound` (at most `bound` if `inclusive`)."""

    carry: int
    start: int
    step: int
    bound: int
    inclusive: bool

    @property
    def trip_count(self) -> int | None:
        """How many iterations the counter allows; None if it never stops the loop (step 0)."""
        room = self.bound + int(self.inclusive) - self.start  # iteration k runs while k * step < room
        if room <= 0:
            return 0
        return None if self.step == 0 else -(-room // self.step)


@dataclasses.dataclass(frozen=True)
class WhileLoop:
    """What `analyze_while` proves about one WHILE operator.

    Attributes:
      cond: the cond subgraph's index.
      body: the body subgraph's index.
      trip_count: how many times the body runs, when the graph fixes it (`lax.scan`); None
        otherwise (a bounded `lax.while_loop`).
      counters: the loop counters the trip count comes from (empty when it is None).
      invariant: the carry positions whose body output is the body input itself.
    """

    cond: int
    body: int
    trip_count: int | None
    counters: tuple[LoopCounter, ...]
    invariant: tuple[int, ...]


def analyze_while(model: Model, op: Operator, starts: Sequence[Any]) -> WhileLoop:
    """The structure and trip count of a WHILE operator of `model`.

    Args:
      model: the model whose subgraphs the operator calls.
      op: the WHILE operator.
      starts: the operator's input values where they are known before it runs (NumPy
        constants), else None.

    Raises:
      ValueError: no WhileOptions, cond and body the same subgraph, carry counts that do not
        match, or a loop that provably never ends.
    """
    cond_index, body_index = op.option("cond_subgraph_index"), op.option("body_subgraph_index")
    if cond_index is None or body_index is None:
        raise ValueError("the WHILE has no WhileOptions (cond_subgraph_index, body_subgraph_index)")
    if cond_index == body_index:
        raise ValueError(f"cond and body are the same subgraph {cond_index}")
    cond, body = model.subgraph(cond_index), model.subgraph(body_index)
    n = len(op.inputs)
    counts = {
        "outputs": len(op.outputs),
        f"cond subgraph {cond_index} inputs": len(cond.inputs),
        f"body subgraph {body_index} inputs": len(body.inputs),
        f"body subgraph {body_index} outputs": len(body.outputs),
    }
    wrong = [f"{count} {what}" for what, count in counts.items() if count != n]
    if wrong:
        raise ValueError(f"{n} loop carries (inputs) but {', '.join(wrong)}; each must be one per carry")
    if len(cond.outputs) != 1:
        raise ValueError(f"cond subgraph {cond_index} has {len(cond.outputs)} outputs; a WHILE cond returns one bool")
    invariant = tuple(k for k in range(n) if body.outputs[k] == body.inputs[k])
    counters = _counters(cond, body, starts)
    if counters is None:
        return WhileLoop(cond_index, body_index, None, (), invariant)
    trips = [c.trip_count for c in counters if not isinstance(c, bool)]
    if False in counters:
        trip_count = 0  # a constant false term: the body never runs
    elif any(t is not None for t in trips):
        trip_count = min(t for t in trips if t is not None)
    else:
        what = "its cond is constant true" if not trips else "its counters do not move toward their bounds"
        raise ValueError(
            f"the loop never ends: {what} (cond subgraph {cond_index}, body subgraph {body_index}: "
            f"{_describe(counters)})"
        )
    counters = tuple(c for c in counters if not isinstance(c, bool))
    return WhileLoop(cond_index, body_index, trip_count, counters, invariant)


def check_loops(model: Model) -> None:
    """Load-time checks of every WHILE operator of `model` (`analyze_while`, and that the
    declared shapes and dtypes of each carry agree on both sides of the loop).

    Raises:
      ValueError: the first problem, naming the operator and the subgraph.
    """
    for k in range(1 + len(model.subgraphs)):
        graph = model.subgraph(k)
        constants = graph.constants
        for position, op in enumerate(graph.operators):
            if op.opcode != "WHILE":
                continue
            try:
                loop = analyze_while(model, op, [constants.get(i) for i in op.inputs])
                _check_carries(model, graph, op, loop)
            except ValueError as e:
                raise ValueError(f"{operator_location(k, position, op.opcode)}: {e}") from e


@kernel("WHILE")
def _while(op: Operator, args: list, context: KernelContext):
    """tflite/kernels/while.cc: the carries through cond and body until cond is false."""
    model = context.model
    if model is None:
        raise NotImplementedError("a WHILE runs only inside a Model (Model.apply), which holds its subgraphs")
    loop = analyze_while(model, op, [a if isinstance(a, np.ndarray) else None for a in args])
    if any(isinstance(a, QuantizedTensor) for a in args):
        raise NotImplementedError("quantized loop carries are not supported")
    moving = tuple(k for k in range(len(args)) if k not in loop.invariant)
    init = tuple(jnp.asarray(args[k]) for k in moving)
    if loop.trip_count is not None:

        def step(values: tuple, _):
            return _body_step(model, loop, context.params, _carries(args, moving, values), values, moving), None

        final, _ = jax.lax.scan(step, init, None, length=loop.trip_count)
    else:
        final = _bounded_loop(model, loop, args, moving, init, context.params)
    return _carries(args, moving, final), {}


# ----------------------------------------------------------------------------- internals


def _carries(args: Sequence[Any], moving: Sequence[int], values: Sequence[Any]) -> list[Any]:
    """All carries: `args` with the moving positions replaced by `values`."""
    full = list(args)
    for k, v in zip(moving, values):
        full[k] = v
    return full


def _body_step(
    model: Model, loop: WhileLoop, params: Mapping[str, Any], carries: list, values: tuple, moving: Sequence[int]
) -> tuple:
    """One run of the body: the next values of the moving carries, checked against these."""
    outputs = model.call_subgraph(loop.body, params, *carries)
    body = model.subgraph(loop.body)
    result = []
    for k, old in zip(moving, values):
        new = outputs[k]
        if isinstance(new, QuantizedTensor):
            raise NotImplementedError("quantized loop carries are not supported")
        new = jnp.asarray(new)
        if new.shape != old.shape or new.dtype != old.dtype:
            raise ValueError(
                f"body subgraph {loop.body} output {k} ({body.tensors[body.outputs[k]].name!r}) is "
                f"{_type_text(new.dtype, new.shape)}, but loop carry {k} is {_type_text(old.dtype, old.shape)}; "
                "a carry keeps its shape and dtype from one iteration to the next"
            )
        result.append(new)
    return tuple(result)


def _truth(model: Model, loop: WhileLoop, value: Any) -> jax.Array:
    """The cond's output as a bool scalar."""
    value = jnp.asarray(value)
    if value.dtype != jnp.bool_ or value.size != 1:
        raise ValueError(
            f"cond subgraph {loop.cond} returns {_type_text(value.dtype, value.shape)}; a WHILE cond returns one bool"
        )
    return value.reshape(())


def _bounded_loop(
    model: Model, loop: WhileLoop, args: Sequence[Any], moving: Sequence[int], init: tuple, params: Mapping[str, Any]
) -> tuple:
    """`lax.while_loop` of at most MAX_WHILE_ITERATIONS iterations (module docstring).

    Everything the loop reads that may be traced (the moving carries, traced invariant
    carries, params) is an argument of a `jax.custom_vjp` whose backward rule raises, so
    that `jax.grad` says why it cannot differentiate the loop.
    """
    cap = MAX_WHILE_ITERATIONS
    traced = tuple(k for k in loop.invariant if not isinstance(args[k], np.ndarray))

    def cond_value(carries: list, params: Mapping[str, Any]) -> jax.Array:
        return _truth(model, loop, model.call_subgraph(loop.cond, params, *carries)[0])

    def run(init: tuple, fixed: tuple, params: Mapping[str, Any]) -> tuple[tuple, jax.Array]:
        def carries(values: tuple) -> list:
            return _carries(_carries(args, traced, fixed), moving, values)

        def body_fn(state: tuple) -> tuple:
            count, values = state
            return count + 1, _body_step(model, loop, params, carries(values), values, moving)

        def cond_fn(state: tuple) -> jax.Array:
            count, values = state
            return (count < cap) & cond_value(carries(values), params)

        count, final = jax.lax.while_loop(cond_fn, body_fn, (jnp.int32(0), init))
        return final, (count >= cap) & cond_value(carries(final), params)

    def backward(residuals, cotangents):
        raise NotImplementedError(
            f"the WHILE loop of cond subgraph {loop.cond} and body subgraph {loop.body} has no static trip count "
            "(its cond is not LESS(counter, constant) with counters that start at constants and step by "
            "constants), so jaxlstm runs it as a bounded lax.while_loop, which JAX cannot differentiate in "
            "reverse mode (jax.grad, jax.vjp)"
        )

    differentiable = jax.custom_vjp(run)
    differentiable.defvjp(lambda *a: (run(*a), None), backward)
    final, capped = differentiable(init, tuple(args[k] for k in traced), dict(params))
    try:
        hit_cap = bool(capped)
    except jax.errors.ConcretizationTypeError:  # traced (under jit): the outputs say it
        return tuple(jnp.where(capped, jnp.nan, v) if jnp.issubdtype(v.dtype, jnp.floating) else v for v in final)
    if hit_cap:
        raise ValueError(
            f"the loop (cond subgraph {loop.cond}, body subgraph {loop.body}) did not end within "
            f"{cap} iterations (jaxlstm.model.control_flow.MAX_WHILE_ITERATIONS); its trip count is not static"
        )
    return final


def _producer(graph: Subgraph, tensor: int) -> Operator | None:
    """The last operator of `graph` that writes `tensor`, or None."""
    for op in reversed(graph.operators):
        if tensor in op.outputs:
            return op
    return None


def _int_scalar(value: Any) -> int | None:
    """A known integer scalar (shape [] or [1]) as an int, else None."""
    if not isinstance(value, np.ndarray) or value.size != 1 or not np.issubdtype(value.dtype, np.integer):
        return None
    return int(value.reshape(()))


def _conjunction(graph: Subgraph, tensor: int, seen: frozenset = frozenset()) -> list | None:
    """The cond output `tensor` as a conjunction: a list of constant bools and
    (carry position, bound, inclusive) comparisons; None if it is anything else."""
    constants = graph.constants
    if tensor in constants:
        value = np.asarray(constants[tensor])
        return [bool(value.reshape(()))] if value.dtype == np.bool_ and value.size == 1 else None
    op = _producer(graph, tensor)
    if op is None or tensor in seen:
        return None
    if op.opcode == "LOGICAL_AND" and len(op.inputs) == 2:
        parts = [_conjunction(graph, t, seen | {tensor}) for t in op.inputs]
        return None if None in parts else parts[0] + parts[1]
    if op.opcode not in _COMPARISONS or len(op.inputs) != 2:
        return None
    side, inclusive = _COMPARISONS[op.opcode]
    counter, bound = op.inputs[side], op.inputs[1 - side]
    limit = _int_scalar(constants.get(bound))
    if counter not in graph.inputs or _producer(graph, counter) is not None or limit is None:
        return None
    return [(graph.inputs.index(counter), limit, inclusive)]


def _step(body: Subgraph, carry: int) -> int | None:
    """What the body adds to carry `carry` each iteration: 0 when it passes it through, the
    constant c of ``ADD(carry, c)``; None for anything else."""
    source, result = body.inputs[carry], body.outputs[carry]
    if _producer(body, source) is not None:
        return None
    if result == source:
        return 0
    op = _producer(body, result)
    if op is None or op.opcode != "ADD" or op.option("fused_activation_function", "NONE") != "NONE":
        return None
    if len(op.inputs) != 2 or source not in op.inputs:
        return None
    other = op.inputs[1] if op.inputs[0] == source else op.inputs[0]
    return _int_scalar(body.constants.get(other))


def _counters(cond: Subgraph, body: Subgraph, starts: Sequence[Any]) -> list | None:
    """The cond's terms as constant bools and `LoopCounter`s, or None if the graph does
    not fix the trip count (a term of another form, a counter that does not start at a
    constant or steps by a non-constant or negative amount, or one that could wrap around)."""
    terms = _conjunction(cond, cond.outputs[0])
    if terms is None:
        return None
    result = []
    for term in terms:
        if isinstance(term, bool):
            result.append(term)
            continue
        carry, bound, inclusive = term
        start, step = _int_scalar(starts[carry]), _step(body, carry)
        if start is None or step is None or step < 0:
            return None
        counter = LoopCounter(carry, start, step, bound, inclusive)
        trips = counter.trip_count
        if trips is not None and start + trips * step > np.iinfo(starts[carry].dtype).max:
            return None  # the counter would wrap around before it reaches the bound
        result.append(counter)
    return result


def _describe(terms: list) -> str:
    parts = []
    for term in terms:
        if isinstance(term, bool):
            parts.append(f"constant {term}")
        else:
            comparison = "<=" if term.inclusive else "<"
            parts.append(
                f"carry {term.carry} starts at {term.start}, steps by {term.step}, runs while {comparison} {term.bound}"
            )
    return "; ".join(parts) or "no terms"


def _type_text(dtype: Any, shape: Sequence[int]) -> str:
    """``float32[2, 4]``: a dtype (a name, as `Tensor.dtype`, or an array dtype) and a shape."""
    return f"{dtype if isinstance(dtype, str) else jnp.dtype(dtype).name}{list(shape)}"


def _check_carries(model: Model, graph: Subgraph, op: Operator, loop: WhileLoop) -> None:
    """The declared dtype and shape of each carry agree at the WHILE's inputs, the body's
    inputs and outputs and the WHILE's outputs (-1 matches any size); the cond returns a bool."""
    cond, body = model.subgraph(loop.cond), model.subgraph(loop.body)
    out = cond.tensors[cond.outputs[0]]
    if out.dtype != "bool" or len(out.shape) > 1 or _size(out.shape) not in (1, -1):
        raise ValueError(f"cond subgraph {loop.cond} returns {_type_text(out.dtype, out.shape)}; expected one bool")
    for k in range(len(op.inputs)):
        if op.inputs[k] == NO_TENSOR:
            raise ValueError(f"loop carry {k} has no input tensor")
        sides = [
            ("the WHILE's input", graph.tensors[op.inputs[k]]),
            (f"cond subgraph {loop.cond} input", cond.tensors[cond.inputs[k]]),
            (f"body subgraph {loop.body} input", body.tensors[body.inputs[k]]),
            (f"body subgraph {loop.body} output", body.tensors[body.outputs[k]]),
            ("the WHILE's output", graph.tensors[op.outputs[k]]),
        ]
        (first, reference), *others = sides
        for what, t in others:
            if t.dtype != reference.dtype or not _shapes_agree(t.shape, reference.shape):
                raise ValueError(
                    f"loop carry {k} is {_type_text(reference.dtype, reference.shape)} ({first} {reference.name!r}) "
                    f"but {_type_text(t.dtype, t.shape)} as {what} {t.name!r}; a carry keeps its shape and dtype "
                    "from one iteration to the next"
                )


def _shapes_agree(a: Sequence[int], b: Sequence[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def _size(shape: Sequence[int]) -> int:
    """The element count of a declared shape; -1 if a dimension is dynamic."""
    return -1 if any(d < 0 for d in shape) else int(np.prod(shape, dtype=np.int64))
