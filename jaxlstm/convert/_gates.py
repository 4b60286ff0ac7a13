"""Packed gate matrices and activation names: what every converter (and `jaxlstm.nn`'s init) shares.

Every source packs a recurrent layer's gates into one matrix, in its own block order. Orders
are written as letters: an LSTM's of ``i f c o`` (input gate, forget gate, cell candidate,
output gate: `GATES`), a GRU's of ``z r n`` (update gate, reset gate, candidate: `GRU_GATES`):

    Keras, PyTorch, flax LSTM  "ifco"      TF1 LSTMCell  "icfo" (j = candidate)
    Lingvo                     "cifo"      Lingvo coupled (CIFG)  "cfo"
    Keras GRU                  "zrn"       PyTorch, flax GRU  "rzn"

An LSTM order without ``i`` is CIFG: the op computes the input gate as 1 - forget.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxlstm.ops.gru import GRU_ACTIVATIONS, GRU_GATES, GRUWeights
from jaxlstm.ops.lstm import GATES, LSTM_ACTIVATIONS, LSTMWeights
from jaxlstm.ops.rnn import RNN_ACTIVATIONS

_LSTM_LETTERS = "ifco"
_GRU_LETTERS = "zrn"
_GATE_NAMES = {**dict(zip(_LSTM_LETTERS, GATES)), **dict(zip(_GRU_LETTERS, GRU_GATES))}

# Source-framework activation names (Keras, flax) -> TFLite's names for the same functions.
_SOURCE_ACTIVATIONS = {"tanh": "TANH", "relu": "RELU", "relu6": "RELU6", "linear": "NONE", "sigmoid": "SIGMOID"}


def source_activations(accepted: tuple[str, ...]) -> dict[str, str]:
    """{source name: TFLite name} for the TFLite activations in `accepted` (what an op runs)."""
    return {source: name for source, name in _SOURCE_ACTIVATIONS.items() if name in accepted}


# Each op owns the set of TFLite activations it runs; these follow from it. The LSTM has no
# NONE (its float kernel would compute h = o * g, lstm_eval.cc CalculateLstmOutputFloat).
LSTM_SOURCE_ACTIVATIONS = source_activations(LSTM_ACTIVATIONS)
RNN_SOURCE_ACTIVATIONS = source_activations(RNN_ACTIVATIONS)
GRU_SOURCE_ACTIVATIONS = source_activations(GRU_ACTIVATIONS)


def as_float32(value: Any) -> np.ndarray:
    """A float32 NumPy array from an array-like (NumPy, JAX, TF, h5py data)."""
    return np.asarray(value, dtype=np.float32)


def fused_activation(name: str, table: dict[str, str], what: str, workaround: str) -> str:
    """The TFLite fused activation for source activation `name`, or NotImplementedError."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise NotImplementedError(
            f"{what}: activation {name!r} has no TFLite fused equivalent (supported: "
            f"{sorted(table)}). Workaround: {workaround}"
        ) from None


def as_array(value: Any) -> Any:
    """`value` as an array: JAX arrays (tracers too) as they are, anything else as NumPy."""
    return value if isinstance(value, jax.Array) else np.asarray(value)


def split_gates(packed: Any, order: str, *, axis: int = 0) -> dict[str, Any]:
    """Splits `packed` into ``len(order)`` equal gate blocks along `axis`.

    Rows (``axis=0``) for TFLite's and PyTorch's [G * n, k] layout (``W @ x``), columns
    (``axis=-1``) for Keras' and flax's [k, G * n] (``x @ kernel``). NumPy input gives NumPy
    views (no device transfer, no compilation); JAX input, tracers included, gives JAX arrays.

    Args:
      packed: the packed array, ``len(order)`` equal blocks along `axis`.
      order: the block order, letters of ``ifco`` (LSTM; without ``i``: CIFG) or of ``zrn``
        (GRU, all three).

    Returns:
      {gate name (`GATES` or `GRU_GATES`): block} for the gates in `order`.
    """
    lstm = set(order) <= set(_LSTM_LETTERS) and set("fco") <= set(order)
    gru = set(order) == set(_GRU_LETTERS)
    if len(set(order)) != len(order) or not (lstm or gru):
        raise ValueError(
            f"gate order {order!r} must name f, c, o (and optionally i) once each for an LSTM, "
            "or z, r, n once each for a GRU"
        )
    packed = as_array(packed)
    size, remainder = divmod(packed.shape[axis], len(order))
    if remainder:
        raise ValueError(
            f"packed gate axis {axis} of shape {packed.shape} is not divisible into {len(order)} gates ({order!r})"
        )
    index = [slice(None)] * packed.ndim
    blocks = {}
    for k, letter in enumerate(order):
        index[axis] = slice(k * size, (k + 1) * size)
        blocks[_GATE_NAMES[letter]] = packed[tuple(index)]
    return blocks


