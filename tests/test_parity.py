"""jaxlstm.parity.compare: LiteRT vs jaxlstm vs a source model, on random and adversarial inputs,
at batch 1 and a batch > 1, two invokes each, for predict and streaming files.

Sources here are independent of jaxlstm: the loop-based NumPy reference (jaxlstm.reference),
with and without the cell clip, so the cell_clip=10 quirk is reproduced without TensorFlow
(test_cli.py checks it on a real TFLiteConverter model).
"""

from __future__ import annotations

import importlib
import json
import warnings

import numpy as np
import pytest

from jaxlstm import export_tflite
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import LSTMOptions, LSTMWeights
from jaxlstm.parity import ParityReport, compare
from jaxlstm.parity.compare import DEFAULT_TOLERANCE, plot_errors
from jaxlstm.reference import np_lstm

N_INPUT, N_CELL, TIME = 3, 8, 48  # 48 steps: long enough for |cell state| to pass 10


def _weights(rng: np.random.Generator, n_input: int, n_cell: int, scale: float) -> LSTMWeights:
    def normal(*shape):
        return rng.normal(0.0, scale, shape).astype(np.float32)

    return lstm_weights_from_fused(normal(n_input, 4 * n_cell), normal(n_cell, 4 * n_cell), normal(4 * n_cell))


def _lstm_model(weights: LSTMWeights, shape: tuple[int, ...], cell_clip: float):
    b = ModelBuilder()
    x = b.add_input("input", shape)
    y = b.add_lstm(x, weights, LSTMOptions(cell_clip=cell_clip), name="lstm")
    return b.build([y], output_names=["sequence"])


@pytest.fixture(scope="module")
def clipped():
    """(.tflite bytes, weights) of one LSTM [1, 48, 3] -> [1, 48, 8] with cell_clip=10."""
    weights = _weights(np.random.default_rng(0), N_INPUT, N_CELL, 0.5)
    return export_tflite(_lstm_model(weights, (1, TIME, N_INPUT), cell_clip=10.0)), weights


def _reference(weights: LSTMWeights, cell_clip: float):
    return lambda x: np_lstm.unidirectional_sequence_lstm(x, weights, cell_clip=cell_clip)[0]


def test_float_model_passes_on_every_case(clipped):
    data, _ = clipped
    report = compare(data)
    assert isinstance(report, ParityReport)
    assert report.passed and not report.hybrid and report.steps == TIME and report.semantics == "predict"
    assert [(e.case, e.batch, e.invoke, e.pair, e.output) for e in report.errors] == [
        (case, 1, invoke, "jaxlstm vs litert", "sequence")
        for case in ("random", "adversarial_flip", "adversarial_rotation")
        for invoke in (1, 2)
    ]
    assert all(len(e.per_step) == TIME and e.tolerance == DEFAULT_TOLERANCE for e in report.errors)


def test_source_with_the_same_clip_passes(clipped):
    data, weights = clipped
    report = compare(data, source=_reference(weights, cell_clip=10.0))
    assert report.passed, report.format()
    assert {e.pair for e in report.errors} == {"jaxlstm vs litert", "source vs litert", "source vs jaxlstm"}


def test_unclipped_source_fails_on_adversarial_inputs_and_is_labelled_as_the_quirk(clipped):
    data, weights = clipped
    report = compare(data, source=_reference(weights, cell_clip=0.0))
    assert not report.passed
    by_case = {}
    for e in report.errors:
        by_case.setdefault(e.case, []).append(e)
    # Random inputs keep |c| < 10 here, so the clip changes nothing.
    assert all(e.passed for e in by_case["random"])
    assert all(e.passed for e in report.errors if e.pair == "jaxlstm vs litert")
    failed = [e for e in report.errors if not e.passed]
    assert {e.case for e in failed} <= {"adversarial_flip", "adversarial_rotation"}
    assert failed and all("cell_clip=10 quirk" in e.note for e in failed)
    assert max(e.max_abs for e in failed) > 100 * DEFAULT_TOLERANCE  # far beyond rounding
    assert report.notes and "FAIL (known quirk: cell_clip=10)" in report.format()


def test_a_wrong_source_is_a_plain_failure(clipped):
    data, weights = clipped
    reference = _reference(weights, cell_clip=10.0)
    report = compare(data, source=lambda x: reference(x) + 1e-3)
    failed = [e for e in report.errors if not e.passed]
    assert {e.pair for e in failed} == {"source vs litert", "source vs jaxlstm"}
    assert not any(e.note for e in failed) and not report.notes


def test_given_inputs_run_as_one_case(clipped):
    data, weights = clipped
    x = np.random.default_rng(1).normal(size=(1, TIME, N_INPUT)).astype(np.float32)
    report = compare(data, inputs=[x], source=_reference(weights, cell_clip=10.0))
    assert report.passed and report.steps is None
    assert {(e.case, e.batch) for e in report.errors} == {("given", 1)}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"steps": 10}, "fixed time dimension of 48", id="steps_vs_static_time"),
        pytest.param({"inputs": [np.zeros((1, 5, N_INPUT), np.float32)]}, "shape", id="input_shape"),
        pytest.param({"inputs": [np.zeros((1, TIME, N_INPUT), np.float32)] * 2}, "takes 1 inputs", id="input_count"),
    ],
)
def test_inputs_that_do_not_fit_the_model_raise(clipped, kwargs, message):
    with pytest.raises(ValueError, match=message):
        compare(clipped[0], **kwargs)


