"""Exported models in the LiteRT interpreter: outputs, state across invokes, dynamic shapes."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from jaxlstm.ops import LSTMOptions
from jaxlstm.parity.litert import run_litert, variable_tensors
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.models import bidirectional_lstm, stacked_lstm

ATOL = 1e-5  # float32 kernels: LiteRT's GEMMs sum in another order (its own tests use 1e-5)

EXPORTS = {
    "float": {},
    "hybrid_symmetric": {"quantize": "dynamic", "quantize_min_elements": 0},
    "hybrid_asymmetric": {"quantize": "dynamic", "quantize_min_elements": 0, "asymmetric_quantize_inputs": True},
}


def _apply_twice(model, x):
    """Our outputs for two invocations that share the state, like LiteRT without reset."""
    state = model.init_state(x.shape[0])
    runs = []
    for _ in range(2):
        outputs, state = model.apply(model.params, state, x)
        runs.append([np.asarray(o) for o in outputs])
    return runs


def _max_error(ours, lite):
    return max(float(np.max(np.abs(a - b))) for run_a, run_b in zip(ours, lite) for a, b in zip(run_a, run_b))


@pytest.mark.parametrize("export", EXPORTS, ids=str)
@pytest.mark.parametrize("make", [stacked_lstm, bidirectional_lstm], ids=["stacked", "bidirectional"])
def test_state_carries_across_invokes_like_apply(make, export, rng):
    """Streaming: LiteRT keeps variable tensors from one invoke to the next; `apply` threads `state`."""
    m = make(rng, batch=2, time=6)
    data = export_tflite(m, stateful=True, **EXPORTS[export])
    x = rng.normal(size=(2, 6, 5)).astype(np.float32) * 2
    # Builtin kernels: XNNPACK ignores symmetric hybrid FULLY_CONNECTED (see below).
    lite = run_litert(data, [x], invocations=2, reset=False, xnnpack=False)
    assert np.max(np.abs(lite[0][0] - lite[1][0])) > 1e-3  # the second run saw the carried state
    assert _max_error(_apply_twice(load_tflite(data), x), lite) <= ATOL


def test_reset_all_variables_restarts_from_zero(rng):
    m = stacked_lstm(rng, batch=2, time=6)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    first, second = run_litert(export_tflite(m, stateful=True), [x], invocations=2, reset=True)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_allclose(first[0], m(x)[0], atol=ATOL)


@pytest.mark.parametrize("stateful", [None, False], ids=["default", "stateful_false"])
@pytest.mark.parametrize("batch_size", [None, 2], ids=["dynamic_batch", "static_batch"])
def test_predict_export_starts_every_invoke_from_zero(batch_size, stateful, rng):
    m = stacked_lstm(rng)
    data = export_tflite(m, stateful=stateful, batch_size=batch_size)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    first, second = run_litert(data, [x], invocations=2, reset=False)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_allclose(first[0], m(x)[0], atol=ATOL)


@pytest.mark.parametrize(("batch", "time"), [(1, 3), (3, 7)])
def test_dynamic_batch_and_time(batch, time, rng):
    """Inputs resize freely. Stateful: LiteRT checks NumElements(state) == batch * n, so the
    variable tensors must be resized too (run_litert's state_batch); predict exports (the
    default) size their state from the input (FILL dims from SHAPE) and need nothing."""
    m = stacked_lstm(rng)
    x = rng.normal(size=(batch, time, 5)).astype(np.float32)
    expected = np.asarray(m(x)[0])
    (stateful,) = run_litert(export_tflite(m, stateful=True), [x], state_batch=batch)
    (stateless,) = run_litert(export_tflite(m), [x])
    np.testing.assert_allclose(stateful[0], expected, atol=ATOL)
    np.testing.assert_allclose(stateless[0], expected, atol=ATOL)


def test_stateful_batch_change_requires_resizing_the_state(rng):
    data = export_tflite(stacked_lstm(rng), stateful=True)
    assert [sig for _, sig in variable_tensors(data)] == [(-1, 8), (-1, 8), (-1, 6), (-1, 6)]
    with pytest.raises(RuntimeError, match="NumElements"):
        run_litert(data, [np.zeros((3, 4, 5), np.float32)])  # state left at batch 1


def test_signature_runner(rng):
    m = stacked_lstm(rng)
    runner = Interpreter(model_content=export_tflite(m)).get_signature_runner("serving_default")
    for batch, time in ((2, 5), (4, 3), (1, 8)):
        x = rng.normal(size=(batch, time, 5)).astype(np.float32)
        np.testing.assert_allclose(runner(input=x)["probabilities"], m(x)[0], atol=ATOL)


@pytest.mark.parametrize("stateful", [False, True], ids=["predict", "streaming"])
@pytest.mark.parametrize("export", EXPORTS, ids=str)
def test_round_trip_through_litert(export, stateful, rng):
    """export(load(data)) runs in LiteRT with the same outputs as data, over two invokes."""
    data = export_tflite(bidirectional_lstm(rng, batch=2, time=5), stateful=stateful, **EXPORTS[export])
    again = export_tflite(load_tflite(data))
    x = rng.normal(size=(2, 5, 5)).astype(np.float32)
    for a, b in zip(
        run_litert(data, [x], invocations=2, reset=False), run_litert(again, [x], invocations=2, reset=False)
    ):
        np.testing.assert_array_equal(a[0], b[0])


def test_xnnpack_quantizes_hybrid_fully_connected_asymmetrically(rng):
    """Known LiteRT behaviour: the XNNPACK delegate (on by default) runs hybrid
    FULLY_CONNECTED with asymmetric input quantization whatever the op's option; jaxlstm
    follows TFLite's builtin kernel. Asymmetric exports agree with both."""
    m = stacked_lstm(rng, batch=2, time=4)
    x = rng.normal(size=(2, 4, 5)).astype(np.float32)
    for asymmetric in (False, True):
        data = export_tflite(m, quantize="dynamic", quantize_min_elements=0, asymmetric_quantize_inputs=asymmetric)
        ours = np.asarray(load_tflite(data)(x)[0])
        ((builtin,),) = run_litert(data, [x], xnnpack=False)
        ((delegated,),) = run_litert(data, [x])
        np.testing.assert_allclose(builtin, ours, atol=ATOL)
        assert (np.max(np.abs(delegated - ours)) <= ATOL) == asymmetric


