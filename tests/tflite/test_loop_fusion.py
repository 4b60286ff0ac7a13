"""Fusing WHILE loops back into TFLite's fused recurrent operators (`jaxlstm.model.loop_fusion`).

Acceptance on real converter output (tests/tflite/keras3_while_models.py: Keras 3 models converted by
TensorFlow 2.21): ``jaxlstm convert model.tflite -o fused.tflite`` fuses every LSTM, GRU and
SimpleRNN loop (a Bidirectional pair into one BIDIRECTIONAL_SEQUENCE_LSTM), keeps the masked and the
dynamic-range loops with the reason, and the fused file gives Keras', the WHILE file's and jaxlstm's
outputs in LiteRT; the fused model trains (`jax.grad`). Unit tests on a loop built with
`ModelBuilder` (tests/tflite/test_while.py) cover the loops that must stay loops and the check that
guards every rewrite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.cli import main
from jaxlstm.inspect import format_report, inspect_tflite
from jaxlstm.model import loop_fusion
from jaxlstm.model.loop_fusion import fuse_while_loops
from jaxlstm.ops import QuantizedTensor
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.keras3_while_models import MODELS
from tests.tflite.test_while import BATCH, FEATURES, STEPS, reference, rnn_loop

ATOL = 1e-5  # LiteRT's float kernel tests' bound; the fused ops sum the same products in another order
LSTM, BIDIRECTIONAL = "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM"
# model -> what becomes of each of its loops: the operator it is fused into, or words of the reason it is kept.
EXPECTED = {
    "lstm_sequences": [LSTM],
    "lstm_last_step": [LSTM],
    "stacked_lstm_dense_softmax": [LSTM, LSTM],
    "gru_reset_after": ["GRU"],
    "gru_reset_before": ["GRU"],
    "gru_last_step": ["GRU"],
    "simple_rnn": ["UNIDIRECTIONAL_SEQUENCE_RNN"],
    "lstm_go_backwards": [LSTM],
    "masking_lstm": ["kept as a loop: the layer is masked"],
    **{f"bidirectional_lstm_{merge}": [BIDIRECTIONAL] * 2 for merge in ("concat", "sum", "mul", "ave", "None")},
    "lstm_dynamic_range": ["kept as a loop: its FULLY_CONNECTED weights are int8 with one scale per output row"],
}
NAMES = list(MODELS)
FUSED = [name for name in NAMES if not EXPECTED[name][0].startswith("kept")]
# Operators of the fused files besides those the converter wrote around the loops.
EXPORTED = {LSTM: {LSTM, "FILL", "SLICE"}, BIDIRECTIONAL: {BIDIRECTIONAL, "FILL"}}
EXPORTED["UNIDIRECTIONAL_SEQUENCE_RNN"] = {"UNIDIRECTIONAL_SEQUENCE_RNN", "FILL"}
EXPORTED["GRU"] = {
    "FILL",
    "FULLY_CONNECTED",
    "UNPACK",
    "ADD",
    "LOGISTIC",
    "SPLIT",
    "MUL",
    "TANH",
    "SUB",
    "PACK",
    "RESHAPE",
}


def test_every_model_has_an_expectation():
    assert set(EXPECTED) == set(NAMES)


@dataclasses.dataclass(frozen=True)
class Converted:
    source: bytes  # the WHILE model
    fused: bytes  # what `jaxlstm convert` wrote
    stdout: list[str]
    x: np.ndarray
    keras: list[np.ndarray]  # Keras' outputs on x


@pytest.fixture(scope="module")
def converted(keras3_while_models, tmp_path_factory) -> dict[str, Converted]:
    """``jaxlstm convert <name>.tflite -o <name>.fused.tflite`` (in-process) for every model."""
    out_dir = tmp_path_factory.mktemp("fused")
    result = {}
    for name in NAMES:
        source, out = keras3_while_models / f"{name}.tflite", out_dir / f"{name}.tflite"
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            assert main(["convert", str(source), "-o", str(out)]) == 0
        arrays = np.load(keras3_while_models / f"{name}.npz")
        keras_outputs = [arrays[f"y{k}"] for k in range(len(arrays.files) - 1)]
        result[name] = Converted(
            source.read_bytes(), out.read_bytes(), stdout.getvalue().splitlines(), arrays["x"], keras_outputs
        )
    return result


def _opcodes(data: bytes) -> list[str]:
    """The main subgraph's operators."""
    return [op["opcode"] for op in inspect_tflite(data, loops=False)["operators"] if op["subgraph"] == 0]


@pytest.mark.parametrize("name", NAMES)
def test_convert_says_what_became_of_each_loop(converted, name):
    c = converted[name]
    loops = [line for line in c.stdout if line.startswith("loop: ")]
    assert len(loops) == _opcodes(c.source).count("WHILE") == len(EXPECTED[name])
    for line, expected in zip(loops, EXPECTED[name]):
        if expected.startswith("kept"):
            assert expected in line
        else:
            assert f"fused into {expected}" in line and "checked in float64" in line