def test_not_a_tflite_file_raises(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ValueError, match=r"not a \.tflite file"):
        compare(path)


def test_hybrid_model_with_dynamic_time_meets_the_float_tolerance():
    """int8 weights: jaxlstm emulates LiteRT's hybrid kernels, so 1e-5 still applies."""
    weights = _weights(np.random.default_rng(2), 32, 32, 0.3)  # 32x32: quantized (>= 1024 elements)
    model = _lstm_model(weights, (1, -1, 32), cell_clip=0.0)
    report = compare(export_tflite(model, quantize="dynamic"), steps=12)
    assert report.hybrid and report.steps == 12 and report.passed, report.format()
    assert all(len(e.per_step) == 12 for e in report.errors)


def test_accepts_a_model_object_and_reports_as_json_and_plot(tmp_path):
    weights = _weights(np.random.default_rng(3), N_INPUT, 4, 0.5)
    report = compare(_lstm_model(weights, (1, 6, N_INPUT), cell_clip=0.0), seed=5)
    d = json.loads(json.dumps(report.to_dict()))
    assert set(d) == {"passed", "hybrid", "integer", "runtime", "steps", "semantics", "notes", "errors"}
    assert (d["integer"], d["runtime"]) == (False, "litert")
    assert set(d["errors"][0]) == {
        "case",
        "batch",
        "invoke",
        "pair",
        "output",
        "max_abs",
        "max_rel",
        "tolerance",
        "passed",
        "per_step",
        "note",
        "mismatched",
    }
    assert d["passed"] is True and d["semantics"] == "predict" and len(d["errors"]) == 3 * 2  # cases x invokes
    plot_errors(report, tmp_path / "errors.png")
    assert (tmp_path / "errors.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def dynamic_model():
    """One LSTM [-1, -1, 3] -> [B, T, 4]: any batch and length."""
    return _lstm_model(_weights(np.random.default_rng(4), N_INPUT, 4, 0.5), (-1, -1, N_INPUT), cell_clip=0.0)


@pytest.mark.parametrize("stateful", [False, True], ids=["predict", "streaming"])
def test_runs_batch_1_and_3_twice_and_names_the_semantics(dynamic_model, stateful):
    """Predict files give the same outputs on the second invoke, streaming files continue from
    the state of the first; LiteRT and jaxlstm agree either way, at both batches."""
    report = compare(export_tflite(dynamic_model, stateful=stateful), steps=5)
    assert report.passed, report.format()
    assert report.semantics == ("streaming" if stateful else "predict")
    assert report.format().splitlines()[0].startswith(f"semantics: {report.semantics}")
    assert {(e.batch, e.invoke) for e in report.errors} == {(1, 1), (1, 2), (3, 1), (3, 2)}


def test_streaming_second_invoke_continues_from_the_state(dynamic_model):
    """The second invoke of a streaming file is not the first one again (the state carried), and
    the source, a stateless call, is held to the first invoke only."""
    from jaxlstm.parity.litert import run_litert

    data = export_tflite(dynamic_model, stateful=True)
    x = np.random.default_rng(2).normal(size=(3, 5, N_INPUT)).astype(np.float32)
    first, second = run_litert(data, [x], invocations=2, reset=False, state_batch=3)
    assert np.abs(first[0] - second[0]).max() > 1e-3
    report = compare(data, inputs=[x], source=lambda x: np.asarray(dynamic_model(x)[0]))
    assert report.passed, report.format()
    pairs = sorted((e.invoke, e.pair) for e in report.errors)
    assert pairs == [
        (1, "jaxlstm vs litert"),
        (1, "source vs jaxlstm"),
        (1, "source vs litert"),
        (2, "jaxlstm vs litert"),
    ]


def _classifier():
    """LSTM -> last step -> FULLY_CONNECTED -> SOFTMAX: outputs without a time axis."""
    rng = np.random.default_rng(6)
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, N_INPUT))
    h = b.add_last_time_step(b.add_lstm(x, _weights(rng, N_INPUT, 4, 0.5), LSTMOptions(), name="lstm"))
    y = b.add_softmax(b.add_fully_connected(h, rng.normal(size=(3, 4)).astype(np.float32), None))
    return b.build([y], ["probabilities"])


@pytest.mark.parametrize("kind", ["classifier", "sequence"])
def test_plot_has_no_empty_panel_and_no_warning(kind, dynamic_model, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    report = compare(_classifier() if kind == "classifier" else dynamic_model, steps=4)
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: drawn.append(fig))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_errors(report, tmp_path / "errors.png")
    (fig,) = drawn
    assert fig.axes and all(ax.has_data() for ax in fig.axes)
    assert len(fig.axes) == (1 if kind == "classifier" else 2)  # the per-step panel only with a time axis


def test_a_keras_load_error_reaches_the_message_without_colour_codes(tmp_path, monkeypatch):
    """Keras 3 wraps its errors in bold (``\\x1b[1m``); `load_keras`'s message is plain text."""
    compare_module = importlib.import_module("jaxlstm.parity.compare")  # the package exports a function `compare`

    def bold_failure(path):
        raise ValueError("\x1b[1mCould not locate class 'Custom'\x1b[0m")

    monkeypatch.setattr(compare_module, "_load_with_keras3", bold_failure)
    monkeypatch.setattr(compare_module, "_load_with_tf_keras", bold_failure)
    path = tmp_path / "model.keras"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="Could not locate class 'Custom'") as info:
        compare_module.load_keras(path)
    assert "\x1b" not in str(info.value)
