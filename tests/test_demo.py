"""`jaxlstm demo`: a smoke run, the full run's targets, the command line and atomic writes."""

import json
import os
import subprocess
import sys

import pytest

from jaxlstm import demo

ARTEFACTS = {"model_float.tflite", "model_int8.tflite", "model_integer.tflite", "demo.png", "summary.json"}


def _run(tmp_path, *args):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), *args]) == 0
    assert set(os.listdir(out)) == ARTEFACTS  # no temporary files left behind
    return json.loads((out / "summary.json").read_text()), out


def test_smoke_run(tmp_path, capsys):
    summary, out = _run(tmp_path, "--steps", "3", "--epochs", "1")
    assert summary["training_steps"] == 3
    assert summary["ops"]["float"] == [
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "STRIDED_SLICE",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    assert summary["ops"]["int8"] == summary["ops"]["float"] and summary["fused"]
    assert summary["ops"]["integer"] == ["QUANTIZE", *summary["ops"]["float"], "DEQUANTIZE"]
    assert summary["file_bytes"]["int8"] < 0.6 * summary["file_bytes"]["float"]
    assert summary["file_bytes"]["integer"] < 0.4 * summary["file_bytes"]["float"]
    assert summary["parity_max_abs_error"]["float"] <= demo.PARITY_TOLERANCE
    assert summary["parity_max_abs_error"]["integer"] == 0  # jaxlstm's integer model is LiteRT's, bit for bit
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "test accuracy (JAX)" in printed and "max |LiteRT - JAX model|" in printed
    assert "max |LiteRT - jaxlstm integer model| = 0.00e+00" in printed


@pytest.mark.slow
def test_full_run_reaches_target(tmp_path):
    summary, _ = _run(tmp_path)
    assert summary["test_accuracy"] >= demo.TARGET_ACCURACY
    assert summary["accuracy"]["litert_float"] >= demo.TARGET_ACCURACY
    assert summary["accuracy"]["litert_integer"] >= demo.TARGET_ACCURACY
    assert summary["parity_passed"]


def test_module_command_help():
    out = subprocess.run(
        [sys.executable, "-m", "jaxlstm", "demo", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    for option in ("--out", "--epochs", "--seed", "--steps"):
        assert option in out.stdout


def test_bad_option_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        demo.main(["--epochs", "0"])
    assert info.value.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err


def test_failed_write_leaves_old_file(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        demo._write_atomic(str(path), fail)
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["summary.json"]
