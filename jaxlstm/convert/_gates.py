"""Gate-order and activation helpers shared by the converters.

Every source packs an LSTM's gates into one matrix in its own block order. Orders are
written as letters of ``i f c o`` (input gate, forget gate, cell candidate, output gate):

    Keras, PyTorch, flax  "ifco"      TF1 LSTMCell  "icfo" (j = candidate)
    Lingvo                "cifo"      Lingvo coupled (CIFG)  "cfo"

An order without ``i`` is CIFG: the op computes the input gate as 1 - forget.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxlstm.ops.lstm import GATES, LSTMWeights

_LETTER_GATES = dict(zip("ifco", GATES))

# Source activation names -> TFLite fused activations the recurrent ops can run exactly.
# LSTM excludes NONE: the upstream float kernel leaves h = o * g for it (SPEC §6.6).
LSTM_ACTIVATIONS = {"tanh": "TANH", "relu": "RELU", "relu6": "RELU6"}
RNN_ACTIVATIONS = {**LSTM_ACTIVATIONS, "linear": "NONE"}
# GRU activations (candidate and gates): those `ModelBuilder.add_gru` has builtin operators for.
GRU_ACTIVATIONS = {**RNN_ACTIVATIONS, "sigmoid": "SIGMOID"}


def as_float32(value: Any) -> np.ndarray:
    """A float32 NumPy array from an array-like (NumPy, JAX, TF, h5py data)."""
    return np.asarray(value, dtype=np.float32)


def split_blocks(packed: np.ndarray, order: str, axis: int = 0) -> dict[str, np.ndarray]:
    """Splits `packed` into ``len(order)`` equal gate blocks along `axis`.

    Returns:
      {gate name ("input", "forget", "cell", "output"): block} for the gates in `order`.
    """
    if len(set(order)) != len(order) or not set(order) <= set("ifco") or not set("fco") <= set(order):
        raise ValueError(f"gate order {order!r} must name f, c, o (and optionally i) once each")
    if packed.shape[axis] % len(order):
        raise ValueError(
            f"packed gate axis {axis} of shape {packed.shape} is not divisible into {len(order)} gates ({order!r})"
        )
    blocks = np.split(packed, len(order), axis=axis)
    return {_LETTER_GATES[letter]: b for letter, b in zip(order, blocks)}


def packed_lstm_weights(
    input_weights: Any,
    recurrent_weights: Any,
    bias: Any,
    order: str,
    **optional: Any,
) -> LSTMWeights:
    """`LSTMWeights` from packed matrices in TFLite layout (rows = gates, used as W @ x).

    Args:
      input_weights: [G * n_cell, n_input], gate blocks stacked along rows in `order`.
      recurrent_weights: [G * n_cell, n_output].
      bias: [G * n_cell] (the sum of all the source's biases).
      order: the block order, e.g. ``"ifco"``; without ``i`` the result is CIFG.
      **optional: other `LSTMWeights` fields (peephole, projection, layer norm), as arrays.

    Returns:
      `LSTMWeights` with float32 per-gate tensors.
    """
    fields = {}
    for kind, packed in (
        ("input_to_{}_weights", input_weights),
        ("recurrent_to_{}_weights", recurrent_weights),
        ("{}_gate_bias", bias),
    ):
        for gate, block in split_blocks(as_float32(packed), order).items():
            fields[kind.format(gate)] = block
    fields.update({k: as_float32(v) for k, v in optional.items() if v is not None})
    return LSTMWeights(**fields)


def fused_activation(name: str, table: dict[str, str], what: str, workaround: str) -> str:
    """The TFLite fused activation for source activation `name`, or NotImplementedError."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise NotImplementedError(
            f"{what}: activation {name!r} has no TFLite fused equivalent (supported: "
            f"{sorted(table)}). Workaround: {workaround}"
        ) from None
