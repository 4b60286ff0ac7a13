"""TF1 tf.compat.v1.nn.rnn_cell.LSTMCell / BasicLSTMCell variables -> fused ops: outputs match
the real cells (run once, in a subprocess, by _tf1_cells.py) in JAX and in LiteRT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxlstm.convert import from_tf_v1_lstm_cell, lstm_weights_from_tf_v1_cell

from ._helpers import assert_converted_matches

pytest.importorskip("tensorflow")
pytest.importorskip("tf_keras")  # TF_USE_LEGACY_KERAS=1 needs it

# id -> the cell's constructor arguments (num_units always; basic = BasicLSTMCell).
CASES = {
    "basic": {"basic": True, "kwargs": {"num_units": 4}},
    "basic_forget_bias_0": {"basic": True, "kwargs": {"num_units": 3, "forget_bias": 0.0}},
    "lstm_cell_forget_bias_half": {"basic": False, "kwargs": {"num_units": 4, "forget_bias": 0.5}},
    "peephole_cell_clip": {"basic": False, "kwargs": {"num_units": 4, "use_peepholes": True, "cell_clip": 0.3}},
    "projection_proj_clip": {"basic": False, "kwargs": {"num_units": 4, "num_proj": 2, "proj_clip": 0.1}},
    "all_features": {
        "basic": False,
        "kwargs": {"num_units": 5, "use_peepholes": True, "num_proj": 3, "cell_clip": 1.0, "proj_clip": 0.5},
    },
}


@pytest.fixture(scope="module")
def tf1_runs(tmp_path_factory):
    """{case id: {"input", "output", "variables"}} from real TF1 cells."""
    out = tmp_path_factory.mktemp("tf1") / "cells.npz"
    script = os.path.join(os.path.dirname(__file__), "_tf1_cells.py")
    subprocess.run(
        [sys.executable, script, json.dumps(CASES), str(out)],
        check=True,
        timeout=300,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )
    runs: dict = {case: {"variables": {}} for case in CASES}
    with np.load(out) as data:
        for key in data.files:
            case, rest = key.split("/", 1)
            if rest.startswith("var/"):
                runs[case]["variables"][rest[4:].replace("~", "/")] = data[key]
            else:
                runs[case][rest] = data[key]
    return runs


@pytest.mark.parametrize("case", sorted(CASES))
def test_tf1_cell_matches_tensorflow(case, tf1_runs):
    run, spec = tf1_runs[case], CASES[case]
    x = run["input"]
    model = from_tf_v1_lstm_cell(
        run["variables"], basic=spec["basic"], batch_size=x.shape[0], time_steps=x.shape[1], **spec["kwargs"]
    )
    assert_converted_matches(model, [x], [run["output"]])


def test_tf1_weights_layout(tf1_runs):
    weights, options = lstm_weights_from_tf_v1_cell(
        tf1_runs["all_features"]["variables"], **CASES["all_features"]["kwargs"]
    )
    assert weights.use_peephole and weights.use_projection and not weights.use_cifg
    assert (weights.n_input, weights.n_cell, weights.n_output) == (3, 5, 3)
    assert (options.cell_clip, options.proj_clip) == (1.0, 0.5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        pytest.param(dict(num_units=4, cell_clip=0.0), "cell_clip=0.0", id="zero_clip"),
        pytest.param(dict(num_units=4, use_peepholes=True), "w_i_diag|cell_to_input", id="missing_peepholes"),
        pytest.param(dict(num_units=5), "kernel", id="wrong_num_units"),
        pytest.param(dict(num_units=4, basic=True, num_proj=2), "BasicLSTMCell", id="basic_with_projection"),
    ],
)
def test_tf1_invalid_arguments_raise_value_error(kwargs, match):
    rng = np.random.default_rng(0)
    variables = {"rnn/lstm_cell/kernel:0": rng.normal(size=(7, 16)), "rnn/lstm_cell/bias:0": rng.normal(size=16)}
    with pytest.raises(ValueError, match=match):
        lstm_weights_from_tf_v1_cell(variables, **kwargs)
