"""Acceptance: Keras 3 recurrent models as TensorFlow 2.16+ converts them (WHILE loops with cond and
body subgraphs) load, match LiteRT's builtin kernels and Keras, run under jit as `lax.scan`, train
(`jax.grad` over `params` reaches the weights inside the loop bodies), and round-trip through
`export_tflite`. The models come from tests/tflite/keras3_while_models.py (one subprocess)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.inspect import inspect_tflite
from jaxlstm.model.control_flow import analyze_while
from jaxlstm.ops import QuantizedTensor
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.keras3_while_models import MODELS, TIME, UNLOADABLE

pytestmark = pytest.mark.slow  # one TensorFlow subprocess (~16 conversions, ~25 s), then ~1 s per model

ATOL = 1e-5  # float32 sums in another order; hybrid products are exact integers (test_frontend_ops.py)
NAMES = list(MODELS)
FLOAT = [name for name in NAMES if not MODELS[name][2]]


@pytest.fixture(scope="module")
def models(keras3_while_models):
    """{name: (.tflite bytes, input x, Keras outputs, loaded Model)}."""
    result = {}
    for name in NAMES:
        data = (keras3_while_models / f"{name}.tflite").read_bytes()
        arrays = np.load(keras3_while_models / f"{name}.npz")
        keras_outputs = [arrays[f"y{k}"] for k in range(len(arrays.files) - 1)]
        result[name] = data, arrays["x"], keras_outputs, load_tflite(data)
    return result


def _in_signature_order(model, outputs: list) -> list:
    """Outputs sorted by signature name (output_0, output_1, ...), Keras' order; the subgraph
    may list them otherwise (Bidirectional merge_mode=None: backward first)."""
    return [y for _, y in sorted(zip(model.signature_names[1], outputs), key=lambda pair: pair[0])]


def _while_loops(model) -> list:
    return [
        analyze_while(model, op, [model.constants.get(i) for i in op.inputs])
        for op in model.operators
        if op.opcode == "WHILE"
    ]


@pytest.mark.parametrize("name", NAMES)
def test_loads_and_matches_litert_over_two_invokes(models, name):
    data, x, keras_outputs, m = models[name]
    loops = _while_loops(m)
    assert loops and all(loop.trip_count == TIME for loop in loops)  # lax.scan, not a bounded loop
    assert all("SLICE" not in g.opcodes for g in m.subgraphs)  # the sequence writes: DYNAMIC_UPDATE_SLICE
    outputs = m(x)
    for run in run_litert(data, [x], invocations=2, reset=False, xnnpack=False):
        for ours, theirs in zip(outputs, run):
            np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    if name in FLOAT:  # Keras itself: an independent check of the whole chain
        for ours, theirs in zip(_in_signature_order(m, outputs), keras_outputs, strict=True):
            np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_runs_under_jit(models, name):
    _, x, _, m = models[name]
    jitted = jax.jit(lambda params, x: m.apply(params, None, x)[0])(m.params, x)
    for a, b in zip(jitted, m(x)):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_the_loop_bodies(models, name):
    """jax.grad over the float params: finite everywhere, nonzero for every weight inside a
    loop body, and equal to central finite differences for two body weights (float models;
    the hybrid kernels round their inputs per step, so their loss is piecewise constant in
    the weights and finite differences do not measure jax.grad's derivative)."""
    _, x, _, m = models[name]
    params = m.params
    floats = {k: v for k, v in params.items() if not isinstance(v, QuantizedTensor)}
    fixed = {k: v for k, v in params.items() if k not in floats}
    weights = [np.random.default_rng(5).normal(size=np.shape(y)).astype(np.float32) for y in m(x)]

    @jax.jit
    def loss(p):
        return sum(jnp.sum(w * y) for w, y in zip(weights, m.apply({**fixed, **p}, None, x)[0]))

    grads = jax.grad(loss)(floats)
    body = [k for k in floats if k.startswith("subgraph_") and np.ndim(floats[k]) > 0]
    assert body and all(np.all(np.isfinite(g)) for g in grads.values())
    assert [k for k in body if not np.any(grads[k])] == []
    if name not in FLOAT:
        return
    matrix = next(k for k in body if np.ndim(floats[k]) == 2)
    vector = [k for k in body if np.ndim(floats[k]) == 1][-1]
    eps = 1e-2  # float32 central differences: truncation ~eps^2, rounding ~1e-7 / eps
    for key in (matrix, vector):
        index = np.unravel_index(3, np.shape(floats[key]))
        up, down = (dict(floats, **{key: floats[key].copy()}) for _ in range(2))
        up[key][index] += eps
        down[key][index] -= eps
        finite_difference = (float(loss(up)) - float(loss(down))) / (2 * eps)
        np.testing.assert_allclose(grads[key][index], finite_difference, rtol=1e-2, atol=2e-5, err_msg=key)


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_runs_in_litert_like_the_original(models, name):
    """export_tflite(load_tflite(b)) holds DYNAMIC_UPDATE_SLICE where b has the converter's
    SLICE / CONCATENATION writes: LiteRT gives bit-identical outputs, so the rewrite is exact."""
    data, x, _, m = models[name]
    again = export_tflite(m)
    assert set(load_tflite(again).params) == set(m.params)
    original = run_litert(data, [x], invocations=2, reset=False, xnnpack=False)
    for a, b in zip(original, run_litert(again, [x], invocations=2, reset=False, xnnpack=False)):
        for ours, theirs in zip(a, b, strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_inspect_does_not_warn_about_loops_that_load(models):
    for name in NAMES:  # loops=False: whether they fuse is test_loop_fusion.py's
        assert inspect_tflite(models[name][0], loops=False)["warnings"] == [], name


@pytest.mark.parametrize(
    "name, message",
    [
        ("lstm_batch_none_flex", "custom operator 'FlexTensorListReserve'.*give keras.Input a fixed batch_size"),
        ("stateful_lstm", r"operator 0 \(CALL_ONCE\): resource variables \(VAR_HANDLE, READ_VARIABLE"),
    ],
    ids=UNLOADABLE,
)
def test_what_does_not_load_says_why(keras3_while_models, name, message):
    data = (keras3_while_models / f"{name}.tflite").read_bytes()
    with pytest.raises(NotImplementedError, match=message):
        load_tflite(data)
    codes = [w["code"] for w in inspect_tflite(data)["warnings"]]
    assert "while_loop" in codes and codes[-1] == "not_loadable"
