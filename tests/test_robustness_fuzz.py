"""Fuzzing the .tflite importer: 2,002 mutated files, each loads or raises ValueError (or the
documented NotImplementedError for a valid file using an unsupported feature).

The mutations and the per-case harness (CPU-time alarm, `tracemalloc` bound) live in
``experiments/fuzz_import.py``, which runs 100,000 cases; this test runs the first 143 cases
of each of its 14 mutations (seed 0) with `load_tflite` only, so it stays parse-only and fast.
Malformed WHILE loops (`fuzz_import.LOOP_DEFECTS`) must be ValueErrors that name the operator.
"""

from __future__ import annotations

import copy
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from jaxlstm import load_tflite

_PATH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "fuzz_import.py"
_spec = importlib.util.spec_from_file_location("fuzz_import", _PATH)
fuzz_import = sys.modules.setdefault("fuzz_import", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(fuzz_import)

CASES_PER_MUTATION = 143  # x 14 mutations = 2,002 cases
TIMEOUT_S = 5.0  # CPU seconds per case; a parse takes ~3 ms, so only a hang reaches it
MAX_ALLOC = 64 * fuzz_import.MIB  # seeds are < 8 KiB; a parse peaks at ~0.1 MiB (measured)


@pytest.fixture(scope="module")
def mutator():
    return fuzz_import.Mutator(seed=0)


def test_seed_files_load(mutator):
    """The unmutated files load, so rejections below come from the mutations."""
    for data in mutator.seeds.values():
        assert load_tflite(data).operators


@pytest.mark.parametrize("mutation", fuzz_import.MUTATIONS, ids=str)
def test_mutated_files_load_or_raise_value_error(mutator, mutation):
    k = fuzz_import.MUTATIONS.index(mutation)
    max_alloc = MAX_ALLOC if mutation in fuzz_import.SIZE_MUTATIONS else None
    kinds, failures = [], []
    for index in range(k, k + len(fuzz_import.MUTATIONS) * CASES_PER_MUTATION, len(fuzz_import.MUTATIONS)):
        name, data = mutator(index)
        assert name.endswith("/" + mutation)
        outcome = fuzz_import.run_case(data, timeout=TIMEOUT_S, max_alloc=max_alloc)
        kinds.append(outcome.kind)
        if outcome.kind not in ("loaded", "rejected"):
            failures.append(f"case {index} ({name}): {outcome.kind}: {outcome.detail}")
    assert not failures, "\n".join(failures[:20])
    assert kinds.count("rejected") > 0  # the mutation does reach the validation


@pytest.mark.parametrize("defect", list(fuzz_import.LOOP_DEFECTS))
def test_malformed_loops_are_value_errors_naming_the_operator(mutator, defect):
    """Out-of-range or cyclic subgraph references, endless conds, carries that change shape
    or dtype, carry counts that do not match: ValueError at load time, never a hang."""
    for seed in range(3):  # the defects that pick among variants
        model = copy.deepcopy(mutator.unpacked["while_loop"])
        fuzz_import.LOOP_DEFECTS[defect](model, np.random.default_rng(seed))
        with pytest.raises(ValueError, match=r"operator \d+ \(WHILE\): .*subgraph"):
            load_tflite(fuzz_import.pack(model))


def test_alarm_bounds_a_hang(monkeypatch):
    """The per-case time bound works: a case that never ends comes back as a timeout."""
    monkeypatch.setattr(fuzz_import, "load_tflite", lambda data: [np.sum(np.ones(10)) for _ in iter(int, 1)])
    assert fuzz_import.run_case(b"", timeout=0.2, max_alloc=None).kind == "timeout"


def test_tracemalloc_bounds_allocations(monkeypatch):
    """The per-case memory bound works: allocating 2 x MAX_ALLOC is reported."""
    monkeypatch.setattr(fuzz_import, "load_tflite", lambda data: np.ones(MAX_ALLOC // 4, np.float64))
    assert fuzz_import.run_case(b"", timeout=TIMEOUT_S, max_alloc=MAX_ALLOC).kind == "memory"
