"""PyTorch ``nn.LSTM`` / ``nn.RNN`` / ``nn.GRU`` -> a `Model` of TFLite fused ops (and GRU operators).

Layout (torch/nn/modules/rnn.py), per layer k and direction (suffix ``_reverse`` backward):
``weight_ih_l{k}`` [G*H, D_k] and ``weight_hh_l{k}`` [G*H, P] used as ``W @ x`` (TFLite's
layout already), ``bias_ih_l{k}`` + ``bias_hh_l{k}`` [G*H] (summed: the op has one bias),
and with ``proj_size`` P > 0 ``weight_hr_l{k}`` [P, H] (= TFLite projection_weights, no
projection bias, no clipping). LSTM blocks are i, f, g, o (G = 4); RNN has G = 1 with
tanh or relu. GRU blocks are r, z, n (G = 3) with both biases kept apart (``bias_hh``'s
n block sits inside the reset gate's product). D_k is the input size for k = 0, else num_directions * (P or H).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm.convert import _gates, _graph
from jaxlstm.model import Model, ModelBuilder
from jaxlstm.ops.gru import GRUOptions, GRUWeights
from jaxlstm.ops.lstm import LSTMOptions, LSTMWeights
from jaxlstm.ops.rnn import RNNOptions, RNNWeights

_NONLINEARITIES = {name: _gates.RNN_SOURCE_ACTIVATIONS[name] for name in ("tanh", "relu")}  # nn.RNN's two


def from_torch(
    module_or_state_dict: Any,
    *,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    batch_size: int | None = None,
    time_steps: int | None = None,
) -> Model:
    """Converts ``torch.nn.LSTM`` / ``nn.RNN`` / ``nn.GRU`` (or its state dict) to fused ops.

    Each layer becomes one UNIDIRECTIONAL_SEQUENCE_LSTM / _RNN, or with
    ``bidirectional=True`` one BIDIRECTIONAL_SEQUENCE_LSTM / _RNN with ``merge_outputs``
    ([fw | bw] on the feature axis, like PyTorch). Each GRU direction is the model's GRU
    operator (`ModelBuilder.add_gru`): any length in JAX; TFLite has no GRU operator, so
    the export unrolls it (``export_tflite(..., time_steps=T)``). Only the output sequence is produced
    (no h_n / c_n); the state starts at zero (no ``(h_0, c_0)`` argument). Inter-layer
    dropout is training-only and ignored.

    Args:
      module_or_state_dict: an ``nn.LSTM`` / ``nn.RNN`` / ``nn.GRU``, or its ``state_dict()`` (the kind,
        layer count, directions and projection are read from the tensor names and shapes).
      batch_first: for a state dict: the input layout (default False, [T, B, D] like
        PyTorch). A module carries its own.
      nonlinearity: for an RNN state dict: "tanh" (default) or "relu".
      batch_size: None (default) keeps the batch dynamic, like PyTorch; an int fixes the
        batch of the input and state tensors.
      time_steps: a fixed sequence length, or None (default) for a dynamic one.

    Returns:
      A `Model` from ``input`` ([T, B, D], or [B, T, D] if batch_first) to ``output``.

    Raises:
      NotImplementedError: another module type.
      ValueError: a state dict with missing or inconsistent tensors.
    """
    state, batch_first, nonlinearity = _read(module_or_state_dict, batch_first, nonlinearity)
    layers = sorted({int(k.split("_l")[-1].split("_")[0]) for k in state if k.startswith("weight_ih_l")})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"state dict has no consecutive weight_ih_l0, weight_ih_l1, ...: {sorted(state)}")
    kind = _kind(state)
    time_major = not batch_first
    if kind == "LSTM":
        options = LSTMOptions("TANH", time_major=time_major)
    elif kind == "GRU":
        options = GRUOptions(time_major=time_major)
    else:
        activation = _gates.fused_activation(
            nonlinearity, _NONLINEARITIES, "torch nn.RNN", "use nonlinearity='tanh' or 'relu'"
        )
        options = RNNOptions(activation, time_major=time_major)
    bidirectional = "weight_ih_l0_reverse" in state
    batch_size = _graph.check_batch_size(batch_size)
    b = ModelBuilder(batch_size)
    n_input = state["weight_ih_l0"].shape[1]
    x = b.add_input(
        "input", _graph.input_shape(n_input, batch_size=batch_size, time_steps=time_steps, time_major=time_major)
    )
    for k in layers:
        fw = _direction(state, kind, f"_l{k}")
        if bidirectional:
            (x,) = _graph.add_bidirectional(
                b, x, fw, _direction(state, kind, f"_l{k}_reverse"), options, name=f"layer{k}"
            )
        else:
            x = _graph.add_recurrent(b, x, fw, options, name=f"layer{k}")
    return b.build([x], ["output"])


def lstm_weights_from_torch(
    weight_ih: Any, weight_hh: Any, bias_ih: Any = None, bias_hh: Any = None, *, weight_hr: Any = None
) -> LSTMWeights:
    """`LSTMWeights` of one layer and direction of a ``torch.nn.LSTM`` (blocks i, f, g, o).

    Args:
      weight_ih: ``weight_ih_l{k}`` [4 * H, n_input] (a tensor or an array).
      weight_hh: ``weight_hh_l{k}`` [4 * H, P], P = proj_size or H.
      bias_ih, bias_hh: [4 * H] each, or None (``bias=False``); summed into the gate biases.
      weight_hr: ``weight_hr_l{k}`` [P, H] with ``proj_size`` > 0 (projection_weights), or None.

    Returns:
      `LSTMWeights` (torch tensors become float32 NumPy arrays; arrays keep their type).
    """
    weight_ih, weight_hh, bias_ih, bias_hh, weight_hr = map(
        _untorch, (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr)
    )
    bias = _summed_bias(weight_ih, bias_ih, bias_hh)
    weights = _gates.lstm_weights_from_fused(weight_ih.T, weight_hh.T, bias, "ifco")
    return weights.replace(projection_weights=weight_hr)


def rnn_weights_from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any = None, bias_hh: Any = None) -> RNNWeights:
    """`RNNWeights` of one layer and direction of a ``torch.nn.RNN`` (arguments as `lstm_weights_from_torch`,
    [H, n_input] and [H, H]; the two biases summed)."""
    weight_ih, weight_hh, bias_ih, bias_hh = map(_untorch, (weight_ih, weight_hh, bias_ih, bias_hh))
    return RNNWeights(weight_ih, weight_hh, _summed_bias(weight_ih, bias_ih, bias_hh))


def gru_weights_from_torch(weight_ih: Any, weight_hh: Any, bias_ih: Any = None, bias_hh: Any = None) -> GRUWeights:
    """`GRUWeights` of one layer and direction of a ``torch.nn.GRU`` (blocks r, z, n; reset-after).

    Args:
      weight_ih: ``weight_ih_l{k}`` [3 * H, n_input] (a tensor or an array).
      weight_hh: ``weight_hh_l{k}`` [3 * H, H].
      bias_ih, bias_hh: [3 * H] each, or None (``bias=False``); kept apart, as ``bias_hh``'s
        n block sits inside the reset gate's product.

    Returns:
      `GRUWeights` (torch tensors become float32 NumPy arrays; arrays keep their type); run
      it with ``GRUOptions(reset_after=True)``.
    """
    weight_ih, weight_hh, bias_ih, bias_hh = map(_untorch, (weight_ih, weight_hh, bias_ih, bias_hh))
    return _gates.gru_weights_from_fused(weight_ih.T, weight_hh.T, bias_ih, bias_hh, "rzn")


def _read(obj: Any, batch_first: bool | None, nonlinearity: str | None) -> tuple[dict, bool, str]:
    """(state dict as float32 NumPy, batch_first, nonlinearity) from a module or a state dict."""
    if hasattr(obj, "state_dict"):
        if batch_first is not None or nonlinearity is not None:
            raise TypeError("batch_first / nonlinearity are read from the module; pass them only with a state dict")
        kind = type(obj).__name__
        if kind not in ("LSTM", "RNN", "GRU"):
            _unsupported(kind)
        return _numpy(obj.state_dict()), bool(obj.batch_first), getattr(obj, "nonlinearity", "tanh")
    return _numpy(obj), bool(batch_first), nonlinearity or "tanh"


def _numpy(state: Any) -> dict[str, np.ndarray]:
    return {k: _gates.as_float32(_untorch(v)) for k, v in state.items()}


def _untorch(value: Any) -> Any:
    """A torch tensor as a float32 NumPy array; anything else as it is."""
    return value.detach().cpu().float().numpy() if hasattr(value, "detach") else value


def _unsupported(kind: str) -> None:
    raise NotImplementedError(
        f"torch {kind} has no conversion (supported: nn.LSTM, nn.RNN, nn.GRU). "
        "Workaround: use one of them, or export through another path."
    )


def _kind(state: dict[str, np.ndarray]) -> str:
    if "weight_hr_l0" in state:
        return "LSTM"
    rows, cols = state["weight_hh_l0"].shape
    gates = rows // cols if cols and rows % cols == 0 else 0
    kind = {4: "LSTM", 1: "RNN", 3: "GRU"}.get(gates)
    if kind is None:
        raise ValueError(
            f"weight_hh_l0 has shape {(rows, cols)}: expected [G * H, H] with G = 4 (LSTM), 1 (RNN) or 3 (GRU)"
        )
    return kind


def _direction(state: dict[str, np.ndarray], kind: str, suffix: str):
    """The op weights of one layer and direction, e.g. suffix ``_l1_reverse``."""
    try:
        tensors = [state[f"weight_ih{suffix}"], state[f"weight_hh{suffix}"]]
    except KeyError as e:
        raise ValueError(f"state dict lacks {e.args[0]}") from None
    tensors += [state.get(f"bias_ih{suffix}"), state.get(f"bias_hh{suffix}")]
    if kind == "GRU":
        return gru_weights_from_torch(*tensors)
    if kind == "RNN":
        return rnn_weights_from_torch(*tensors)
    return lstm_weights_from_torch(*tensors, weight_hr=state.get(f"weight_hr{suffix}"))


def _summed_bias(weight_ih: Any, bias_ih: Any, bias_hh: Any) -> Any:
    """``bias_ih + bias_hh``, a missing one (``bias=False``) as zeros: the op has one bias."""
    zeros = np.zeros(weight_ih.shape[0], np.float32)
    return (zeros if bias_ih is None else bias_ih) + (zeros if bias_hh is None else bias_hh)
