"""PyTorch nn.LSTM / nn.RNN -> fused ops: outputs match torch's forward pass in JAX and in
LiteRT after export (one fused op per layer). nn.GRU: test_gru.py."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm import export_tflite
from jaxlstm.convert import from_torch

from ._helpers import assert_converted_matches, assert_outputs_close, tflite_opcodes

torch = pytest.importorskip("torch")

BATCH, TIME, N_INPUT, HIDDEN = 2, 5, 3, 4

CASES = [
    pytest.param(torch.nn.LSTM, dict(), id="lstm"),
    pytest.param(torch.nn.LSTM, dict(num_layers=2, batch_first=True), id="lstm_2layers_batch_first"),
    pytest.param(torch.nn.LSTM, dict(proj_size=2, bias=False), id="lstm_proj_no_bias"),
    pytest.param(
        torch.nn.LSTM, dict(bidirectional=True, batch_first=True, proj_size=3), id="lstm_bidi_batch_first_proj"
    ),
    pytest.param(torch.nn.RNN, dict(), id="rnn_tanh"),
    pytest.param(torch.nn.RNN, dict(nonlinearity="relu", num_layers=2, bidirectional=True), id="rnn_relu_2layers_bidi"),
    pytest.param(torch.nn.RNN, dict(batch_first=True, bidirectional=True), id="rnn_bidi_batch_first"),
]


def _module(cls, **kwargs):
    torch.manual_seed(0)
    return cls(N_INPUT, HIDDEN, **kwargs)


def _input(batch_first: bool) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, N_INPUT)).astype(np.float32)
    return x if batch_first else np.ascontiguousarray(np.swapaxes(x, 0, 1))


def _torch_output(module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


@pytest.mark.parametrize("cls,kwargs", CASES)
def test_torch_module_matches_torch(cls, kwargs):
    module = _module(cls, **kwargs)
    x = _input(module.batch_first)
    assert_converted_matches(from_torch(module, batch_size=BATCH), [x], [_torch_output(module, x)])


def test_headline_torch_projected_bidirectional_two_layer_lstm():
    module = _module(torch.nn.LSTM, proj_size=2, bidirectional=True, num_layers=2)
    x = _input(batch_first=False)
    converted = from_torch(module, batch_size=BATCH)
    assert converted.opcodes == ["BIDIRECTIONAL_SEQUENCE_LSTM"] * 2
    assert tflite_opcodes(export_tflite(converted, stateful=True)) == ["BIDIRECTIONAL_SEQUENCE_LSTM"]
    # predict (the default): a FILL zeroes each state tensor before the op
    assert tflite_opcodes(export_tflite(converted)) == ["FILL", "BIDIRECTIONAL_SEQUENCE_LSTM"]
    assert_converted_matches(converted, [x], [_torch_output(module, x)])


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        pytest.param(torch.nn.LSTM, dict(num_layers=2, proj_size=3, batch_first=True), id="lstm"),
        pytest.param(torch.nn.RNN, dict(nonlinearity="relu", bidirectional=True), id="rnn_relu"),
    ],
)
def test_state_dict_matches_module(cls, kwargs):
    module = _module(cls, **kwargs)
    x = _input(module.batch_first)
    converted = from_torch(
        module.state_dict(), batch_first=module.batch_first, nonlinearity=kwargs.get("nonlinearity"), batch_size=BATCH
    )
    assert_outputs_close(converted(x), [_torch_output(module, x)])


def test_unsupported_module_raises_not_implemented():
    with pytest.raises(NotImplementedError, match=r"nn\.GRU"):
        from_torch(torch.nn.Linear(N_INPUT, HIDDEN))


def test_layout_arguments_with_a_module_raise_type_error():
    with pytest.raises(TypeError, match="batch_first"):
        from_torch(_module(torch.nn.LSTM), batch_first=True)
