"""Runs real tf.compat.v1.nn.rnn_cell LSTM cells and saves their variables and outputs.

Run as a subprocess by test_tf1.py: TF1 cells need TF_USE_LEGACY_KERAS=1 before TensorFlow
is imported, and other tests may already have imported it.

    python _tf1_cells.py CASES_JSON OUT_NPZ

CASES_JSON maps a case id to {"basic": bool, "kwargs": cell constructor arguments}. For
each case the cell gets seeded normal(0, 0.5) variables and runs over a fixed [B, T, D]
input from zero state; OUT_NPZ holds "<id>/input", "<id>/output" and
"<id>/var/<variable name>" ('/' in names written as '~').
"""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

BATCH, TIME, N_INPUT = 2, 6, 3


def run_case(spec: dict, seed: int) -> dict:
    rnn_cell = tf.compat.v1.nn.rnn_cell
    cell = (rnn_cell.BasicLSTMCell if spec["basic"] else rnn_cell.LSTMCell)(**spec["kwargs"])
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(BATCH, TIME, N_INPUT)).astype(np.float32)
    state = cell.zero_state(BATCH, tf.float32)
    cell(tf.constant(x[:, 0]), state)  # builds the variables
    for v in cell.variables:
        v.assign(rng.normal(scale=0.5, size=v.shape).astype(np.float32))
    outputs = []
    for t in range(TIME):
        out, state = cell(tf.constant(x[:, t]), state)
        outputs.append(out.numpy())
    result = {"input": x, "output": np.stack(outputs, axis=1)}
    result.update({"var/" + v.name.replace("/", "~"): v.numpy() for v in cell.variables})
    return result


def main(cases_json: str, out_path: str) -> None:
    cases = json.loads(cases_json)
    arrays = {}
    for seed, (case_id, spec) in enumerate(sorted(cases.items())):
        for key, value in run_case(spec, seed).items():
            arrays[f"{case_id}/{key}"] = value
    np.savez(out_path, **arrays)


if __name__ == "__main__":
    main(*sys.argv[1:])
