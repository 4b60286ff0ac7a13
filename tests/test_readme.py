"""The README's examples run as written: fine-tuning (load, jax.grad + optax, export, LiteRT
parity) and fully integer models (quantize, LiteRT bit for bit, fake-quantized training)."""

from __future__ import annotations

import os
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_block(title: str) -> str:
    """The python block of the README section `title`."""
    section = README.read_text().split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return block


def _regressor(path: pathlib.Path) -> None:
    """model.tflite as the README describes it: an LSTM regressor [batch, 20, 8] -> [batch, 1]."""
    from jaxlstm import export_tflite
    from jaxlstm.convert import lstm_weights_from_fused
    from jaxlstm.model import ModelBuilder
    from jaxlstm.ops import LSTMOptions

    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.add_input("input", (-1, 20, 8))
    w = lstm_weights_from_fused(*(rng.normal(scale=0.3, size=s).astype(np.float32) for s in ((8, 64), (16, 64), (64,))))
    h = b.add_last_time_step(b.add_lstm(x, w, LSTMOptions(), name="lstm"))
    y = b.add_fully_connected(h, rng.normal(scale=0.3, size=(1, 16)).astype(np.float32), np.zeros(1, np.float32))
    export_tflite(b.build([y], ["output"]), path)


def test_fine_tuning_example_runs_and_lowers_the_loss(tmp_path, monkeypatch):
    _regressor(tmp_path / "model.tflite")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_block("Fine-tuning a .tflite model"), str(README), "exec"), namespace)  # asserts parity
    loss, model, params = namespace["loss"], namespace["model"], namespace["params"]
    assert float(loss(params)) < 0.5 * float(loss(model.params))
    assert os.path.exists(tmp_path / "tuned.tflite")
    assert namespace["tuned"].stateful is False  # predict, like model.tflite


def test_integer_example_runs(tmp_path, monkeypatch):
    """The fully integer example on the same model.tflite: quantize, LiteRT bit for bit (the
    block asserts it), int16, and the fake-quantized forward pass equal to the integer model."""
    _regressor(tmp_path / "model.tflite")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_python_block("Fully integer models: calibrate, quantize, fine-tune"), str(README), "exec"), namespace)
    int8, outputs, calibration = namespace["int8"], namespace["outputs"], namespace["calibration"]
    np.testing.assert_array_equal(outputs[0], int8(calibration[:4])[0])
    assert namespace["int16"].runtime == "tflite-micro"
    assert os.path.exists(tmp_path / "model_int8.tflite")
