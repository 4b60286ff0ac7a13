"""WHILE loops built with `ModelBuilder`: the loop as `lax.scan` (static trip count) or a bounded
`lax.while_loop`, against a NumPy loop and LiteRT; gradients; malformed loops; DYNAMIC_UPDATE_SLICE
and the converter's sequence-write pattern it replaces. Real converter output: test_keras3_while.py."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.inspect import inspect_tflite
from jaxlstm.model import Model, ModelBuilder, control_flow
from jaxlstm.model.builder import Ref
from jaxlstm.model.control_flow import analyze_while
from jaxlstm.model.graph import options_tuple
from jaxlstm.model.rewrite import prune_unused_subgraphs
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite

STEPS, BATCH, FEATURES, UNITS = 4, 2, 3, 5
ATOL = 1e-6  # float32: the same products summed in another order
CARRIES = [((), "int32"), ((STEPS, BATCH, UNITS), "float32"), ((BATCH, UNITS), "float32")]
CARRIES.append(((STEPS, BATCH, FEATURES), "float32"))
WEIGHTS = {
    "w": np.random.default_rng(1).normal(size=(UNITS, FEATURES)).astype(np.float32),
    "u": np.random.default_rng(2).normal(size=(UNITS, UNITS)).astype(np.float32) * 0.5,
    "b": np.random.default_rng(3).normal(size=UNITS).astype(np.float32),
}


def _carries(b: ModelBuilder, bound: bool) -> list[Ref]:
    refs = [b.add_input(f"carry_{k}", shape, dtype) for k, (shape, dtype) in enumerate(CARRIES)]
    return refs + ([b.add_input("steps", (), "int32")] if bound else [])


def _cond(bound: bool, limit=STEPS):
    """``LESS(counter, limit)``; with `bound`, the limit is the carry ``steps``."""
    c = ModelBuilder()
    counter, *_, steps = _carries(c, bound)
    less = c.add_intermediate("less", (), "bool")
    limit_ref = steps if bound else c.add_constant("limit", np.asarray(limit, np.int32))
    c.add_operator("LESS", [counter, limit_ref], [less])
    return c.build_subgraph([less], "cond")


def _body(bound: bool, write: str = "dynamic_update_slice", step: int = 1, grow: bool = False):
    """One RNN step ``h = tanh(W x[counter] + b + U h)``, h written into the buffer at
    `counter` with DYNAMIC_UPDATE_SLICE, or with the SLICE / CONCATENATION pattern
    TensorFlow's converter writes (``write="slices"``). With `grow`, the h carry comes out
    as [h; h], declared [-1, UNITS]."""
    b = ModelBuilder()
    counter, buffer, h, x, *steps = _carries(b, bound)
    nxt = b.add_intermediate("counter_next", (), "int32")
    b.add_operator(
        "ADD", [counter, b.add_constant("step", np.asarray(step, np.int32))], [nxt], fused_activation_function="NONE"
    )
    x_t = b.add_intermediate("x_t", (BATCH, FEATURES))
    b.add_operator("GATHER", [x, counter], [x_t], axis=0, batch_dims=0)
    pre = b.add_fully_connected(x_t, WEIGHTS["w"], WEIGHTS["b"], name="input")
    rec = b.add_fully_connected(h, WEIGHTS["u"], None, name="recurrent")
    h_new = b.add_intermediate("h_next", (BATCH, UNITS))
    b.add_operator("TANH", [b.add_binary("ADD", pre, rec, "sum")], [h_new])
    row = b.add_intermediate("row", (1, BATCH, UNITS))
    b.add_operator("RESHAPE", [h_new, b.add_constant("row_shape", np.asarray([1, BATCH, UNITS], np.int32))], [row])

    def index_vector(scalar: Ref, rest: int, name: str) -> Ref:
        one = b.add_intermediate(f"{name}_1", (1,), "int32")
        b.add_operator("RESHAPE", [scalar, b.add_constant(f"{name}_shape", np.asarray([1], np.int32))], [one])
        out = b.add_intermediate(name, (3,), "int32")
        rest_ref = b.add_constant(f"{name}_rest", np.full(2, rest, np.int32))
        b.add_operator("CONCATENATION", [one, rest_ref], [out], axis=0, fused_activation_function="NONE")
        return out

    written = b.add_intermediate("buffer_next", (STEPS, BATCH, UNITS))
    if write == "dynamic_update_slice":
        b.add_operator("DYNAMIC_UPDATE_SLICE", [buffer, row, index_vector(counter, 0, "start")], [written])
    else:
        zeros = b.add_constant("head_begin", np.zeros(3, np.int32))
        head = b.add_intermediate("head", (-1, -1, -1))
        b.add_operator("SLICE", [buffer, zeros, index_vector(counter, -1, "head_size")], [head])
        tail = b.add_intermediate("tail", (-1, BATCH, UNITS))
        rest = b.add_constant("tail_size", np.full(3, -1, np.int32))
        b.add_operator("SLICE", [buffer, index_vector(nxt, 0, "tail_begin"), rest], [tail])
        b.add_operator("CONCATENATION", [head, row, tail], [written], axis=0, fused_activation_function="NONE")
    h_out = h_new
    if grow:
        h_out = b.add_intermediate("h_twice", (-1, UNITS))
        b.add_operator("CONCATENATION", [h_new, h_new], [h_out], axis=0, fused_activation_function="NONE")
    return b.build_subgraph([nxt, written, h_out, x, *steps], "body")


def rnn_loop(*, bound: bool = False, write: str = "dynamic_update_slice", cond=None, body=None) -> Model:
    """x [STEPS, BATCH, FEATURES] (and with `bound` an int32 ``steps``) -> the RNN's outputs
    [STEPS, BATCH, UNITS], as a WHILE loop over (counter, buffer, h, x[, steps])."""
    m = ModelBuilder()
    x = m.add_input("x", CARRIES[3][0])
    steps = [m.add_input("steps", (), "int32")] if bound else []
    initial = [
        m.add_constant("counter_0", np.asarray(0, np.int32)),
        m.add_constant("buffer_0", np.zeros(CARRIES[1][0], np.float32)),
        m.add_constant("h_0", np.zeros(CARRIES[2][0], np.float32)),
        x,
        *steps,
    ]
    shapes = CARRIES + ([((), "int32")] if bound else [])
    final = [m.add_intermediate(f"final_{k}", shape, dtype) for k, (shape, dtype) in enumerate(shapes)]
    m.add_operator("WHILE", initial, final, cond_subgraph_index=1, body_subgraph_index=2)
    subgraphs = [cond or _cond(bound), body or _body(bound, write)]
    return m.build([final[1]], ["outputs"], subgraphs=subgraphs)


def reference(x: np.ndarray, steps: int = STEPS) -> np.ndarray:
    """The NumPy loop: the first `steps` outputs of the RNN, zeros after."""
    h = np.zeros((BATCH, UNITS), np.float64)
    out = np.zeros((STEPS, BATCH, UNITS))
    for t in range(steps):
        h = np.tanh(x[t] @ WEIGHTS["w"].T + WEIGHTS["b"] + h @ WEIGHTS["u"].T)
        out[t] = h
    return out


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=CARRIES[3][0]).astype(np.float32)


def _inputs(x: np.ndarray, bound: bool, steps: int = 3) -> list[np.ndarray]:
    return [x, np.asarray(steps, np.int32)] if bound else [x]


@pytest.mark.parametrize("bound", [False, True], ids=["static_trip_count", "bounded"])
def test_loop_matches_numpy_and_litert(x, bound):
    m = rnn_loop(bound=bound)
    inputs = _inputs(x, bound)
    want = reference(x, 3 if bound else STEPS)
    (eager,) = m(*inputs)
    (jitted,) = jax.jit(lambda p, *xs: m.apply(p, None, *xs)[0])(m.params, *inputs)
    np.testing.assert_allclose(eager, want, atol=ATOL, rtol=0)
    np.testing.assert_array_equal(jitted, eager)
    data = export_tflite(m)
    for run in run_litert(data, inputs, invocations=2, reset=False, xnnpack=False):
        np.testing.assert_allclose(run[0], eager, atol=ATOL, rtol=0)
    (again,) = load_tflite(data)(*inputs)
    np.testing.assert_array_equal(again, eager)
    assert export_tflite(load_tflite(data)) == data


def test_static_trip_count_is_read_off_the_graph_and_runs_as_scan(x):
    m = rnn_loop()
    loop = analyze_while(m, m.operators[0], [m.constants.get(i) for i in m.operators[0].inputs])
    assert (loop.trip_count, loop.invariant) == (STEPS, (3,))  # x passes through the body unchanged
    assert [(c.carry, c.start, c.step, c.bound) for c in loop.counters] == [(0, 0, 1, STEPS)]
    jaxpr = str(jax.make_jaxpr(lambda p: m.apply(p, None, x)[0])(m.params))
    assert "scan" in jaxpr and "while" not in jaxpr
    bounded = rnn_loop(bound=True)
    steps = np.asarray(3, np.int32)
    jaxpr = str(jax.make_jaxpr(lambda p: bounded.apply(p, None, x, steps)[0])(bounded.params))
    assert "while" in jaxpr


def test_gradient_reaches_the_body_weights_and_matches_finite_differences(x):
    m = rnn_loop()
    weights = np.random.default_rng(4).normal(size=(STEPS, BATCH, UNITS)).astype(np.float32)

    @jax.jit
    def loss(params):
        return jnp.sum(weights * m.apply(params, None, x)[0][0])

    params = m.params
    grads = jax.grad(loss)(params)
    body = {k: g for k, g in grads.items() if k.startswith("subgraph_2/")}
    assert sorted(body) == ["subgraph_2/input/bias", "subgraph_2/input/weights", "subgraph_2/recurrent/weights"]
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in body.values())
    eps = 1e-2  # float32 central differences: truncation ~eps^2, rounding ~1e-7 / eps
    for name, index in (("subgraph_2/input/weights", (1, 2)), ("subgraph_2/recurrent/weights", (3, 0))):
        up, down = (dict(params, **{name: params[name].copy()}) for _ in range(2))
        up[name][index] += eps
        down[name][index] -= eps
        finite_difference = (float(loss(up)) - float(loss(down))) / (2 * eps)
        np.testing.assert_allclose(grads[name][index], finite_difference, rtol=1e-2, atol=1e-4, err_msg=name)


def test_bounded_loop_says_reverse_mode_is_unavailable(x):
    m = rnn_loop(bound=True)
    steps = np.asarray(3, np.int32)
    with pytest.raises(NotImplementedError, match=r"no static trip count.*cannot differentiate in reverse mode"):
        jax.grad(lambda p: jnp.sum(m.apply(p, None, x, steps)[0][0]))(m.params)


def test_bounded_loop_that_reaches_the_cap(x, monkeypatch):
    """Eagerly: ValueError. Under jit (no value-dependent exceptions): NaN float outputs."""
    monkeypatch.setattr(control_flow, "MAX_WHILE_ITERATIONS", 2)
    m = rnn_loop(bound=True)
    steps = np.asarray(3, np.int32)
    with pytest.raises(ValueError, match=r"operator 0 \(WHILE\): .* did not end within 2 iterations"):
        m(x, steps)
    (capped,) = jax.jit(lambda p, *xs: m.apply(p, None, *xs)[0])(m.params, x, steps)
    assert np.all(np.isnan(capped))
    (within,) = m(x, np.asarray(2, np.int32))
    np.testing.assert_allclose(within, reference(x, 2), atol=ATOL, rtol=0)


def test_bounded_loop_that_never_ends_stops_at_the_cap(x, monkeypatch):
    """A counter that does not move, compared with a run-time bound: not provable at load
    time, so the cap ends it."""
    monkeypatch.setattr(control_flow, "MAX_WHILE_ITERATIONS", 50)
    m = rnn_loop(bound=True, body=_body(True, step=0))
    with pytest.raises(ValueError, match="did not end within 50 iterations"):
        m(x, np.asarray(3, np.int32))


def _load(model: Model) -> Model:
    return load_tflite(export_tflite(model))


MALFORMED = {
    "cond_out_of_range": (
        lambda: rnn_loop().replace(operators=[_with_options(rnn_loop(), cond_subgraph_index=3)]),
        r"operator 0 \(WHILE\): cond_subgraph_index 3 refers to no subgraph; the model has subgraphs 0 to 2",
    ),
    "body_is_main": (
        lambda: rnn_loop().replace(operators=[_with_options(rnn_loop(), body_subgraph_index=0)]),
        r"operator 0 \(WHILE\): body_subgraph_index 0 calls subgraph 0 again while it runs \(cycle 0 -> 0\)",
    ),
    "cond_is_body": (
        lambda: _load(rnn_loop().replace(operators=[_with_options(rnn_loop(), cond_subgraph_index=2)])),
        r"operator 0 \(WHILE\): cond and body are the same subgraph 2",
    ),
    "constant_true_cond": (
        lambda: _load(rnn_loop(cond=_constant_cond(True))),
        r"operator 0 \(WHILE\): the loop never ends: its cond is constant true",
    ),
    "counter_does_not_move": (
        lambda: _load(rnn_loop(body=_body(False, step=0))),
        r"operator 0 \(WHILE\): the loop never ends: its counters do not move .*carry 0 starts at 0, steps by 0",
    ),
    "body_output_changes_shape": (
        lambda: _load(rnn_loop(body=_swap_outputs(_body(False), 1, 2))),
        r"operator 0 \(WHILE\): loop carry 1 is float32\[4, 2, 5\] .* but float32\[2, 5\] as body subgraph 2 output",
    ),
    "body_output_changes_dtype": (
        lambda: _load(rnn_loop(body=_swap_outputs(_body(False), 2, 0))),
        r"loop carry 2 is float32\[2, 5\] .* but int32\[\] as body subgraph 2 output",
    ),
    "too_few_cond_inputs": (
        lambda: _load(rnn_loop(cond=_cond(False).replace(inputs=_cond(False).inputs[:3]))),
        r"operator 0 \(WHILE\): 4 loop carries \(inputs\) but 3 cond subgraph 1 inputs",
    ),
}


def _with_options(model: Model, **options):
    """The model's WHILE operator with `options` changed."""
    (op,) = model.operators
    return dataclasses.replace(op, options=options_tuple({**dict(op.options), **options}))


