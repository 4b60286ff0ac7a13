"""`jaxlstm inspect` and `jaxlstm parity` on fully integer files: the integer path of each
recurrent op, which runtimes can run the file, and exact comparisons (tolerance 0) against
LiteRT's builtin kernels or TFLite Micro."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxlstm.cli import main
from jaxlstm.inspect import inspect_tflite
from jaxlstm.parity import compare
from jaxlstm.parity.compare import _error
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.integer_models import Config, integer_model
from tests.tflite.models import edit_flatbuffer, stacked_lstm
from tests.tflite.test_integer_ops import CASES, build, inputs


def _file(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def _lstm(config: Config, activations: str = "int8") -> bytes:
    return export_tflite(integer_model(np.random.default_rng(0), [config], activations))


def _recurrent(report) -> dict:
    (op,) = [op for op in report["operators"] if op["features"] is not None]
    return op


def test_inspect_names_the_integer_path_and_the_runtimes():
    int8 = inspect_tflite(_lstm(Config()))
    assert _recurrent(int8)["features"]["integer_path"] == "8x8_16"
    assert int8["runtimes"] == {"litert": [], "tflite-micro": []}

    int16 = inspect_tflite(_lstm(Config(), "int16"))
    assert _recurrent(int16)["features"]["integer_path"] == "16x8"
    (reason,) = int16["runtimes"]["litert"]
    assert "int16 activations (16x8); LiteRT has no such LSTM kernel" in reason
    assert int16["runtimes"]["tflite-micro"] == []

    peephole = inspect_tflite(_lstm(Config(peephole=True, layer_norm=True)))
    (reason,) = peephole["runtimes"]["tflite-micro"]
    assert "uses peephole, layer_norm, which TFLite Micro's integer LSTM lacks" in reason
    assert peephole["runtimes"]["litert"] == []


def test_inspect_names_the_8x8_8_lstm_and_what_tflite_micro_lacks():
    def twelve_intermediates(model):  # the experimental 8x8_8 kernel's
        op = model.subgraphs[0].operators[0]
        op.intermediates = list(op.intermediates) * 2 + list(op.intermediates)[:2]

    report = inspect_tflite(edit_flatbuffer(_lstm(Config(single_step=True)), twelve_intermediates))
    assert _recurrent(report)["features"]["integer_path"] == "8x8_8"
    (reason,) = report["runtimes"]["tflite-micro"]
    assert "LSTM: TFLite Micro has no kernel for this op" in reason

    model = stacked_lstm(np.random.default_rng(0), units=(4,))
    hybrid = inspect_tflite(export_tflite(model, quantize="dynamic", quantize_min_elements=1))
    assert _recurrent(hybrid)["features"]["integer_path"] == "hybrid"
    reasons = " ".join(hybrid["runtimes"]["tflite-micro"])
    assert "is hybrid" in reasons and "dynamic dimensions" in reasons


def test_inspect_text_report(capsys, tmp_path):
    path = _file(tmp_path, "int16.tflite", _lstm(Config(), "int16"))
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "integer_path=16x8" in out
    assert "LiteRT: cannot run this file:" in out and "TFLite Micro: runs this file" in out


def test_parity_of_an_int16_file_runs_in_tflite_micro(capsys, tmp_path):
    path = _file(tmp_path, "int16.tflite", _lstm(Config(batch=2), "int16"))
    assert main(["parity", path, "--runtime", "tflite-micro", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] and report["integer"] and report["runtime"] == "tflite-micro"
    assert {e["pair"] for e in report["errors"]} == {"jaxlstm vs tflite-micro"}
    assert all(e["tolerance"] == 0 and e["mismatched"] == 0 for e in report["errors"])
    assert main(["parity", path]) == 2  # LiteRT has no int16 LSTM kernel: the runtime to name
    assert "LiteRT has no LSTM kernel for int16" in capsys.readouterr().err


def test_parity_compares_integer_files_exactly_with_xnnpack_off():
    """Integer QUANTIZE, DEQUANTIZE and MUL, on which XNNPACK (LiteRT's default delegate)
    rounds differently from the builtin kernels: parity passes at tolerance 0 against the
    builtin kernels, and the same inputs through XNNPACK differ."""
    cases = [c for c in CASES if c.name in ("quantize_float_to_int8_scale_0.05", "dequantize_int8")]
    cases += [c for c in CASES if c.name.startswith("mul_int8_3x21_by_3x21")]
    data = export_tflite(build(cases))
    xs = inputs(cases, 0)[0]
    report = compare(data, inputs=xs)
    assert report.integer and report.passed, report.format()
    assert all(e.tolerance == 0 for e in report.errors)
    ours = [np.asarray(y) for y in load_tflite(data)(*xs)]
    xnnpack = run_litert(data, xs, xnnpack=True)[0]
    assert any(not np.array_equal(a, b, equal_nan=True) for a, b in zip(ours, xnnpack))


def test_integer_outputs_are_compared_in_lsbs():
    a = np.array([[5, -3, 127], [0, 1, -128]], np.int8)
    b = np.array([[5, -1, 127], [0, 4, -128]], np.int8)
    max_abs, _, _, mismatched = _error(a, b, time_axis=1, tolerance=0.0)
    assert (max_abs, mismatched) == (3.0, 2)
    assert _error(a, a, time_axis=1, tolerance=0.0)[::3] == (0.0, 0)


def test_tflite_micro_parity_needs_static_shapes():
    data = export_tflite(stacked_lstm(np.random.default_rng(0), units=(4,)))
    with pytest.raises(ValueError, match="TFLite Micro runs static shapes only"):
        compare(data, runtime="tflite-micro")