@pytest.mark.parametrize("name", NAMES)
def test_the_fused_file_holds_the_fused_operators(converted, name):
    """No WHILE (and no cond or body subgraph) is left where the loops fuse; the new
    operators are the fused ones (GRU: unrolled builtin operators), a BIDIRECTIONAL_SEQUENCE_LSTM
    per Bidirectional pair."""
    c = converted[name]
    before, after = _opcodes(c.source), _opcodes(c.fused)
    fused_into = [e for e in EXPECTED[name] if not e.startswith("kept")]
    assert after.count("WHILE") == before.count("WHILE") - len(fused_into)
    if name not in FUSED:
        return
    assert {op["subgraph"] for op in inspect_tflite(c.fused, loops=False)["operators"]} == {0}
    assert set(after) - set(before) <= set().union(*(EXPORTED[e] for e in fused_into))
    assert after.count(BIDIRECTIONAL) == fused_into.count(BIDIRECTIONAL) // 2
    assert "UNPACK" in after if "GRU" in fused_into else set(fused_into) <= set(after)


@pytest.mark.parametrize("name", NAMES)
def test_keras_while_and_fused_agree_in_litert(converted, name):
    """Over two invokes (a predict file: the second repeats the first), for Keras' input and a
    10x larger one that drives the cell states past 10: the fused file in LiteRT (builtin
    kernels and the default XNNPACK delegate) against the WHILE file, and Keras against it."""
    c = converted[name]
    for x in (c.x, 10 * c.x):
        want = run_litert(c.source, [x], invocations=2, reset=False, xnnpack=False)
        for xnnpack in (False, True):
            got = run_litert(c.fused, [x], invocations=2, reset=False, xnnpack=xnnpack)
            for invoke_want, invoke_got in zip(want, got, strict=True):
                for a, b in zip(invoke_want, invoke_got, strict=True):
                    np.testing.assert_allclose(b, a, atol=ATOL, rtol=0)
    if name != "lstm_dynamic_range":  # Keras runs float weights; the file int8 ones
        m = load_tflite(c.fused)
        ordered = [y for _, y in sorted(zip(m.signature_names[1], run_litert(c.fused, [c.x])[0]))]
        for ours, keras in zip(ordered, c.keras, strict=True):
            np.testing.assert_allclose(ours, keras, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_the_fused_file_runs_in_jaxlstm_like_litert(converted, name):
    c = converted[name]
    m = load_tflite(c.fused)
    for ours, theirs in zip(m(c.x), run_litert(c.fused, [c.x], xnnpack=False)[0], strict=True):
        np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", FUSED)
def test_gradient_of_the_fused_model(converted, name):
    """jax.grad over the fused file's params, loaded as a user fine-tunes it: finite, nonzero for
    every weight matrix, and equal to a central finite difference for a recurrent weight."""
    c = converted[name]
    m = load_tflite(c.fused)
    params = {k: v for k, v in m.params.items() if not isinstance(v, QuantizedTensor)}
    weights = [np.random.default_rng(5).normal(size=np.shape(y)).astype(np.float32) for y in m(c.x)]

    @jax.jit
    def loss(p):
        return sum(jnp.sum(w * y) for w, y in zip(weights, m.apply(p, None, c.x)[0]))

    grads = jax.grad(loss)(params)
    matrices = [k for k, v in params.items() if np.ndim(v) == 2]
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    assert [k for k in matrices if not np.any(grads[k])] == []
    key = next(k for k in matrices if "recurrent" in k)
    index, eps = np.unravel_index(3, np.shape(params[key])), 1e-2  # float32: truncation ~eps^2, rounding ~1e-5
    up, down = (dict(params, **{key: params[key].copy()}) for _ in range(2))
    up[key][index] += eps
    down[key][index] -= eps
    finite_difference = (float(loss(up)) - float(loss(down))) / (2 * eps)
    np.testing.assert_allclose(grads[key][index], finite_difference, rtol=1e-2, atol=2e-5, err_msg=key)


@pytest.mark.parametrize("name", ["stacked_lstm_dense_softmax", "bidirectional_lstm_concat", "gru_reset_before"])
def test_the_library_function(converted, name):
    """fuse_while_loops on the loaded WHILE model: the report convert prints, a model without
    subgraphs whose outputs are the loop model's, and nothing left to fuse the second time."""
    c = converted[name]
    loops = load_tflite(c.source)
    fused, report = fuse_while_loops(loops)
    assert [f"loop: {entry}" for entry in report] == [line for line in c.stdout if line.startswith("loop: ")]
    assert [entry.fused_into for entry in report] == EXPECTED[name]
    assert all(entry.error <= loop_fusion.TOLERANCE for entry in report)
    assert fused.subgraphs == () and "WHILE" not in fused.opcodes
    assert not any(k.startswith("subgraph_") for k in fused.params)
    for a, b in zip(fused(c.x), loops(c.x), strict=True):
        np.testing.assert_allclose(a, b, atol=ATOL, rtol=0)
    again, nothing = fuse_while_loops(fused)
    assert again is fused and nothing == []


def test_inspect_says_which_loops_fuse(converted):
    fusable = inspect_tflite(converted["bidirectional_lstm_sum"].source)
    loops = [op["loop"] for op in fusable["operators"] if op["opcode"] == "WHILE"]
    assert [(loop["fusable"], loop["layer"], loop["fused_into"]) for loop in loops] == [
        (True, "LSTM", BIDIRECTIONAL)
    ] * 2
    assert all(loop["reason"] is None and loop["error"] <= loop_fusion.TOLERANCE for loop in loops)
    assert format_report(fusable).count(f"loop: LSTM, fusable into {BIDIRECTIONAL}") == 2
    masked = inspect_tflite(converted["masking_lstm"].source)
    (loop,) = [op["loop"] for op in masked["operators"] if op["opcode"] == "WHILE"]
    assert not loop["fusable"] and loop["fused_into"] is None and loop["reason"] == loop_fusion.MASKED_REASON
    assert f"loop: not fusable: {loop_fusion.MASKED_REASON}" in format_report(masked)
    assert all("loop" not in op for op in masked["operators"] if op["opcode"] != "WHILE")


def test_convert_no_fuse_loops_keeps_them(tmp_path, capsys, keras3_while_models):
    out = tmp_path / "loops.tflite"
    assert main(["convert", str(keras3_while_models / "lstm_sequences.tflite"), "-o", str(out), "--no-fuse-loops"]) == 0
    assert "loop:" not in capsys.readouterr().out
    assert _opcodes(out.read_bytes()).count("WHILE") == 1


# ----------------------------------------------------------------------------- built loops


def test_a_built_rnn_loop_fuses_into_the_rnn_operator():
    """tests/tflite/test_while.py's loop, ``h = tanh(W x[t] + b + U h)`` written at t, against its
    NumPy loop in jaxlstm and in LiteRT."""
    x = np.random.default_rng(0).normal(size=(STEPS, BATCH, FEATURES)).astype(np.float32)
    fused, (entry,) = fuse_while_loops(rnn_loop())
    assert (entry.layer, entry.fused_into) == ("SimpleRNN", "UNIDIRECTIONAL_SEQUENCE_RNN")
    assert fused.opcodes == ["UNIDIRECTIONAL_SEQUENCE_RNN"] and fused.subgraphs == ()
    np.testing.assert_allclose(fused(x)[0], reference(x), atol=ATOL, rtol=0)
    (litert,) = run_litert(export_tflite(fused), [x])[0]
    np.testing.assert_allclose(litert, reference(x), atol=ATOL, rtol=0)


def _with_constant(m, name: str, value: np.ndarray):
    index = next(i for i, t in enumerate(m.tensors) if t.name == name)
    return m.replace(constants={**m.constants, index: value})


@pytest.mark.parametrize(
    "variant, reason",
    [
        ("bounded", "its trip count is not static"),
        ("initial_state", "its initial state (carry 2) is not a constant zero"),
        ("state_read_after", "its carry 2 is read after the loop (return_state=True)"),
        ("streaming_model", "the model streams (Model.stateful)"),
    ],
)
def test_loops_that_stay_loops(variant, reason):
    m = rnn_loop(bound=variant == "bounded")
    if variant == "initial_state":
        m = _with_constant(m, "h_0", np.ones_like(m.constant("h_0")))
    if variant == "state_read_after":
        final_h = m.operators[0].outputs[2]
        m = m.replace(outputs=(*m.outputs, final_h), signature_names=None)
    if variant == "streaming_model":
        m = m.replace(stateful=True)
    fused, (entry,) = fuse_while_loops(m)
    assert fused is m and not entry.fused and entry.reason.startswith(reason), entry.reason


def test_the_check_keeps_a_loop_the_fused_operator_does_not_reproduce(monkeypatch):
    """A recognised cell with one weight off by 1e-3: the check on random inputs sees it and
    the loop stays."""
    recognise = loop_fusion._recognise

    def off_by_a_little(model, op):
        layer = recognise(model, op)
        w = layer.weights
        return dataclasses.replace(layer, weights=w.replace(bias=w.bias + np.float32(1e-3)))

    monkeypatch.setattr(loop_fusion, "_recognise", off_by_a_little)
    m = rnn_loop()
    fused, (entry,) = fuse_while_loops(m)
    assert fused is m and entry.reason.startswith("the fused UNIDIRECTIONAL_SEQUENCE_RNN differs from the loop by")


def test_the_readme_example_runs(converted, tmp_path, monkeypatch):
    """The python block of the README section "Models from today's TensorFlow"."""
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("## Models from today's TensorFlow", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    (tmp_path / "model_while.tflite").write_bytes(converted["lstm_sequences"].source)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        exec(compile(block, str(readme), "exec"), namespace)  # asserts the fused model's outputs itself
    assert stdout.getvalue().startswith("operator 1 (WHILE, body subgraph 2): LSTM fused into")
    assert _opcodes((tmp_path / "fused.tflite").read_bytes()).count(LSTM) == 1
    assert any(k.startswith("subgraph_2/") and np.any(g) for k, g in namespace["grads"].items())