def lstm_weights_from_fused(kernel: Any, recurrent_kernel: Any, bias: Any, gate_order: str = "ifco") -> LSTMWeights:
    """`LSTMWeights` from packed gate matrices in Keras' layout (``x @ kernel``).

    Args:
      kernel: [n_input, G * n_cell], G gate blocks along the columns in `gate_order`.
      recurrent_kernel: [n_output, G * n_cell].
      bias: [G * n_cell] (the sum of all the source's biases).
      gate_order: the block order as letters of ``ifco`` (Keras, PyTorch and flax ``"ifco"``,
        TF1 LSTMCell ``"icfo"``, Lingvo ``"cifo"``); without ``i`` the weights are CIFG.

    Returns:
      `LSTMWeights` with per-gate tensors in TFLite's layout ([n_cell, k]), in the arrays'
      own type and dtype (NumPy stays NumPy), without peephole, projection or layer norm
      (add them with ``.replace``).

    Example:
      >>> import numpy as np
      >>> w = lstm_weights_from_fused(np.ones((3, 8)), np.ones((2, 8)), np.zeros(8))
      >>> w.input_to_forget_weights.shape, w.n_output
      ((2, 3), 2)
    """
    fields = _gate_matrices(kernel, recurrent_kernel, gate_order)
    for gate, block in split_gates(bias, gate_order).items():
        fields[f"{gate}_gate_bias"] = block
    return LSTMWeights(**fields)


def gru_weights_from_fused(
    kernel: Any,
    recurrent_kernel: Any,
    bias: Any = None,
    recurrent_bias: Any = None,
    gate_order: str = "zrn",
) -> GRUWeights:
    """`GRUWeights` from packed gate matrices in Keras' layout (``x @ kernel``).

    Args:
      kernel: [n_input, 3 * n_units], the gate blocks along the columns in `gate_order`.
      recurrent_kernel: [n_units, 3 * n_units].
      bias: [3 * n_units] input-side bias, or None for zeros.
      recurrent_bias: [3 * n_units] recurrent-side bias, or None (absent: Keras
        ``reset_after=False``, flax nnx).
      gate_order: the block order as letters of ``zrn`` (Keras ``"zrn"``, PyTorch and flax
        ``"rzn"``).

    Returns:
      `GRUWeights` with per-gate tensors in TFLite's layout ([n_units, k]), in the arrays'
      own type and dtype (NumPy stays NumPy).
    """
    kernel = as_array(kernel)
    if bias is None:
        xp = np if isinstance(kernel, np.ndarray) else jax.numpy
        bias = xp.zeros(kernel.shape[-1:], kernel.dtype)
    fields = _gate_matrices(kernel, recurrent_kernel, gate_order)
    for template, packed in (("{}_gate_bias", bias), ("recurrent_{}_gate_bias", recurrent_bias)):
        if packed is not None:
            for gate, block in split_gates(packed, gate_order).items():
                fields[template.format(gate)] = block
    return GRUWeights(**fields)


def _gate_matrices(kernel: Any, recurrent_kernel: Any, gate_order: str) -> dict[str, Any]:
    """``input_to_{gate}_weights`` and ``recurrent_to_{gate}_weights`` [n, k] (TFLite's layout)
    from Keras-layout packed matrices [k, n_gates * n]."""
    fields = {}
    for template, packed in (("input_to_{}_weights", kernel), ("recurrent_to_{}_weights", recurrent_kernel)):
        for gate, block in split_gates(packed, gate_order, axis=-1).items():
            fields[template.format(gate)] = block.T
    return fields
