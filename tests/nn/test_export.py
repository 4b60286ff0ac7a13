"""`jaxlstm.nn` export: `to_model` in JAX, and the .tflite files in the LiteRT interpreter."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.tflite import export_tflite

from ._layers import BIDIRECTIONAL_CASES, LSTM_BASE, LSTM_CASES, RNN_BASE, SAME_MATH_TOL, TOL, B, T, inputs, make

EXPORTED_OP = {
    "lstm": "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "bidirectional_lstm": "BIDIRECTIONAL_SEQUENCE_LSTM",
    "simple_rnn": "UNIDIRECTIONAL_SEQUENCE_RNN",
    "bidirectional_rnn": "BIDIRECTIONAL_SEQUENCE_RNN",
}
EXPORT_CASES = (
    [("lstm", c) for c in LSTM_CASES]
    + [("bidirectional_lstm", c) for c in BIDIRECTIONAL_CASES]
    + [(k, c) for k in ("simple_rnn", "bidirectional_rnn") for c in (RNN_BASE, RNN_BASE.replace(time_major=True))]
)


def run_litert(data, x, batch=B):
    litert = pytest.importorskip("jaxlstm.parity.litert")
    return litert.run_litert(data, [x], state_batch=batch)[0][0]


@pytest.mark.parametrize("kind, case", EXPORT_CASES, ids=str)
def test_export_matches_litert(kind, case):
    """The layer, its `Model` in JAX and its .tflite file in LiteRT give the same outputs."""
    layer = make(kind, case)
    x = inputs(case.time_major)
    model = layer.to_model()
    assert [op for op in model.opcodes if "SEQUENCE" in op] == [EXPORTED_OP[kind]]
    expected = np.asarray(layer(x))
    np.testing.assert_allclose(model(x)[0], expected, atol=SAME_MATH_TOL, rtol=0)
    np.testing.assert_allclose(run_litert(export_tflite(layer), x), expected, atol=TOL, rtol=0)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
def test_static_shapes(time_major):
    layer = make("lstm", LSTM_BASE.replace(time_major=time_major))
    x = inputs(time_major)
    model = layer.to_model(batch_size=B, time_steps=T)
    assert model.tensors[model.inputs[0]].shape == ((T, B, 4) if time_major else (B, T, 4))
    np.testing.assert_allclose(run_litert(export_tflite(model), x), layer(x), atol=TOL, rtol=0)


def test_bidirectional_lstm_batch_major_rows_all_match():
    """LiteRT mis-addresses the state of batch-major merged BIDIRECTIONAL_SEQUENCE_LSTM
    outputs from row 2 on (lstm_eval.cc EvalFloat), so batch-major layers export unmerged
    outputs plus a CONCATENATION; every row must match."""
    layer = make("bidirectional_lstm")
    x = inputs(batch=4)
    model = layer.to_model()
    assert model.opcodes == ["BIDIRECTIONAL_SEQUENCE_LSTM", "CONCATENATION"]
    np.testing.assert_allclose(run_litert(export_tflite(layer), x, batch=4), layer(x), atol=TOL, rtol=0)


def test_dynamic_range_int8_matches_hybrid_emulation():
    """The int8 file in LiteRT equals jaxlstm's emulation of the hybrid kernels on the same file."""
    from jaxlstm.tflite import load_tflite

    layer = make("lstm", LSTM_BASE.replace(peephole=True, projection=True, n_output=3))
    x = inputs()
    data = export_tflite(layer, quantize="dynamic", quantize_min_elements=1)
    emulation = load_tflite(data)
    assert any(t.dtype == "int8" for t in emulation.tensors)
    got = run_litert(data, x)
    np.testing.assert_allclose(got, emulation(x)[0], atol=TOL, rtol=0)
    # Weight quantization error against the float layer: upstream hybrid kernel tests allow 1.6e-2.
    np.testing.assert_allclose(got, layer(x), atol=2e-2, rtol=0)


def test_exported_lstm_on_padded_batch():
    """The fused op has no length input: on a right-padded batch the exported model equals the
    layer with seq_lengths at the valid steps, and not at the padded ones (documented)."""
    layer = make("lstm", LSTM_BASE.replace(peephole=True))
    x = inputs()
    lengths = np.array([T, 2, 4])
    expected = np.asarray(layer(x, seq_lengths=jnp.asarray(lengths)))
    got = run_litert(export_tflite(layer), x)
    for b, length in enumerate(lengths):
        np.testing.assert_allclose(got[b, :length], expected[b, :length], atol=TOL, rtol=0)
        if length < T:
            assert np.abs(got[b, length:]).min() > 0  # the fused op keeps running on the padding