def _cell_model(kind: str, rng):
    """One LSTM (FULL kernel), BASIC LSTM or RNN cell on [batch, 5]: a single-step model."""
    from jaxlstm.model import ModelBuilder
    from jaxlstm.ops import RNNOptions, RNNWeights
    from tests.tflite.models import lstm_weights

    b = ModelBuilder()
    x = b.add_input("input", (-1, 5))
    if kind == "lstm":
        y = b.add_lstm_cell(x, lstm_weights(rng, 5, 4), LSTMOptions())
    elif kind == "basic_lstm":
        y = b.add_basic_lstm_cell(x, rng.normal(size=(16, 9)).astype(np.float32) * 0.4, np.zeros(16, np.float32))
    else:
        w = RNNWeights(*(rng.normal(size=s).astype(np.float32) * 0.4 for s in ((4, 5), (4, 4), (4,))))
        y = b.add_rnn_cell(x, w, RNNOptions("TANH"))
    return b.build([y])


@pytest.mark.parametrize("stateful", [False, True], ids=["predict", "streaming"])
@pytest.mark.parametrize("kind", ["lstm", "basic_lstm", "rnn", "sequence"])
def test_reexported_file_runs_as_the_original_over_several_invokes(kind, stateful, rng):
    """export_tflite(load_tflite(b)) with the defaults runs in LiteRT exactly as b, one step
    (or one chunk) per invoke without a reset, and the loaded model streams like the file."""
    model = stacked_lstm(rng) if kind == "sequence" else _cell_model(kind, rng)
    data = export_tflite(model, stateful=stateful, batch_size=2)
    loaded = load_tflite(data)
    assert loaded.stateful is stateful
    again = export_tflite(loaded)
    shape = (2, 3, 5) if kind == "sequence" else (2, 5)
    x = rng.normal(size=shape).astype(np.float32)
    original = run_litert(data, [x], invocations=3, reset=False, xnnpack=False)
    for a, b in zip(original, run_litert(again, [x], invocations=3, reset=False, xnnpack=False)):
        np.testing.assert_array_equal(a[0], b[0])
    carried = bool(np.abs(original[0][0] - original[2][0]).max() > 1e-4)
    assert carried == stateful
    state = None
    for invoke in original:  # jaxlstm: apply threads the state of a streaming model
        outputs, new_state = loaded.apply(loaded.params, state, x)
        state = new_state if stateful else None
        np.testing.assert_allclose(outputs[0], invoke[0], atol=ATOL)
