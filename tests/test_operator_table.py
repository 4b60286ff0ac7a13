"""The operator table (`jaxlstm.model.operators`) against upstream's slot constants, and the
package's import graph."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

from jaxlstm.model.operators import GRU, OPERATORS, RECURRENT
from jaxlstm.ops.gru import GRUWeights
from jaxlstm.ops.lstm import LSTMWeights
from jaxlstm.ops.rnn import RNNWeights

# Input positions named in TFLite's kernels: lstm_shared.h (kInputToForgetWeightsTensor = 2,
# kOutputStateTensor = 18, kCellStateTensor = 19, kForgetLayerNormCoefficientsTensor = 21),
# bidirectional_sequence_lstm.cc (kFwInputActivationStateTensor = 35, kBwInputCellStateTensor = 38,
# kAuxInputTensor = 39, kFwAuxInputToInputWeightsTensor = 40, kBwAuxInputToOutputWeightsTensor = 47,
# kBwInputToForgetWeightsTensor = 19), basic_rnn.cc (kHiddenStateTensor = 4) and
# bidirectional_sequence_rnn.cc (kBwHiddenStateTensor = 8, kAuxInputTensor = 9,
# kBwAuxWeightsTensor = 11).
UPSTREAM_SLOTS = [
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", "input_to_forget_weights", 2),
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", "output_state", 18),
    ("LSTM", "cell_state", 19),
    ("LSTM", "forget_layer_norm_coefficients", 21),
    ("BIDIRECTIONAL_SEQUENCE_LSTM", "bw_input_to_forget_weights", 19),
    ("BIDIRECTIONAL_SEQUENCE_LSTM", "fw_output_state", 35),
    ("BIDIRECTIONAL_SEQUENCE_LSTM", "bw_cell_state", 38),
    ("BIDIRECTIONAL_SEQUENCE_LSTM", "aux_input", 39),
    ("BIDIRECTIONAL_SEQUENCE_LSTM", "fw_aux_input_to_input_weights", 40),
    ("BIDIRECTIONAL_SEQUENCE_LSTM", "bw_aux_input_to_output_weights", 47),
    ("RNN", "hidden_state", 4),
    ("BIDIRECTIONAL_SEQUENCE_RNN", "bw_hidden_state", 8),
    ("BIDIRECTIONAL_SEQUENCE_RNN", "aux_input", 9),
    ("BIDIRECTIONAL_SEQUENCE_RNN", "bw_aux_input_weights", 11),
]


@pytest.mark.parametrize(("opcode", "name", "slot"), UPSTREAM_SLOTS, ids=[f"{o}-{n}" for o, n, _ in UPSTREAM_SLOTS])
def test_slots_match_upstream(opcode, name, slot):
    assert OPERATORS[opcode].slot(name) == slot


@pytest.mark.parametrize("opcode", sorted(RECURRENT | {GRU}))
def test_recurrent_inputs_are_weight_fields(opcode):
    """Each recurrent input besides the input, aux input and states is a weights field (fw_/bw_ stripped)."""
    spec = OPERATORS[opcode]
    fields = {f.name for w in (LSTMWeights, RNNWeights, GRUWeights) for f in dataclasses.fields(w)}
    others = set(spec.inputs) - {"input", "aux_input", *spec.states}
    stripped = {n.removeprefix("fw_").removeprefix("bw_") for n in others}
    aux = {"aux_input_weights"}  # RNNWeights names it so in both directions
    assert stripped - fields - aux == set()
    assert set(spec.quantizable) <= others and set(spec.states) <= set(spec.required)


def _runtime_imports(path: pathlib.Path, package: pathlib.Path) -> set[str]:
    """The jaxlstm modules `path` imports when it runs (at module level or in a function;
    not under ``if TYPE_CHECKING:``, which only type checkers read)."""
    modules = {".".join(p.relative_to(package.parent).with_suffix("").parts) for p in package.rglob("*.py")}
    modules = {m.removesuffix(".__init__") for m in modules}
    found = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxlstm":
            names = {f"{node.module}.{a.name}" for a in node.names}
            submodules = names & modules
            found.update(submodules)
            if names - submodules:
                found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def test_no_import_cycles():
    """No jaxlstm module imports, directly or through others, a module that imports it
    (package __init__ modules, which re-export, aside)."""
    package = pathlib.Path(__file__).resolve().parents[1] / "jaxlstm"
    graph = {}
    for path in package.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        name = ".".join(path.relative_to(package.parent).with_suffix("").parts)
        graph[name] = {m for m in _runtime_imports(path, package) if m != name}
    cycles = []
    for start in graph:
        stack, seen = [(start, (start,))], set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    cycles.append(" -> ".join((*trail, nxt)))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, (*trail, nxt)))
    assert cycles == []