def _constant_cond(value: bool):
    c = ModelBuilder()
    _carries(c, False)
    return c.build_subgraph([c.add_constant("always", np.asarray(value))], "cond")


def _swap_outputs(body, k: int, source: int):
    outputs = list(body.outputs)
    outputs[k] = outputs[source]
    return body.replace(outputs=outputs)


@pytest.mark.parametrize("make, message", MALFORMED.values(), ids=list(MALFORMED))
def test_malformed_loop_is_a_value_error_naming_the_operator(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_body_that_calls_itself_is_a_cycle():
    m = rnn_loop()
    body = m.subgraphs[1]
    call = dataclasses.replace(m.operators[0], inputs=body.inputs, outputs=body.outputs)
    with pytest.raises(ValueError, match=r"subgraph 2 operator \d+ \(WHILE\): body_subgraph_index 2 .*cycle 2 -> 2"):
        m.replace(subgraphs=[m.subgraphs[0], body.replace(operators=[*body.operators, call])])


def test_carry_that_changes_shape_at_run_time(x):
    """A body output declared with a dynamic dimension that comes out of another shape:
    caught when the loop is traced, with the body and the carry named."""
    m = rnn_loop(body=_body(False, grow=True))
    with pytest.raises(ValueError, match=r"operator 0 \(WHILE\): body subgraph 2 output 2 .* is float32\[4, 5\]"):
        m(x)


def test_sequence_write_pattern_becomes_dynamic_update_slice(x):
    """TensorFlow's lowered TensorListSetItem (SLICE / CONCATENATION whose shapes depend on
    the counter) is rewritten at load time; the rewritten file runs in LiteRT exactly like
    the original, and under jit in jaxlstm."""
    original = export_tflite(rnn_loop(write="slices"))
    m = load_tflite(original)
    assert "SLICE" not in m.subgraphs[1].opcodes and "DYNAMIC_UPDATE_SLICE" in m.subgraphs[1].opcodes
    (jitted,) = jax.jit(lambda p: m.apply(p, None, x)[0])(m.params)
    np.testing.assert_allclose(jitted, reference(x), atol=ATOL, rtol=0)
    rewritten = export_tflite(m)
    for a, b in zip(run_litert(original, [x], xnnpack=False), run_litert(rewritten, [x], xnnpack=False)):
        np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("start", [[1, 0, 2], [-3, 1, 0], [9, 9, 9], [0, 0, 0]], ids=str)
def test_dynamic_update_slice_matches_litert(start):
    """Start indices outside the operand are clamped, as in XLA and LiteRT."""
    b = ModelBuilder()
    operand = b.add_input("operand", (4, 3, 5))
    update = b.add_input("update", (2, 3, 2))
    starts = b.add_input("start", (3,), "int32")
    out = b.add_intermediate("out", (4, 3, 5))
    b.add_operator("DYNAMIC_UPDATE_SLICE", [operand, update, starts], [out])
    m = b.build([out])
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=(4, 3, 5)).astype(np.float32), rng.normal(size=(2, 3, 2)).astype(np.float32)]
    inputs.append(np.asarray(start, np.int32))
    ((lite,),) = run_litert(export_tflite(m), inputs, xnnpack=False)
    np.testing.assert_array_equal(m(*inputs)[0], lite)
    np.testing.assert_array_equal(jax.jit(lambda *xs: m(*xs)[0])(*inputs), lite)


