"""Keras 3 and tf_keras (Keras 2) recurrent models -> a `Model` of TFLite fused ops.

Keras layout (keras/src/layers/rnn/lstm.py, simple_rnn.py, gru.py; tf_keras the same):
LSTM ``kernel`` [n_input, 4H] and ``recurrent_kernel`` [H, 4H] used as ``x @ kernel``, gate
blocks i, f, c, o; one ``bias`` [4H] (``unit_forget_bias`` only initializes it). SimpleRNN: ``kernel`` [n_input, H], ``recurrent_kernel`` [H, H],
``bias`` [H]. The fused ops run the layer exactly when its activation is tanh, relu or
relu6 (SimpleRNN also linear) and, for LSTM, the recurrent activation is sigmoid.
No cell clip is added (TensorFlow's converter writes cell_clip=10; Keras never clips).
GRU: ``kernel`` [n_input, 3H], ``recurrent_kernel`` [H, 3H], blocks z, r, h; ``bias``
[2, 3H] (input side, recurrent side) with ``reset_after`` (the default), else [3H].
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import zipfile
from typing import Any

import numpy as np

from jaxlstm.convert import _gates, _graph
from jaxlstm.model import Model, ModelBuilder, Ref
from jaxlstm.ops.gru import GRUOptions, GRUWeights
from jaxlstm.ops.lstm import LSTMOptions
from jaxlstm.ops.rnn import RNNOptions, RNNWeights

_RECURRENT = ("LSTM", "SimpleRNN", "GRU")
# Dense activations LiteRT's FULLY_CONNECTED fuses (its float kernel rejects TANH), and
# those that need an op of their own.
_DENSE_ACTIVATIONS = _gates.source_activations(("NONE", "RELU", "RELU6"))
_ACTIVATION_OPS = {"softmax": "SOFTMAX", "tanh": "TANH", "sigmoid": "LOGISTIC"}
_SKIPPED = ("InputLayer", "Dropout")  # no effect at inference
_SUPPORTED = (*_RECURRENT, "Bidirectional", "Dense", *_SKIPPED)
# Group names inside model.weights.h5: the snake_case class name, numbered per class
# in config order (keras/src/saving/saving_lib.py, _save_container_state).
_H5_NAMES = {
    "LSTM": "lstm",
    "SimpleRNN": "simple_rnn",
    "GRU": "gru",
    "Bidirectional": "bidirectional",
    "Dense": "dense",
    "Dropout": "dropout",
    "InputLayer": "input_layer",
}


@dataclasses.dataclass
class _Layer:
    """One Keras layer as config + weights, whether it came from a live object or a file."""

    class_name: str
    config: dict[str, Any]
    weights: list[np.ndarray]
    backward_weights: list[np.ndarray] | None = None  # Bidirectional only

    @property
    def name(self) -> str:
        return self.config.get("name", self.class_name.lower())


def from_keras(obj: Any, *, batch_size: int | None = None, time_steps: int | None = None) -> Model:
    """Converts a Keras recurrent layer or model to a `Model` of TFLite fused ops.

    Accepts a Keras 3 or tf_keras layer, a ``Sequential``, a functional model whose
    layers form one chain, or the path of a Keras 3 ``.keras`` file (read with h5py;
    Keras is not imported). Supported layers and what they become:

    * ``LSTM`` / ``SimpleRNN`` -> UNIDIRECTIONAL_SEQUENCE_LSTM / _RNN (time_major as the
      tf_keras layer says); ``go_backwards`` -> REVERSE_V2 on the input (outputs stay in
      processing order, like Keras); ``return_sequences=False`` -> STRIDED_SLICE.
    * ``GRU`` (reset_after True or False) -> the model's GRU operator
      (`ModelBuilder.add_gru`), which runs at any length in JAX; TFLite has no GRU
      operator, so the export unrolls it into builtin operators over a fixed number of
      steps (the model's declared input length, or ``export_tflite(..., time_steps=T)``).
    * ``Bidirectional`` -> BIDIRECTIONAL_SEQUENCE_LSTM / _RNN (GRU: two GRU operators);
      merge_mode concat ->
      ``merge_outputs`` (a CONCATENATION for batch-major LSTMs, whose merged LiteRT kernel
      is wrong past batch row 0), None -> two model outputs, sum / mul / ave -> ADD / MUL.
    * ``Dense`` -> FULLY_CONNECTED (activation linear, relu, relu6 fused; softmax, tanh,
      sigmoid -> a SOFTMAX, TANH, LOGISTIC op after it).
    * ``InputLayer`` and ``Dropout`` (an inference no-op) are skipped.

    Args:
      obj: a Keras layer or model, or a path to a ``.keras`` file.
      batch_size: None (default) keeps the batch dynamic, as Keras does; an int fixes the
        batch of the input and of the state tensors.
      time_steps: a fixed sequence length, for a model that declares none (a bare layer,
        or ``keras.Input((None, n_input))``); None keeps the declared one (or a dynamic
        length).

    Returns:
      A `Model` with input ``input`` [B, T, n_input] ([T, B, n_input] when the first
      recurrent layer is time-major) and the last layer's output(s).

    Raises:
      NotImplementedError: a layer or option the fused ops cannot express (masking,
        stateful, return_state, non-sigmoid recurrent activation, other activations,
        unknown layer types, non-chain topologies); the message names a workaround.
      ValueError: `time_steps` contradicts the model's declared sequence length.
    """
    layers, shape = _read(obj)
    recurrent = [_inner_config(layer) for layer in layers if layer.class_name in (*_RECURRENT, "Bidirectional")]
    time_major = bool(recurrent and recurrent[0].get("time_major", False))
    batch_size = _graph.check_batch_size(batch_size)
    b = ModelBuilder(batch_size)
    x: Ref | list[Ref] = b.add_input("input", _input_shape(shape, layers, batch_size, time_steps, time_major))
    for layer in layers:
        if layer.class_name in _SKIPPED:
            continue
        if isinstance(x, list):
            raise NotImplementedError(
                f"layer {layer.name!r} follows a Bidirectional with merge_mode=None, whose two "
                "outputs a fused-op chain cannot feed on. Workaround: use merge_mode='concat'."
            )
        x = _CONVERTERS.get(layer.class_name, _convert_unknown)(b, x, layer)
    outputs = x if isinstance(x, list) else [x]
    return b.build(outputs)


def gru_weights_from_keras(
    kernel: Any, recurrent_kernel: Any, bias: Any = None, reset_after: bool = True
) -> GRUWeights:
    """`GRUWeights` of a Keras 3 / tf_keras ``GRU`` (``layer.get_weights()``: blocks z, r, h).

    Args:
      kernel: [n_input, 3 * n_units], used as ``x @ kernel``.
      recurrent_kernel: [n_units, 3 * n_units].
      bias: [2, 3 * n_units] with `reset_after` (row 0 input side, row 1 recurrent side),
        [3 * n_units] without, or None (``use_bias=False``).
      reset_after: the layer's option, which fixes the bias layout; pass the same value to
        `GRUOptions`.

    Returns:
      `GRUWeights` in the arrays' own type (NumPy stays NumPy, JAX stays JAX).

    Raises:
      ValueError: a bias of the other layout.
    """
    kernel, recurrent_bias = _gates.as_array(kernel), None
    if bias is not None:
        bias = _gates.as_array(bias)
        expected = (2, kernel.shape[-1]) if reset_after else (kernel.shape[-1],)
        if tuple(bias.shape) != expected:
            raise ValueError(
                f"gru_weights_from_keras: bias has shape {tuple(bias.shape)}, expected {expected} "
                f"for reset_after={reset_after}"
            )
        if reset_after:
            bias, recurrent_bias = bias[0], bias[1]
    return _gates.gru_weights_from_fused(kernel, recurrent_kernel, bias, recurrent_bias, "zrn")


# ----------------------------------------------------------------------------- reading


def _read(obj: Any) -> tuple[list[_Layer], tuple | None]:
    """(layers in call order, the Keras input shape or None) from any supported source."""
    if isinstance(obj, (str, os.PathLike)):
        return _read_file(os.fspath(obj))
    if not (hasattr(obj, "get_config") and hasattr(obj, "get_weights")):
        raise TypeError(f"from_keras expects a Keras layer, model or .keras path, got {type(obj).__name__}")
    if hasattr(obj, "layers") and hasattr(obj, "get_layer"):  # a model
        if type(obj).__name__ not in ("Sequential", "Functional"):
            raise NotImplementedError(
                f"subclassed model {type(obj).__name__}: its call graph is not in its config. "
                "Workaround: rebuild it as a Sequential or functional model, or convert its layers."
            )
        layer_configs = _chain(type(obj).__name__, obj.get_config())
        layers = [_live_layer(obj, c) for c in layer_configs]
        return layers, _declared_input_shape(layer_configs)
    config = {"class_name": type(obj).__name__, "config": obj.get_config()}
    return [_live_layer(obj, config)], None


def _live_layer(model: Any, config: dict) -> _Layer:
    """`config`'s layer from a live `model` (or the live layer itself when `model` is one)."""
    if config["class_name"] == "InputLayer":
        return _Layer("InputLayer", config["config"], [])
    layer = model.get_layer(config["config"]["name"]) if hasattr(model, "get_layer") else model
    if config["class_name"] == "Bidirectional":
        return _Layer(
            "Bidirectional",
            config["config"],
            _numpy(layer.forward_layer.get_weights()),
            _numpy(layer.backward_layer.get_weights()),
        )
    return _Layer(config["class_name"], config["config"], _numpy(layer.get_weights()))


def _numpy(weights: list) -> list[np.ndarray]:
    return [_gates.as_float32(w) for w in weights]


def _read_file(path: str) -> tuple[list[_Layer], tuple | None]:
    import h5py

    with zipfile.ZipFile(path) as archive:
        model_config = json.loads(archive.read("config.json"))
        layer_configs = _chain(model_config["class_name"], model_config["config"])
        with archive.open("model.weights.h5") as raw, h5py.File(raw, "r") as h5:
            counts: dict[str, int] = {}
            layers = []
            for c in layer_configs:
                key = _h5_name(c, counts)
                layers.append(_file_layer(c, h5["layers"].get(key) if "layers" in h5 else None))
    return layers, _declared_input_shape(layer_configs)


def _h5_name(config: dict, counts: dict[str, int]) -> str:
    base = _H5_NAMES.get(config["class_name"])
    if base is None:
        _unsupported_layer(config["class_name"], config["config"].get("name"))
    k = counts.get(base, -1) + 1
    counts[base] = k
    return base if k == 0 else f"{base}_{k}"


def _file_layer(config: dict, group: Any) -> _Layer:
    def read(path: str) -> list[np.ndarray]:
        if group is None or path not in group:
            return []
        vars_ = group[path]
        return [_gates.as_float32(vars_[k][()]) for k in sorted(vars_, key=int)]

    name, cfg = config["class_name"], config["config"]
    if name == "Bidirectional":
        return _Layer(name, cfg, read("forward_layer/cell/vars"), read("backward_layer/cell/vars"))
    return _Layer(name, cfg, read("cell/vars" if name in _RECURRENT else "vars"))


def _chain(class_name: str, config: dict) -> list[dict]:
    """The layer configs of a Sequential, or of a Functional model whose layers form one chain."""
    if class_name not in ("Sequential", "Functional", "Model"):
        return [{"class_name": class_name, "config": config}]
    layers = config["layers"]
    if class_name == "Sequential":
        return layers
    for previous, layer in itertools.pairwise(layers):
        inbound = _inbound_names(layer)
        if inbound != [previous["config"]["name"]]:
            raise NotImplementedError(
                f"layer {layer['config']['name']!r} takes inputs {inbound}, not just the previous "
                f"layer {previous['config']['name']!r}: only single-chain models convert. "
                "Workaround: convert each chain separately or rebuild as a Sequential."
            )
    if _endpoint_count(config.get("input_layers")) > 1 or _endpoint_count(config.get("output_layers")) > 1:
        raise NotImplementedError(
            "models with several inputs or outputs are not supported. "
            "Workaround: convert each recurrent chain separately."
        )
    return layers


def _endpoint_count(endpoints: list | None) -> int:
    """Entries of a functional config's input_layers / output_layers: [name, 0, 0] is one."""
    if not endpoints:
        return 0
    return 1 if isinstance(endpoints[0], str) else len(endpoints)


def _inbound_names(layer: dict) -> list[str]:
    """Names of the layers feeding `layer` in a functional config (Keras 3 or tf_keras)."""
    nodes = layer.get("inbound_nodes", [])
    if len(nodes) > 1:
        raise NotImplementedError(
            f"layer {layer['config']['name']!r} is called more than once "
            "(shared layer); workaround: use separate layers"
        )
    names = []
    for node in nodes:
        if isinstance(node, dict):  # Keras 3: {"args": [keras tensors], "kwargs": {...}}
            if node.get("kwargs", {}).get("mask") is not None:
                _masking(layer["config"]["name"])
            names += [
                a["config"]["keras_history"][0]
                for a in node.get("args", [])
                if isinstance(a, dict) and "keras_history" in a.get("config", {})
            ]
        else:  # tf_keras: [[name, node_index, tensor_index, kwargs], ...]
            names += [entry[0] for entry in node]
    return names


def _declared_input_shape(layer_configs: list[dict]) -> tuple | None:
    """The model's input shape from its InputLayer or first layer config (None entries: unknown)."""
    first = layer_configs[0]
    if "build_config" in first:  # Keras 3 layers record the shape they were built with
        return tuple(first["build_config"]["input_shape"])
    cfg = first["config"]
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    return None if shape is None else tuple(shape)


def _input_shape(
    shape: tuple | None, layers: list[_Layer], batch_size: int | None, time_steps: int | None, time_major: bool
) -> tuple:
    first = next((layer for layer in layers if layer.class_name not in _SKIPPED), None)
    if first is None:
        raise NotImplementedError("the model has no layer to convert")
    n_input = first.weights[0].shape[0] if first.weights else None
    time = None
    if shape is not None and len(shape) == 3:
        time = shape[0 if time_major else 1]
        n_input = shape[2] if n_input is None else n_input
    if time_steps is not None:
        if time is not None and time != time_steps:
            raise ValueError(f"time_steps={time_steps} but the model declares {time} time steps (input shape {shape})")
        time = time_steps
    if n_input is None:
        raise ValueError(
            f"cannot tell the input size of layer {first.name!r}: it has no weights "
            "and the model declares no input shape"
        )
    return _graph.input_shape(
        int(n_input), batch_size=batch_size, time_steps=None if time is None else int(time), time_major=time_major
    )


# ----------------------------------------------------------------------------- layers


def _inner_config(layer: _Layer) -> dict:
    return layer.config["layer"]["config"] if layer.class_name == "Bidirectional" else layer.config


def _masking(name: str) -> None:
    raise NotImplementedError(
        f"layer {name!r}: masking has no equivalent in the fused ops (they run every step of "
        "every row). Workaround: drop the mask and right-pad, reading each row's output at its "
        "own last valid step (states differ after it), or run the model in Keras."
    )


def _unsupported_layer(class_name: str, name: str) -> None:
    if class_name == "Masking":
        _masking(name)
    raise NotImplementedError(
        f"layer {name!r} of type {class_name} has no TFLite fused-op conversion; supported "
        f"types: {_SUPPORTED}. Workaround: convert the recurrent part alone, or use "
        "tf.lite.TFLiteConverter (which lowers other layers to WHILE loops)."
    )


def _activation_name(value: Any) -> Any:
    """A Keras activation config entry as its plain name ("tanh"), when it is a built-in."""
    if isinstance(value, dict):  # {"module": ..., "class_name": "function", "config": "tanh"}
        return value.get("config")
    return value


def _recurrent_weights(layer_name: str, kind: str, config: dict, weights: list[np.ndarray]):
    """(weights, options) of one LSTM / SimpleRNN / GRU layer after checking every option."""
    what = f"{kind} layer {layer_name!r}"
    for option, workaround in (
        (
            "stateful",
            "convert a stateful=False copy; export_tflite(model, stateful=True) writes a file whose "
            "state persists across invokes until reset_all_variables()",
        ),
        (
            "return_state",
            "set return_state=False; the final h is the last output step "
            "(the cell state is not an output of the fused op)",
        ),
    ):
        if config.get(option):
            raise NotImplementedError(f"{what}: {option}=True is not supported. Workaround: {workaround}.")
    if kind == "GRU":
        return _gru_weights(what, config, weights)
    table = _gates.LSTM_SOURCE_ACTIVATIONS if kind == "LSTM" else _gates.RNN_SOURCE_ACTIVATIONS
    act = _gates.fused_activation(
        _activation_name(config.get("activation", "tanh")),
        table,
        what,
        f"retrain with one of {sorted(table)}",
    )
    time_major = bool(config.get("time_major", False))
    if config.get("use_bias", True):
        kernel, recurrent, bias = weights
    else:
        kernel, recurrent = weights
        bias = np.zeros(recurrent.shape[1], np.float32)
    if kind == "SimpleRNN":
        return RNNWeights(kernel.T, recurrent.T, bias), RNNOptions(act, time_major=time_major)
    recurrent_activation = _activation_name(config.get("recurrent_activation", "sigmoid"))
    if recurrent_activation != "sigmoid":
        raise NotImplementedError(
            f"{what}: recurrent_activation {recurrent_activation!r} is not supported: the fused "
            "LSTM's gates are always the logistic sigmoid. Workaround: retrain with "
            "recurrent_activation='sigmoid'."
        )
    return _gates.lstm_weights_from_fused(kernel, recurrent, bias), LSTMOptions(act, time_major=time_major)


def _gru_weights(what: str, config: dict, weights: list[np.ndarray]) -> tuple[GRUWeights, GRUOptions]:
    """(weights, options) of a GRU layer: kernel, recurrent_kernel and (use_bias) bias."""
    table = _gates.GRU_SOURCE_ACTIVATIONS
    activations = {
        option: _gates.fused_activation(
            _activation_name(config.get(option, default)),
            table,
            f"{what} ({option})",
            f"retrain with one of {sorted(table)}",
        )
        for option, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid"))
    }
    reset_after = bool(config.get("reset_after", True))
    kernel, recurrent_kernel, *bias = weights
    options = GRUOptions(reset_after=reset_after, time_major=bool(config.get("time_major", False)), **activations)
    return gru_weights_from_keras(kernel, recurrent_kernel, bias[0] if bias else None, reset_after), options


def _convert_recurrent(b: ModelBuilder, x: Ref, layer: _Layer) -> Ref:
    weights, options = _recurrent_weights(layer.name, layer.class_name, layer.config, layer.weights)
    return _graph.add_recurrent(
        b,
        x,
        weights,
        options,
        name=layer.name,
        reverse=bool(layer.config.get("go_backwards", False)),
        return_sequences=bool(layer.config.get("return_sequences", False)),
    )


def _convert_bidirectional(b: ModelBuilder, x: Ref, layer: _Layer) -> Ref | list[Ref]:
    fw_config = layer.config["layer"]
    # tf_keras omits backward_layer unless given: then it is a go_backwards copy of `layer`.
    bw_config = layer.config.get("backward_layer") or {
        "class_name": fw_config["class_name"],
        "config": {**fw_config["config"], "go_backwards": not fw_config["config"].get("go_backwards", False)},
    }
    kind = fw_config["class_name"]
    if kind not in _RECURRENT or bw_config["class_name"] != kind:
        raise NotImplementedError(
            f"Bidirectional {layer.name!r} wraps {kind} / {bw_config['class_name']}; only LSTM, "
            "SimpleRNN or GRU in both directions convert. Workaround: use one of them in both."
        )
    fw_cfg, bw_cfg = fw_config["config"], bw_config["config"]
    if fw_cfg.get("go_backwards") or not bw_cfg.get("go_backwards"):
        raise NotImplementedError(
            f"Bidirectional {layer.name!r}: the wrapped layer has go_backwards=True; the fused op's "
            "forward direction runs forward. Workaround: wrap a go_backwards=False layer."
        )
    fw, fw_options = _recurrent_weights(f"{layer.name}/forward", kind, fw_cfg, layer.weights)
    bw, bw_options = _recurrent_weights(f"{layer.name}/backward", kind, bw_cfg, layer.backward_weights)
    if fw_options != bw_options:
        raise NotImplementedError(
            f"Bidirectional {layer.name!r}: the directions differ in options ({fw_options} vs "
            f"{bw_options}) but the fused op shares one set. Workaround: use the same activation."
        )
    outputs = _graph.add_bidirectional(
        b,
        x,
        fw,
        bw,
        fw_options,
        name=layer.name,
        merge_mode=layer.config.get("merge_mode", "concat"),
        return_sequences=bool(fw_cfg.get("return_sequences", False)),
    )
    return outputs[0] if len(outputs) == 1 else outputs


def _convert_dense(b: ModelBuilder, x: Ref, layer: _Layer) -> Ref:
    activation = _activation_name(layer.config.get("activation", "linear"))
    op = _ACTIVATION_OPS.get(activation)
    fused = (
        "NONE"
        if op
        else _gates.fused_activation(
            activation,
            _DENSE_ACTIVATIONS,
            f"Dense layer {layer.name!r}",
            "use a linear Dense and apply the activation after the model",
        )
    )
    kernel = layer.weights[0]
    bias = layer.weights[1] if layer.config.get("use_bias", True) else None
    y = b.add_fully_connected(x, kernel.T, bias, fused, name=layer.name)
    if op is None:
        return y
    if op == "SOFTMAX":
        return b.add_softmax(y, name=f"{layer.name}/softmax")
    out = b.add_intermediate(f"{layer.name}/{activation}/output", y.shape)
    b.add_operator(op, [y], [out])
    return out


def _convert_unknown(b: ModelBuilder, x: Ref, layer: _Layer) -> Ref:
    _unsupported_layer(layer.class_name, layer.name)


_CONVERTERS = {
    "LSTM": _convert_recurrent,
    "SimpleRNN": _convert_recurrent,
    "GRU": _convert_recurrent,
    "Bidirectional": _convert_bidirectional,
    "Dense": _convert_dense,
}
