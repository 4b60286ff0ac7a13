"""The public API: `__all__` is a tuple of names that resolve; `jaxlstm.ops` stays jax + numpy only."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import jaxlstm
import jaxlstm.ops

HEAVY = ("flax", "flatbuffers", "tensorflow", "tf_keras", "torch", "keras", "ai_edge_litert")


@pytest.mark.parametrize("module", [jaxlstm, jaxlstm.ops], ids=lambda m: m.__name__)
def test_all_is_a_tuple_of_names_that_resolve(module):
    assert isinstance(module.__all__, tuple)
    assert all(isinstance(name, str) for name in module.__all__)
    assert len(set(module.__all__)) == len(module.__all__), "duplicate names in __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{module.__name__}.__all__ names that do not resolve: {missing}"


def test_version_is_a_string():
    assert isinstance(jaxlstm.__version__, str) and jaxlstm.__version__


def test_importing_ops_imports_no_heavy_framework():
    """In a fresh interpreter, `import jaxlstm.ops` adds none of HEAVY to what `import jax`
    already loads (jax itself imports flatbuffers, for jax.export)."""
    code = (
        "import json, sys\n"
        "import jax, numpy\n"
        "before = set(sys.modules)\n"
        "import jaxlstm.ops\n"
        "print(json.dumps(sorted(m for m in set(sys.modules) - before)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    added = json.loads(result.stdout.strip().splitlines()[-1])
    heavy = sorted({name.split(".")[0] for name in added} & set(HEAVY))
    assert not heavy, f"import jaxlstm.ops imported {heavy}"


def test_the_step_functions_are_public():
    """Each sequence op's plain step, for `lax.scan` and for the nn layers' masked loops."""
    assert {"lstm_cell", "rnn_cell", "gru_cell"} <= set(jaxlstm.ops.__all__)


def test_importing_the_reference_loops_imports_no_jax():
    """`jaxlstm.reference` is NumPy only: in a fresh interpreter it loads without JAX."""
    code = (
        "import json, sys\n"
        "from jaxlstm.reference import np_common, np_gru, np_lstm, np_rnn\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {name.split(".")[0] for name in json.loads(result.stdout.strip().splitlines()[-1])}
    assert "numpy" in loaded
    assert not loaded & {"jax", "jaxlib", *HEAVY}, sorted(loaded & {"jax", "jaxlib", *HEAVY})