def test_body_params_have_their_own_names_and_train(x):
    m = rnn_loop()
    assert {"buffer_0", "h_0", "subgraph_2/input/weights"} <= set(m.params)
    params = dict(m.params, **{"subgraph_2/input/bias": m.params["subgraph_2/input/bias"] + 1})
    moved = m.with_params(params)
    assert not np.allclose(moved(x)[0], m(x)[0])
    assert export_tflite(m.with_params(m.params)) == export_tflite(m)
    np.testing.assert_array_equal(
        load_tflite(export_tflite(moved)).params["subgraph_2/input/bias"], params["subgraph_2/input/bias"]
    )


def test_inspect_has_no_while_warning_for_a_loop_that_loads():
    report = inspect_tflite(export_tflite(rnn_loop()))
    assert report["warnings"] == []
    assert {op["opcode"] for op in report["operators"]} >= {"WHILE", "LESS", "DYNAMIC_UPDATE_SLICE"}


def test_dynamic_range_export_quantizes_the_loop_body(x):
    """quantize="dynamic" reaches the FULLY_CONNECTEDs inside the body: hybrid, in LiteRT and
    in jaxlstm alike."""
    data = export_tflite(rnn_loop(), quantize="dynamic", quantize_min_elements=0)
    m = load_tflite(data)
    body = m.subgraphs[1]
    hybrid = [body.tensors[op.inputs[1]].dtype for op in body.operators if op.opcode == "FULLY_CONNECTED"]
    assert hybrid == ["int8", "int8"]
    (ours,) = m(x)
    for run in run_litert(data, [x], invocations=2, reset=False, xnnpack=False):
        np.testing.assert_allclose(run[0], ours, atol=ATOL, rtol=0)


def test_prune_unused_subgraphs_renumbers_the_calls(x):
    """What a rewrite that replaces a loop needs: subgraphs nothing calls go, the calls of
    the others follow their new indices."""
    m = rnn_loop()
    unused = ModelBuilder()
    unused.add_input("a", (1,))
    spare = unused.build_subgraph([Ref(0, (1,))], "spare")
    padded = m.replace(
        operators=[_with_options(m, cond_subgraph_index=2, body_subgraph_index=3)],
        subgraphs=[spare, *m.subgraphs],
    )
    pruned = prune_unused_subgraphs(padded)
    assert [g.name for g in pruned.subgraphs] == ["cond", "body"]
    assert dict(pruned.operators[0].options) == {"cond_subgraph_index": 1, "body_subgraph_index": 2}
    np.testing.assert_array_equal(pruned(x)[0], m(x)[0])
    assert prune_unused_subgraphs(m) is m
