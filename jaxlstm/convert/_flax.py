"""flax (linen and nnx) recurrent cells and wrappers -> fused-op weights and models.

Layouts (flax/nnx/nn/recurrent.py, flax/linen/recurrent.py), all kernels [in, H] used as
``x @ kernel``:

* linen ``LSTMCell`` / ``OptimizedLSTMCell`` and nnx ``LSTMCell``: per-gate Dense params
  ``ii, if, ig, io`` (nnx spells ``if_``) without bias and ``hi, hf, hg, ho`` with bias,
  gates i, f, g (= cell), o. The bias lives on the recurrent side only.
* nnx ``OptimizedLSTMCell``: ``dense_i.kernel`` [D, 4H] (no bias), ``dense_h.kernel``
  [H, 4H] and ``dense_h.bias`` [4H], blocks i, f, g, o.
* ``SimpleCell``: linen ``i`` (kernel + bias) and ``h`` (kernel); nnx ``dense_i`` and
  ``dense_h``. ``residual=True`` adds h to the pre-activation: folded in as R + I.
* ``GRUCell`` (reset-after, gates r, z, n): linen ``ir, iz, in`` (kernel + bias), ``hr, hz``
  (kernel) and ``hn`` (kernel + bias, inside the reset product); nnx ``dense_i`` [D, 3H]
  with bias and ``dense_h`` [H, 3H] without. It becomes the model's GRU operator
  (`ModelBuilder.add_gru`): any length in JAX; TFLite has no GRU operator, so the export
  unrolls it over ``export_tflite(..., time_steps=T)`` steps.

The carry of the LSTM cells is ``(c, h)``; the converted ops start from zero state, as
``nn.RNN`` does by default. Per-row ``seq_lengths`` have no fused equivalent.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from jaxlstm.convert import _gates, _graph
from jaxlstm.model import Model, ModelBuilder
from jaxlstm.ops.gru import GRU_GATES, GRUOptions, GRUWeights
from jaxlstm.ops.lstm import LSTMOptions, LSTMWeights
from jaxlstm.ops.rnn import RNNOptions, RNNWeights

_LSTM_CELLS = ("LSTMCell", "OptimizedLSTMCell")
_CELLS = (*_LSTM_CELLS, "SimpleCell", "GRUCell")
_GATE_LETTERS = {"input": "i", "forget": "f", "cell": "g", "output": "o"}


def lstm_weights_from_flax(cell: Any, params: Any = None) -> tuple[LSTMWeights, LSTMOptions]:
    """`LSTMWeights` and `LSTMOptions` of a flax ``LSTMCell`` / ``OptimizedLSTMCell``.

    Args:
      cell: a linen or nnx LSTM cell (its gate and activation functions are checked).
      params: the linen cell's parameters (``{"params": {...}}`` or the inner dict); None
        for nnx, whose cell holds them.

    Returns:
      (weights, options) for `jaxlstm.lstm` / `unidirectional_sequence_lstm` (batch-major).

    Raises:
      NotImplementedError: a gate function other than sigmoid or an activation other than
        tanh / relu / relu6.
    """
    weights, options = _cell_weights(cell, _params(cell, params))
    if not isinstance(weights, LSTMWeights):
        raise TypeError(f"lstm_weights_from_flax expects an LSTM cell, got {type(cell).__name__}")
    return weights, options


def rnn_weights_from_flax(cell: Any, params: Any = None) -> tuple[RNNWeights, RNNOptions]:
    """`RNNWeights` and `RNNOptions` of a flax ``SimpleCell`` (arguments as `lstm_weights_from_flax`)."""
    weights, options = _cell_weights(cell, _params(cell, params))
    if not isinstance(weights, RNNWeights):
        raise TypeError(f"rnn_weights_from_flax expects a SimpleCell, got {type(cell).__name__}")
    return weights, options


def gru_weights_from_flax(cell: Any, params: Any = None) -> tuple[GRUWeights, GRUOptions]:
    """`GRUWeights` and `GRUOptions` (reset-after) of a flax ``GRUCell`` (arguments as
    `lstm_weights_from_flax`; linen's ``hn`` bias is the recurrent candidate bias, nnx has
    no recurrent bias)."""
    weights, options = _cell_weights(cell, _params(cell, params))
    if not isinstance(weights, GRUWeights):
        raise TypeError(f"gru_weights_from_flax expects a GRUCell, got {type(cell).__name__}")
    return weights, options


def from_flax(
    module: Any, params: Any = None, *, batch_size: int | None = None, time_steps: int | None = None
) -> Model:
    """Converts a flax recurrent module to a `Model` of TFLite fused ops.

    * a cell (``LSTMCell``, ``OptimizedLSTMCell``, ``SimpleCell``, ``GRUCell``): the cell
      run over the sequence, like ``nn.RNN(cell)`` -> UNIDIRECTIONAL_SEQUENCE_LSTM / _RNN
      (GRU: the model's GRU operator);
    * ``RNN``: the same, with ``time_major``, ``reverse`` (REVERSE_V2 on the input) and
      ``keep_order`` (REVERSE_V2 on the output);
    * ``Bidirectional`` with the default concatenating ``merge_fn`` ->
      BIDIRECTIONAL_SEQUENCE_LSTM / _RNN with ``merge_outputs``.

    Args:
      module: a linen or nnx module of the kinds above.
      params: the linen module's variables (``{"params": ...}``); None for nnx.
      batch_size: None (default) keeps the batch dynamic, like flax; an int fixes the batch
        of the input and state tensors.
      time_steps: a fixed sequence length, or None (default) for a dynamic one.

    Returns:
      A `Model` from ``input`` [B, T, D] (or [T, B, D] if time-major) to ``output``.

    Raises:
      NotImplementedError: MGU and other cells, custom gate or activation functions, a
        custom ``merge_fn``, ``return_carry=True``, a custom ``carry_init``.
    """
    tree = _params(module, params)
    batch_size = _graph.check_batch_size(batch_size)
    kind = type(module).__name__
    if kind in _CELLS:
        weights, options = _cell_weights(module, tree)
        return _graph.single_layer_model(weights, options, batch_size=batch_size, time_steps=time_steps, name="rnn")
    if kind not in ("RNN", "Bidirectional"):
        raise NotImplementedError(
            f"flax module {kind} has no fused-op conversion; supported: cells {_CELLS}, RNN and "
            "Bidirectional. Workaround: convert its recurrent submodules one by one."
        )
    if module.return_carry:
        raise NotImplementedError(
            f"flax {kind} with return_carry=True: the fused ops output only the sequence. "
            "Workaround: set return_carry=False; the final h is the last output step."
        )
    time_major = bool(module.time_major)
    if kind == "RNN":
        weights, options = _cell_weights(module.cell, tree["cell"])
        options = options.replace(time_major=time_major)
        b = ModelBuilder(batch_size)
        x = b.add_input(
            "input",
            _graph.input_shape(
                _graph.n_input(weights), batch_size=batch_size, time_steps=time_steps, time_major=time_major
            ),
        )
        y = _graph.add_recurrent(
            b, x, weights, options, name="rnn", reverse=bool(module.reverse), keep_order=bool(module.keep_order)
        )
        return b.build([y], ["output"])
    if module.merge_fn is not _default(module, "merge_fn"):
        raise NotImplementedError(
            "flax Bidirectional with a custom merge_fn: only the default concatenation is a "
            "fused-op merge. Workaround: keep the default merge_fn and merge after the model."
        )
    fw, fw_options = _cell_weights(module.forward_rnn.cell, tree["forward_rnn"]["cell"])
    bw, bw_options = _cell_weights(module.backward_rnn.cell, tree["backward_rnn"]["cell"])
    if type(fw) is not type(bw) or fw_options != bw_options:
        raise NotImplementedError(
            "flax Bidirectional: the two directions differ in cell type or activation, but the "
            "fused op shares them. Workaround: use the same cell kind and functions in both."
        )
    b = ModelBuilder(batch_size)
    x = b.add_input(
        "input",
        _graph.input_shape(_graph.n_input(fw), batch_size=batch_size, time_steps=time_steps, time_major=time_major),
    )
    (y,) = _graph.add_bidirectional(b, x, fw, bw, fw_options.replace(time_major=time_major), name="bidirectional")
    return b.build([y], ["output"])


# ----------------------------------------------------------------------------- helpers


def _is_nnx(module: Any) -> bool:
    from flax import nnx

    return isinstance(module, nnx.Module)


def _params(module: Any, params: Any) -> dict:
    """The module's parameter tree as nested dicts of float32 NumPy arrays."""
    if _is_nnx(module):
        from flax import nnx

        if params is not None:
            raise TypeError("nnx modules hold their parameters; pass params=None")
        tree = nnx.state(module, nnx.Param).to_pure_dict()
    else:
        if params is None:
            raise TypeError(f"linen {type(module).__name__} needs its variables: from_flax(module, params)")
        tree = params.get("params", params)
    return _to_numpy(tree)


def _to_numpy(tree: Any) -> Any:
    if hasattr(tree, "items"):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return _gates.as_float32(tree)


def _default(module: Any, attribute: str) -> Any:
    """The default value of `attribute` in the module's constructor (linen field or nnx argument)."""
    if dataclasses.is_dataclass(module):
        return next(f.default for f in dataclasses.fields(module) if f.name == attribute)
    return inspect.signature(type(module).__init__).parameters[attribute].default


def _activation(fn: Any) -> str | None:
    """The name of a built-in JAX activation function, or None."""
    import jax
    import jax.numpy as jnp

    known = {jax.nn.sigmoid: "sigmoid", jnp.tanh: "tanh", jax.nn.relu: "relu", jax.nn.relu6: "relu6"}
    return next((name for f, name in known.items() if f is fn), None)


def _cell_weights(cell: Any, p: dict) -> tuple[_graph.Weights, _graph.Options]:
    kind = type(cell).__name__
    what = f"flax {kind}"
    if kind not in _CELLS:
        raise NotImplementedError(
            f"{what} has no conversion (supported cells: {_CELLS}). Workaround: use one of {_CELLS}."
        )
    default_carry_init = None if _is_nnx(cell) else _default(cell, "carry_init")
    if getattr(cell, "carry_init", default_carry_init) is not default_carry_init:
        raise NotImplementedError(
            f"{what}: a custom carry_init is not supported; the fused ops "
            "start from zero state. Workaround: use the default zeros."
        )
    if kind == "GRUCell":
        return _gru_cell_weights(cell, p, what)
    table = _gates.LSTM_SOURCE_ACTIVATIONS if kind in _LSTM_CELLS else _gates.RNN_SOURCE_ACTIVATIONS
    act = _gates.fused_activation(
        _activation(cell.activation_fn), table, what, f"use one of {sorted(table)} as activation_fn"
    )
    if kind == "SimpleCell":
        dense_i, dense_h = (p["dense_i"], p["dense_h"]) if "dense_i" in p else (p["i"], p["h"])
        recurrent = dense_h["kernel"].T
        if cell.residual:  # act(W x + b + R h + h) = act(W x + b + (R + I) h)
            recurrent = recurrent + np.eye(recurrent.shape[0], dtype=np.float32)
        return RNNWeights(dense_i["kernel"].T, recurrent, dense_i["bias"]), RNNOptions(act)
    if _activation(cell.gate_fn) != "sigmoid":
        raise NotImplementedError(
            f"{what}: gate_fn must be sigmoid (the fused LSTM's gates are "
            "fixed). Workaround: retrain with the default gate_fn."
        )
    if "dense_i" in p:  # nnx OptimizedLSTMCell: packed i, f, g, o
        weights = _gates.lstm_weights_from_fused(p["dense_i"]["kernel"], p["dense_h"]["kernel"], p["dense_h"]["bias"])
        return weights, LSTMOptions(act)
    fields = {}
    for gate, letter in _GATE_LETTERS.items():
        dense_in = p.get(f"i{letter}", p.get(f"i{letter}_"))  # nnx names the forget kernel "if_"
        fields[f"input_to_{gate}_weights"] = dense_in["kernel"].T
        fields[f"recurrent_to_{gate}_weights"] = p[f"h{letter}"]["kernel"].T
        fields[f"{gate}_gate_bias"] = p[f"h{letter}"]["bias"]
    return LSTMWeights(**fields), LSTMOptions(act)


def _gru_cell_weights(cell: Any, p: dict, what: str) -> tuple[GRUWeights, GRUOptions]:
    table = _gates.GRU_SOURCE_ACTIVATIONS
    activations = {
        option: _gates.fused_activation(
            _activation(getattr(cell, attribute)),
            table,
            f"{what} ({attribute})",
            f"use one of {sorted(table)} as {attribute}",
        )
        for option, attribute in (("activation", "activation_fn"), ("recurrent_activation", "gate_fn"))
    }
    if "dense_i" in p:  # nnx: packed r, z, n without a recurrent bias
        weights = _gates.gru_weights_from_fused(
            p["dense_i"]["kernel"], p["dense_h"]["kernel"], p["dense_i"]["bias"], None, "rzn"
        )
    else:  # linen: per-gate Dense ir, iz, in (with bias), hr, hz (without) and hn (with)
        fields = {}
        for gate, letter in zip(GRU_GATES, "zrn"):
            fields[f"input_to_{gate}_weights"] = p[f"i{letter}"]["kernel"].T
            fields[f"recurrent_to_{gate}_weights"] = p[f"h{letter}"]["kernel"].T
            fields[f"{gate}_gate_bias"] = p[f"i{letter}"]["bias"]
        weights = GRUWeights(**fields, recurrent_candidate_gate_bias=p["hn"]["bias"])
    return weights, GRUOptions(reset_after=True, **activations)
