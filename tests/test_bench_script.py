"""Smoke test of experiments/bench.py on a tiny shape: every system runs, agrees with the
others (the script's own agreement checks), and the report, JSON and plot get written.

The torch worker runs on the CPU here; on a CUDA machine the same `TorchWorker` code runs
with ``device="cuda"`` (only the synchronisation differs), so this keeps the GPU path working.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")  # before anything imports keras (as bench.py does)

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


@pytest.mark.slow
def test_bench_runs_every_system_on_a_tiny_shape(monkeypatch, tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("tensorflow")
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import bench

    precision = jax.config.jax_default_matmul_precision
    try:
        assert bench.main(["--reps", "1", "--torch", "cpu", "--shape", "2,4,3,5", "--out", str(tmp_path)]) == 0
        # flax and Keras compared at float32 products on any backend, as jaxlstm computes
        assert jax.config.jax_default_matmul_precision == "highest"
    finally:
        jax.config.update("jax_default_matmul_precision", precision)

    report = json.loads((tmp_path / "bench.json").read_text())
    (row,) = report["rows"]
    assert row["shape"] == [2, 4, 3, 5]  # --shape replaced the default shapes
    torch_cpu = {"torch", "torch_no_onednn"}
    expected = {"jaxlstm", "jaxlstm_peep_proj", "jaxlstm_bf16", "jax_minimal", "flax", "keras"} | torch_cpu
    assert expected | {"litert_jaxlstm", "litert_converter"} == set(row["forward"])
    assert expected == set(row["train"])
    assert set(row["train_scratch_mib"]) == expected - torch_cpu
    assert all(t["median_ms"] > 0 for t in row["forward"].values())
    assert set(row["export_s"]) == {"litert_jaxlstm", "litert_converter"}
    assert (tmp_path / "bench.png").stat().st_size > 0
