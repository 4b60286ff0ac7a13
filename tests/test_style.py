"""The house style is checked, not hoped for: `ruff check` and `ruff format --check` pass."""

import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _ruff(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("ruff") is None:  # the test extras install it
        pytest.skip("ruff is not installed")
    return subprocess.run(["ruff", *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("args", [("check", "."), ("format", "--check", ".")], ids=["check", "format"])
def test_ruff(args):
    result = _ruff(*args)
    assert result.returncode == 0, result.stdout + result.stderr
