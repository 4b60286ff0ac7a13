"""load_tflite checks each recurrent op's state tensors against its input batch and weights.

Valid models come from `ModelBuilder` + `export_tflite`; a state tensor's shape is then
corrupted in the flatbuffer. The expected shapes are those of the kernels' Prepare functions:
output_state [n_batch, n_output], cell_state [n_batch, n_cell] (the LSTM kernels also accept
them flat, checking only the element count), hidden_state [n_batch, n_units].
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from jaxlstm.model import Model, ModelBuilder
from jaxlstm.model.graph import MAX_STATE_ELEMENTS
from jaxlstm.ops import LSTMOptions, RNNOptions
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite
from tests.cases import LSTMCase
from tests.ops.cases import lstm_weights, normal, rnn_weights
from tests.tflite.models import edit_flatbuffer

B, T, N_INPUT, N_CELL, N_OUTPUT, N_UNITS = 2, 3, 4, 5, 3, 6
ATOL = 1e-5  # float32 kernels: LiteRT's GEMMs sum in another order (its own tests use 1e-5)
# Projection makes n_output (3) differ from n_cell (5), so a swapped size is caught.
_LSTM = LSTMCase(n_input=N_INPUT, n_cell=N_CELL, n_output=N_OUTPUT, projection=True)


def _model(kind: str, batch: int = B, state_batch: int | None = None) -> Model:
    """One recurrent op of `kind` (all its outputs) on an input of batch `batch` (-1: dynamic)."""
    rng = np.random.default_rng(0)
    b = ModelBuilder(state_batch)
    time_major = kind.endswith("_tm")
    cell = kind in ("lstm_cell", "rnn_cell")
    shape = (batch, N_INPUT) if cell else (T, batch, N_INPUT) if time_major else (batch, T, N_INPUT)
    x = b.add_input("input", shape)
    if "lstm" in kind:
        options = LSTMOptions(time_major=time_major)
        if kind.startswith("bidirectional"):
            fw, bw = lstm_weights(_LSTM, rng), lstm_weights(_LSTM, rng)
            ys = b.add_bidirectional_lstm(x, fw, bw, options, merge_outputs=False)
        else:
            add = b.add_lstm_cell if cell else b.add_lstm
            ys = [add(x, lstm_weights(_LSTM, rng), options)]
    else:
        options = RNNOptions(time_major=time_major)
        if kind.startswith("bidirectional"):
            fw, bw = rnn_weights(N_INPUT, N_UNITS, rng), rnn_weights(N_INPUT, N_UNITS, rng)
            ys = b.add_bidirectional_rnn(x, fw, bw, options, merge_outputs=False)
        else:
            add = b.add_rnn_cell if cell else b.add_rnn
            ys = [add(x, rnn_weights(N_INPUT, N_UNITS, rng), options)]
    return b.build(ys)


# kind -> (operator, state tensor name, input name, its position, size name, size)
_STATES = {
    "sequence_lstm": [
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm/output_state", "output_state", 18, "n_output", N_OUTPUT),
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm/cell_state", "cell_state", 19, "n_cell", N_CELL),
    ],
    "sequence_lstm_tm": [
        ("UNIDIRECTIONAL_SEQUENCE_LSTM", "lstm/cell_state", "cell_state", 19, "n_cell", N_CELL),
    ],
    "lstm_cell": [
        ("LSTM", "lstm_cell/output_state", "output_state", 18, "n_output", N_OUTPUT),
    ],
    "bidirectional_lstm": [
        ("BIDIRECTIONAL_SEQUENCE_LSTM", f"bidirectional_lstm/{name}", name, p, size_name, size)
        for name, p, size_name, size in (
            ("fw_output_state", 35, "n_output", N_OUTPUT),
            ("fw_cell_state", 36, "n_cell", N_CELL),
            ("bw_output_state", 37, "n_output", N_OUTPUT),
            ("bw_cell_state", 38, "n_cell", N_CELL),
        )
    ],
    "bidirectional_lstm_tm": [
        ("BIDIRECTIONAL_SEQUENCE_LSTM", "bidirectional_lstm/bw_cell_state", "bw_cell_state", 38, "n_cell", N_CELL),
    ],
    "sequence_rnn": [
        ("UNIDIRECTIONAL_SEQUENCE_RNN", "rnn/hidden_state", "hidden_state", 4, "n_units", N_UNITS),
    ],
    "sequence_rnn_tm": [
        ("UNIDIRECTIONAL_SEQUENCE_RNN", "rnn/hidden_state", "hidden_state", 4, "n_units", N_UNITS),
    ],
    "rnn_cell": [
        ("RNN", "rnn_cell/hidden_state", "hidden_state", 4, "n_units", N_UNITS),
    ],
    "bidirectional_rnn": [
        (
            "BIDIRECTIONAL_SEQUENCE_RNN",
            f"bidirectional_rnn/{d}_hidden_state",
            f"{d}_hidden_state",
            p,
            "n_units",
            N_UNITS,
        )
        for d, p in (("fw", 4), ("bw", 8))
    ],
}
# Corrupt shapes, from the state's batch b and size n.
_CORRUPTIONS = {
    "huge": lambda b, n: [1, 10**9],
    "size_plus_3": lambda b, n: [b, n + 3],
    "batch_plus_1": lambda b, n: [b + 1, n],
    "rank3": lambda b, n: [1, b, n],  # the right element count, but states are 1-D or 2-D
    "flat_wrong_count": lambda b, n: [b * n + 1],
}
_CASES = [
    pytest.param(kind, state, corruption, id=f"{kind}-{state[2]}-{corruption}")
    for kind, states in _STATES.items()
    for state in states
    for corruption in _CORRUPTIONS
]


def _set_shape(data: bytes, tensor_name: str, signature: list[int]) -> bytes:
    """`data` with tensor `tensor_name`'s shape_signature set to `signature` (and its shape
    to the same, with 1 for each dynamic dimension, as the converter writes)."""

    def edit(model):
        t = next(t for t in model.subgraphs[0].tensors if t.name.decode() == tensor_name)
        t.shapeSignature = np.asarray(signature, np.int32)
        t.shape = np.asarray([max(d, 1) for d in signature], np.int32)

    return edit_flatbuffer(data, edit)


@pytest.fixture(scope="module")
def exported() -> dict[str, bytes]:
    """Streaming exports: no state-zeroing operators, so operator 0 is the recurrent op."""
    return {kind: export_tflite(_model(kind), stateful=True) for kind in _STATES}


@pytest.mark.parametrize("kind", list(_STATES))
def test_exported_models_load(exported, kind):
    """The uncorrupted files load, so the rejections below come from the corruption."""
    assert load_tflite(exported[kind]).operators


@pytest.mark.parametrize("kind, state, corruption", _CASES)
def test_corrupt_state_shape_is_rejected(exported, kind, state, corruption):
    opcode, tensor, input_name, position, size_name, size = state
    bad = _CORRUPTIONS[corruption](B, size)
    data = _set_shape(exported[kind], tensor, bad)
    with pytest.raises(ValueError) as info:
        load_tflite(data)
    message = str(info.value)
    for part in (
        f"operator 0 ({opcode})",
        f"{input_name} (position {position},",
        repr(tensor),
        f"shape {bad}",
        f"expected {[B, size]}",
        f"{size_name} from",
    ):
        assert part in message, f"{part!r} missing from: {message}"


@pytest.mark.parametrize("kind", ["sequence_lstm", "lstm_cell", "bidirectional_lstm"])
def test_flat_lstm_state_loads_and_matches_litert(exported, kind):
    """The LSTM kernels accept states flattened to [n_batch * size] (they check only the
    element count); LiteRT runs the same file, so the flat state is real, not a loophole."""
    data = exported[kind]
    for _, tensor, _, _, _, size in _STATES[kind]:
        data = _set_shape(data, tensor, [B * size])
    model = load_tflite(data)
    x = normal(np.random.default_rng(1), *model.tensors[model.inputs[0]].shape, scale=1.0)
    expected = run_litert(data, [x], xnnpack=False)[0]
    for got, want in zip(model(x), expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=ATOL)


def test_flat_rnn_state_is_rejected(exported):
    """The RNN kernels require a 2-D hidden state."""
    data = _set_shape(exported["sequence_rnn"], "rnn/hidden_state", [B * N_UNITS])
    with pytest.raises(ValueError, match=re.escape(f"shape [{B * N_UNITS}], expected [{B}, {N_UNITS}]")):
        load_tflite(data)


@pytest.mark.parametrize("state_batch", [None, 1, 3], ids=lambda s: f"state_batch_{s}")
@pytest.mark.parametrize("kind", ["sequence_lstm_tm", "bidirectional_lstm", "sequence_rnn", "bidirectional_rnn"])
def test_dynamic_input_batch_accepts_the_states_the_exporter_writes(kind, state_batch):
    """With a dynamic input batch, the exporter writes the states' batch as -1 or as the
    builder's fixed batch_size; both load."""
    model = load_tflite(export_tflite(_model(kind, batch=-1, state_batch=state_batch)))
    state = model.init_state(batch_size=state_batch or B)
    assert {np.shape(v)[0] for v in state.values()} == {state_batch or B}


def test_init_state_refuses_a_huge_state():
    """Defence in depth: a dynamic-batch state that a huge batch_size would make enormous."""
    model = load_tflite(export_tflite(_model("sequence_lstm", batch=-1)))
    batch = MAX_STATE_ELEMENTS // N_CELL + 1
    with pytest.raises(ValueError, match=re.escape(f"'lstm/cell_state' would have shape [{batch}, {N_CELL}]")):
        model.init_state(batch_size=batch)


def test_huge_static_state_with_dynamic_batch_fails_before_allocating():
    """A static state batch matches a dynamic input batch at load (the builder's batch_size
    writes such files), so an absurd one is refused by `Model.init_state`, not allocated."""
    data = _set_shape(export_tflite(_model("sequence_rnn", batch=-1)), "rnn/hidden_state", [10**8, N_UNITS])
    model = load_tflite(data)
    x = np.zeros((B, T, N_INPUT), np.float32)
    with pytest.raises(ValueError, match=re.escape(f"'rnn/hidden_state' would have shape [{10**8}, {N_UNITS}]")):
        model(x)
