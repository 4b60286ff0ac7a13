"""Exports and demo artefacts are written atomically: an export interrupted at any point
leaves the previous file as it was and no temporary file behind."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from jaxlstm import export_tflite, load_tflite
from jaxlstm.tflite import _writer
from tests.tflite.models import stacked_lstm

GOOD = b"a good model from an earlier export"


class _Interrupted(Exception):
    """Stands for whatever stops a write: a full disk, a signal, a killed job."""


@pytest.fixture(scope="module")
def model():
    return stacked_lstm(np.random.default_rng(0), batch=1, time=3)


def _half_then_raise(error: BaseException):
    """An `os.fdopen` whose files write half of each buffer, then raise `error`."""
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        f = real_fdopen(fd, *args, **kwargs)
        real_write = f.write

        def write(data):
            real_write(bytes(data[: len(data) // 2]))
            f.flush()
            raise error

        f.write = write
        return f

    return fdopen


def test_export_writes_the_returned_bytes(model, tmp_path):
    path = tmp_path / "model.tflite"
    data = export_tflite(model, path)
    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == ["model.tflite"]
    assert load_tflite(path).output_names == model.output_names


def test_new_file_gets_the_usual_permissions(model, tmp_path):
    """Not the 0600 of a temporary file: the mode a plain open() would give (0666 & ~umask)."""
    umask = os.umask(0o022)
    try:
        export_tflite(model, tmp_path / "model.tflite")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(os.stat(tmp_path / "model.tflite").st_mode) == 0o644


def test_overwrite_keeps_the_existing_permissions(model, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(GOOD)
    os.chmod(path, 0o640)
    export_tflite(model, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


@pytest.mark.parametrize(
    "error", [_Interrupted("disk full"), KeyboardInterrupt()], ids=["exception", "keyboard_interrupt"]
)
@pytest.mark.parametrize("existing", [True, False], ids=["over_a_good_file", "new_file"])
def test_interrupted_write_leaves_no_partial_file(model, tmp_path, monkeypatch, error, existing):
    path = tmp_path / "model.tflite"
    if existing:
        path.write_bytes(GOOD)
    monkeypatch.setattr(_writer.os, "fdopen", _half_then_raise(error))
    with pytest.raises(type(error)):
        export_tflite(model, path)
    assert os.listdir(tmp_path) == (["model.tflite"] if existing else [])
    if existing:
        assert path.read_bytes() == GOOD


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failure_after_writing_keeps_the_good_file(model, tmp_path, monkeypatch, step):
    path = tmp_path / "model.tflite"
    path.write_bytes(GOOD)

    def fail(*args, **kwargs):
        raise _Interrupted(step)

    monkeypatch.setattr(_writer.os, step, fail)
    with pytest.raises(_Interrupted):
        export_tflite(model, path)
    monkeypatch.undo()
    assert path.read_bytes() == GOOD
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_export_error_touches_nothing(model, tmp_path):
    """Errors found while building the bytes come before any file is opened."""
    path = tmp_path / "model.tflite"
    path.write_bytes(GOOD)
    with pytest.raises(ValueError, match="quantize"):
        export_tflite(model, path, quantize="int4")
    assert path.read_bytes() == GOOD
    assert os.listdir(tmp_path) == ["model.tflite"]


def test_missing_directory_is_an_error_and_creates_nothing(model, tmp_path):
    path = tmp_path / "no_such_dir" / "model.tflite"
    with pytest.raises(FileNotFoundError) as error:
        export_tflite(model, path)
    assert error.value.filename == str(path)  # the destination, not the temporary file
    assert os.listdir(tmp_path) == []


def test_a_failed_rename_names_the_destination(model, tmp_path, monkeypatch):
    path = tmp_path / "model.tflite"

    def replace(src, dst):
        raise PermissionError(13, "Permission denied", src)

    monkeypatch.setattr(_writer.os, "replace", replace)
    with pytest.raises(PermissionError) as error:
        export_tflite(model, path)
    assert error.value.filename == str(path) and ".tmp" not in str(error.value)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_demo_artefacts_are_written_atomically(tmp_path, monkeypatch):
    """The demo writes its .tflite files, plot and summary through the same atomic writer."""
    from jaxlstm import demo

    path = tmp_path / "summary.json"
    path.write_bytes(GOOD)
    monkeypatch.setattr(_writer.os, "fdopen", _half_then_raise(_Interrupted("disk full")))
    with pytest.raises(_Interrupted):
        demo._write_atomic(str(path), lambda f: f.write(b'{"accuracy": 0.97}'))
    assert path.read_bytes() == GOOD
    monkeypatch.undo()

    def plot_that_fails(f):
        f.write(b"\x89PNG half a plot")
        raise _Interrupted("matplotlib failed")

    with pytest.raises(_Interrupted):
        demo._write_atomic(str(path), plot_that_fails)
    assert path.read_bytes() == GOOD
    assert os.listdir(tmp_path) == ["summary.json"]
