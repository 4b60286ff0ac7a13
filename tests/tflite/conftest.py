"""Fixtures shared by the .tflite tests."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest

_KERAS3_MODELS = pathlib.Path(__file__).with_name("keras3_while_models.py")


@pytest.fixture(scope="session")
def keras3_while_models(tmp_path_factory) -> pathlib.Path:
    """A directory of Keras 3 recurrent models converted by TensorFlow's converter (WHILE
    loops): ``<name>.tflite`` and ``<name>.npz`` (input ``x``, Keras outputs ``y0``, ...) for
    each name of `keras3_while_models.MODELS` (one subprocess: Keras on the TensorFlow backend)."""
    missing = [name for name in ("tensorflow", "keras") if importlib.util.find_spec(name) is None]
    if missing:  # not imported here: keras would fix its backend for this process
        pytest.skip(f"needs {' and '.join(missing)}")
    out = tmp_path_factory.mktemp("keras3_while_models")
    done = subprocess.run([sys.executable, str(_KERAS3_MODELS), str(out)], capture_output=True, text=True, timeout=600)
    if done.returncode:
        pytest.fail(f"{_KERAS3_MODELS.name} failed:\n{done.stderr[-4000:]}")
    return out
