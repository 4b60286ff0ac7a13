"""Fingerprint of what jaxlstm writes and computes, to prove that a refactoring changed nothing.

    python experiments/export_fingerprint.py OUT.json [--while-dir DIR]
    python experiments/export_fingerprint.py --compare BEFORE.json AFTER.json

builds a broad set of models (every converter source, the `jaxlstm.nn` layers, `ModelBuilder`
recurrent and glue operators, GRU lowering, WHILE loops, fully integer models and the integer
glue operators), exports each in several variants (predict, streaming, fixed batch,
dynamic-range quantized, asymmetric) and records, per case and variant, the SHA-256 of

* the exported `.tflite` bytes (or the error the export raises),
* the JAX outputs and state of the model on fixed inputs, twice (the second call continues
  from the first's state),
* the same for the model `load_tflite` reads back, and the bytes of its re-export,
* `jaxlstm.inspect.inspect_tflite`'s report.

Every model is seeded, so two runs of the same code give the same file. ``--compare`` lists
the entries that differ. Keras 3 models converted by TensorFlow (WHILE loops) come from
``tests/tflite/keras3_while_models.py`` run once into ``--while-dir`` (kept between runs, so
that both fingerprints read the same converter output).

Run from the repository root with ``PYTHONPATH=$PWD``; it imports the test helpers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

# name -> (build() -> (model, inputs or None), variants)
Case = tuple[Callable[[], tuple[object, list | None]], tuple[str, ...]]
FULL = ("default", "streaming", "batch2", "dynamic", "dynamic_asymmetric")
DEFAULT = ("default",)
VARIANTS = {
    "default": {},
    "streaming": {"stateful": True},
    "batch2": {"batch_size": 2},
    "dynamic": {"quantize": "dynamic", "quantize_min_elements": 0},
    "dynamic_asymmetric": {"quantize": "dynamic", "quantize_min_elements": 0, "asymmetric_quantize_inputs": True},
}


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:16]


def _arrays_digest(values) -> str:
    parts = []
    for v in values:
        a = np.asarray(v)
        parts += [a.dtype.str.encode(), str(a.shape).encode(), np.ascontiguousarray(a).tobytes()]
    return _digest(*parts)


def _error(e: BaseException) -> str:
    return f"error {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def _generic_inputs(model, name: str) -> list[np.ndarray]:
    """Seeded inputs for the model's input tensors: dynamic dimensions 2 (batch) and 3 (time)."""
    rng = np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
    axes = model.batch_axes()
    xs = []
    for i in model.inputs:
        t = model.tensors[i]
        batch_axis = axes.get(i, 0)
        shape = tuple((2 if a == batch_axis else 3) if d < 0 else d for a, d in enumerate(t.shape))
        if t.dtype.startswith("float"):
            xs.append(rng.normal(size=shape).astype(t.dtype))
        elif t.dtype == "bool":
            xs.append(rng.random(shape) > 0.5)
        else:
            info = np.iinfo(t.dtype)
            low, high = (0, 3) if t.dtype in ("int32", "int64") else (info.min, info.max + 1)
            xs.append(rng.integers(low, high, size=shape).astype(t.dtype))
    return xs


def _run(model, inputs) -> str:
    """Two calls, the second continuing from the first's state: outputs and states."""
    try:
        outputs, state = model.apply(model.params, None, *inputs)
        outputs2, state2 = model.apply(model.params, state, *inputs)
    except Exception as e:
        return _error(e)
    return _arrays_digest(
        [*outputs, *[state[k] for k in sorted(state)], *outputs2, *[state2[k] for k in sorted(state2)]]
    )


def _dynamic_gru(model) -> bool:
    """Whether a GRU operator runs over a dynamic time dimension (its export needs time_steps)."""
    for op in model.operators:
        if op.opcode == "GRU":
            axis = 0 if op.option("time_major", False) else 1
            if model.tensors[op.inputs[0]].shape[axis] < 0:
                return True
    return False


def fingerprint_case(name: str, case: Case) -> dict[str, str]:
    from jaxlstm.inspect import inspect_tflite
    from jaxlstm.tflite import export_tflite, load_tflite

    build, variants = case
    try:
        model, inputs = build()
    except Exception as e:
        return {"build": _error(e)}
    inputs = _generic_inputs(model, name) if inputs is None else inputs
    result = {"jax": _run(model, inputs)}
    extra = {"time_steps": 3} if _dynamic_gru(model) else {}
    for variant in variants:
        try:
            data = export_tflite(model, **VARIANTS[variant], **extra)
        except Exception as e:
            result[f"{variant}/export"] = _error(e)
            continue
        result[f"{variant}/export"] = _digest(data)
        try:
            loaded = load_tflite(data, runtime=model.runtime)
        except Exception as e:
            result[f"{variant}/load"] = _error(e)
            continue
        xs = inputs
        if variant == "batch2":  # inputs of batch 2 for the fixed batch
            xs = _generic_inputs(loaded, name + "/batch2")
        result[f"{variant}/loaded_run"] = _run(loaded, xs)
        try:
            result[f"{variant}/reexport"] = _digest(export_tflite(loaded))
        except Exception as e:
            result[f"{variant}/reexport"] = _error(e)
        if variant == "default":
            report = inspect_tflite(data)
            result["inspect"] = _digest(json.dumps(report, sort_keys=True, default=str).encode())
    return result


# ----------------------------------------------------------------------------- cases


def builder_cases() -> dict[str, Case]:
    from jaxlstm.model import ModelBuilder
    from jaxlstm.ops import GATES, GRUOptions, GRUWeights, LSTMOptions, LSTMWeights, RNNOptions, RNNWeights
    from tests.tflite.models import bidirectional_lstm, lstm_weights, stacked_lstm

    def rng():
        return np.random.default_rng(0)

    def full_lstm_weights(r, n_input, n_cell, n_output, *, cifg=False, diagonal=False, layer_norm=True):
        f = {}
        for g in GATES[1:] if cifg else GATES:
            f[f"input_to_{g}_weights"] = r.normal(size=(n_cell, n_input)).astype(np.float32) * 0.4
            f[f"recurrent_to_{g}_weights"] = (
                r.normal(size=(n_cell,)) if diagonal else r.normal(size=(n_cell, n_output))
            ).astype(np.float32) * 0.4
            f[f"{g}_gate_bias"] = r.normal(size=n_cell).astype(np.float32) * 0.2
            if layer_norm:
                f[f"{g}_layer_norm_coefficients"] = (1 + 0.1 * r.normal(size=n_cell)).astype(np.float32)
            if g != "cell" and not diagonal:
                f[f"cell_to_{g}_weights"] = r.normal(size=n_cell).astype(np.float32) * 0.3
        if n_output != n_cell:
            f["projection_weights"] = r.normal(size=(n_output, n_cell)).astype(np.float32) * 0.4
            f["projection_bias"] = r.normal(size=n_output).astype(np.float32) * 0.1
        return LSTMWeights(**f)

    def rnn_weights(r, n_input, units, aux=0):
        return RNNWeights(
            r.normal(size=(units, n_input)).astype(np.float32) * 0.5,
            r.normal(size=(units, units)).astype(np.float32) * 0.5,
            r.normal(size=units).astype(np.float32) * 0.2,
            r.normal(size=(units, aux)).astype(np.float32) * 0.5 if aux else None,
        )

    def gru_weights(r, n_input, units, recurrent_bias=True):
        f = {}
        for g in ("update", "reset", "candidate"):
            f[f"input_to_{g}_weights"] = r.normal(size=(units, n_input)).astype(np.float32) * 0.5
            f[f"recurrent_to_{g}_weights"] = r.normal(size=(units, units)).astype(np.float32) * 0.5
            f[f"{g}_gate_bias"] = r.normal(size=units).astype(np.float32) * 0.2
            if recurrent_bias:
                f[f"recurrent_{g}_gate_bias"] = r.normal(size=units).astype(np.float32) * 0.2
        return GRUWeights(**f)

    def full_lstm(time_major=False, cell=False, **kw):
        def build():
            r = rng()
            b = ModelBuilder()
            x = b.add_input("input", (-1, 6) if cell else (-1, -1, 6))
            w = full_lstm_weights(r, 6, 5, 3 if not kw.get("diagonal") else 5, **kw)
            options = LSTMOptions(cell_clip=0.7, proj_clip=0.5, time_major=time_major)
            y = (b.add_lstm_cell if cell else b.add_lstm)(x, w, options)
            return b.build([y]), None

        return build

    def basic_lstm_cell():
        r = rng()
        b = ModelBuilder()
        x = b.add_input("input", (-1, 3))
        y = b.add_basic_lstm_cell(x, r.normal(size=(16, 7)).astype(np.float32), r.normal(size=16).astype(np.float32))
        return b.build([y]), None

    def bidirectional_with_aux(cross_linked: bool, time_major: bool, merge: bool):
        def build():
            r = rng()
            b = ModelBuilder()
            x = b.add_input("input", (-1, -1, 4))
            aux = b.add_input("aux", (-1, -1, 4 if not cross_linked else 3))
            fw, bw = (full_lstm_weights(r, 4, 5, 5, layer_norm=False) for _ in range(2))
            if cross_linked:
                extra = {f"aux_input_to_{g}_weights": r.normal(size=(5, 3)).astype(np.float32) for g in GATES}
                fw, bw = fw.replace(**extra), bw.replace(**extra)
            ys = b.add_bidirectional_lstm(
                x, fw, bw, LSTMOptions(time_major=time_major), merge_outputs=merge, aux_input=aux
            )
            return b.build(ys), None

        return build

    def rnn_models(kind: str, time_major=False, merge=True, aux=False):
        def build():
            r = rng()
            b = ModelBuilder()
            options = RNNOptions("RELU" if kind == "cell" else "TANH", time_major=time_major)
            if kind == "cell":
                x = b.add_input("input", (-1, 4))
                return b.build([b.add_rnn_cell(x, rnn_weights(r, 4, 5), options)]), None
            x = b.add_input("input", (-1, -1, 4))
            if kind == "uni":
                return b.build([b.add_rnn(x, rnn_weights(r, 4, 5), options)]), None
            a = b.add_input("aux", (-1, -1, 4)) if aux else None
            fw, bw = rnn_weights(r, 4, 5, 4 if aux else 0), rnn_weights(r, 4, 3, 4 if aux else 0)
            return b.build(b.add_bidirectional_rnn(x, fw, bw, options, merge_outputs=merge, aux_input=a)), None

        return build

    def gru(reset_after=True, runtime=False, return_sequences=True, reverse=False, time=-1, recurrent_bias=True):
        def build():
            r = rng()
            b = ModelBuilder()
            x = b.add_input("input", (-1, time, 4))
            y = b.add_gru(
                x,
                gru_weights(r, 4, 5, recurrent_bias),
                GRUOptions(reset_after=reset_after),
                reverse=reverse,
                keep_order=reverse,
                return_sequences=return_sequences,
                runtime_recurrent_weights=runtime,
            )
            return b.build([y]), None

        return build

    def glue_head():
        r = rng()
        b = ModelBuilder()
        x = b.add_input("input", (-1, -1, 5))
        h = b.add_lstm(x, lstm_weights(r, 5, 8), LSTMOptions(time_major=True))
        h = b.add_last_time_step(h, time_major=True)
        y = b.add_fully_connected(h, r.normal(size=(3, 8)).astype(np.float32), None, activation="RELU")
        return b.build([b.add_softmax(y, beta=0.5)]), None

    return {
        "builder/stacked_lstm": (lambda: (stacked_lstm(rng()), None), FULL),
        "builder/stacked_lstm_fixed_batch": (lambda: (stacked_lstm(rng(), batch=2, time=3), None), FULL),
        "builder/bidirectional_lstm": (lambda: (bidirectional_lstm(rng()), None), FULL),
        "builder/bidirectional_lstm_merged": (lambda: (bidirectional_lstm(rng(), merge_outputs=True), None), FULL),
        "builder/lstm_all_features": (full_lstm(), FULL),
        "builder/lstm_all_features_time_major": (full_lstm(time_major=True), FULL),
        "builder/lstm_cifg": (full_lstm(cifg=True), FULL),
        "builder/lstm_diagonal": (full_lstm(diagonal=True, layer_norm=False), FULL),
        "builder/lstm_cell": (full_lstm(cell=True), FULL),
        "builder/basic_lstm_cell": (basic_lstm_cell, FULL),
        "builder/bidirectional_lstm_aux_backward": (bidirectional_with_aux(False, False, False), FULL),
        "builder/bidirectional_lstm_cross_linked_tm": (bidirectional_with_aux(True, True, True), FULL),
        "builder/bidirectional_lstm_merged_tm": (bidirectional_with_aux(False, True, True), FULL),
        "builder/rnn": (rnn_models("uni"), FULL),
        "builder/rnn_time_major": (rnn_models("uni", time_major=True), FULL),
        "builder/rnn_cell": (rnn_models("cell"), FULL),
        "builder/bidirectional_rnn_merged": (rnn_models("bi"), FULL),
        "builder/bidirectional_rnn_split_tm_aux": (rnn_models("bi", time_major=True, merge=False, aux=True), FULL),
        "builder/bidirectional_rnn_merged_tm_aux": (rnn_models("bi", time_major=True, merge=True, aux=True), FULL),
        "builder/gru": (gru(), FULL),
        "builder/gru_reset_before_runtime_weights": (gru(reset_after=False, runtime=True), FULL),
        "builder/gru_last_reverse_static": (gru(return_sequences=False, reverse=True, time=3), FULL),
        "builder/gru_no_recurrent_bias": (gru(recurrent_bias=False), FULL),
        "builder/glue_head": (glue_head, FULL),
    }


def glue_cases() -> dict[str, Case]:
    from jaxlstm.model import ModelBuilder
    from tests.tflite import test_frontend_ops, test_glue_ops

    cases: dict[str, Case] = {}
    for name, make in test_glue_ops.CASES.items():

        def build(make=make):
            b = ModelBuilder()
            outputs, inputs = make(b, np.random.default_rng(0))
            return b.build(outputs), inputs

        cases[f"glue/{name}"] = (build, ("default", "dynamic"))
    for case in test_frontend_ops.CASES:

        def build(case=case):
            from jaxlstm.tflite import load_tflite

            data, inputs = case.export()
            return load_tflite(data), inputs

        cases[f"frontend/{case.name}"] = (build, ("default", "dynamic"))
    return cases


def integer_cases() -> dict[str, Case]:
    from tests.tflite import test_integer_ops
    from tests.tflite.integer_models import Config, integer_model, random_inputs

    configs = {
        "plain": [Config()],
        "all_features": [Config(peephole=True, projection=True, projection_bias=True, layer_norm=True, cell_clip=0.5)],
        "cifg_time_major": [Config(cifg=True, time_major=True, proj_clip=0.3, projection=True)],
        "single_step": [Config(single_step=True, layer_norm=True)],
    }
    # TFLite Micro's integer LSTM: no CIFG, peephole, projection, layer norm or single step.
    micro = {"plain": [Config()], "time_major_clips": [Config(time_major=True, cell_clip=0.5)]}

    def integer(cs, activations, runtime):
        def build():
            rng = np.random.default_rng(0)
            model = integer_model(rng, cs, activations)
            return model.replace(runtime=runtime), random_inputs(rng, cs, activations)

        return build

    cases: dict[str, Case] = {}
    for name, cs in configs.items():
        cases[f"integer/int8_{name}"] = (integer(cs, "int8", "litert"), ("default", "streaming"))
    for activations in ("int8", "int16"):
        for name, cs in micro.items():
            cases[f"integer/micro_{activations}_{name}"] = (integer(cs, activations, "tflite-micro"), DEFAULT)

    def ops(runtime):
        def build():
            m = test_integer_ops.build(test_integer_ops.CASES)
            return m.replace(runtime=runtime), test_integer_ops.inputs(test_integer_ops.CASES, 0)[0]

        return build

    cases["integer/glue_ops_litert"] = (ops("litert"), ("default", "streaming"))
    cases["integer/glue_ops_micro"] = (ops("tflite-micro"), ("default",))
    return cases


def while_cases(while_dir: str | None) -> dict[str, Case]:
    from tests.tflite.test_while import rnn_loop

    cases: dict[str, Case] = {
        "while/builder_scan": (lambda: (rnn_loop(), None), ("default", "dynamic")),
        "while/builder_bounded": (
            lambda: (
                rnn_loop(bound=True),
                [np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32), np.asarray(3, np.int32)],
            ),
            ("default",),
        ),
        "while/builder_slices": (lambda: (rnn_loop(write="slices"), None), ("default",)),
    }
    if while_dir is None:
        return cases
    from tests.tflite import keras3_while_models as k3

    if not os.path.exists(os.path.join(while_dir, "lstm_sequences.tflite")):
        os.makedirs(while_dir, exist_ok=True)
        subprocess.run(
            [sys.executable, k3.__file__, while_dir], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()}
        )
    for name in k3.MODELS:

        def build(name=name):
            from jaxlstm.tflite import load_tflite

            with open(os.path.join(while_dir, f"{name}.tflite"), "rb") as f:
                model = load_tflite(f.read())
            return model, [np.load(os.path.join(while_dir, f"{name}.npz"))["x"]]

        cases[f"keras3_while/{name}"] = (build, ("default", "streaming", "dynamic"))
    return cases


def converter_cases() -> dict[str, Case]:
    from jaxlstm.convert import from_flax, from_keras, from_lingvo, from_tf_v1_lstm_cell, from_torch

    cases: dict[str, Case] = {}

    def keras3(make_layers, batch_size=None):
        def build():
            import keras

            L = keras.layers
            model = keras.Sequential([keras.Input((5, 3)), *make_layers(L)])
            r = np.random.default_rng(1)
            model.set_weights([r.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
            return from_keras(model, batch_size=batch_size), None

        return build

    keras_models = {
        "lstm_seq": lambda L: [L.LSTM(4, return_sequences=True)],
        "lstm_go_backwards_last": lambda L: [L.LSTM(4, go_backwards=True)],
        "rnn_relu": lambda L: [L.SimpleRNN(4, activation="relu", return_sequences=True)],
        "gru_reset_after": lambda L: [L.GRU(4, return_sequences=True)],
        "gru_reset_before_last": lambda L: [L.GRU(4, reset_after=False)],
        "bidirectional_gru": lambda L: [L.Bidirectional(L.GRU(3, return_sequences=True))],
        **{
            f"bidi_lstm_{m}": (lambda L, m=m: [L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode=m)])
            for m in ("concat", "sum", "mul", "ave", None)
        },
        "bidi_lstm_different_sizes": lambda L: [
            L.Bidirectional(
                L.LSTM(4, return_sequences=True), backward_layer=L.LSTM(3, return_sequences=True, go_backwards=True)
            )
        ],
        "bidi_rnn_sum_last": lambda L: [L.Bidirectional(L.SimpleRNN(3, activation="relu"), merge_mode="sum")],
        "stacked_dense": lambda L: [
            L.LSTM(4, return_sequences=True),
            L.Dropout(0.5),
            L.Dense(3, activation="relu6"),
            L.SimpleRNN(3),
            L.Dense(3, activation="tanh"),
            L.Dense(2, activation="softmax"),
        ],
    }
    for name, layers in keras_models.items():
        cases[f"keras3/{name}"] = (keras3(layers), FULL)
    cases["keras3/lstm_seq_batch2"] = (keras3(keras_models["lstm_seq"], batch_size=2), FULL)

    def tf_keras_model(time_major):
        def build():
            import tf_keras

            L = tf_keras.layers
            shape = (5, 2, 3) if time_major else (2, 5, 3)
            model = tf_keras.Sequential(
                [
                    L.InputLayer(batch_input_shape=shape),
                    L.LSTM(4, return_sequences=True, time_major=time_major),
                    L.SimpleRNN(3, time_major=time_major, return_sequences=True),
                    L.Dense(2),
                ]
            )
            r = np.random.default_rng(2)
            model.set_weights([r.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
            return from_keras(model), None

        return build

    cases["tf_keras/lstm_rnn_dense"] = (tf_keras_model(False), FULL)
    cases["tf_keras/lstm_rnn_dense_time_major"] = (tf_keras_model(True), FULL)

    def torch_model(cls_name, **kwargs):
        def build():
            import torch

            torch.manual_seed(0)
            module = getattr(torch.nn, cls_name)(3, 4, **kwargs)
            return from_torch(module), None

        return build

    cases["torch/lstm_2layers_batch_first"] = (torch_model("LSTM", num_layers=2, batch_first=True), FULL)
    cases["torch/lstm_bidi_proj"] = (torch_model("LSTM", bidirectional=True, proj_size=3), FULL)
    cases["torch/rnn_relu_bidi"] = (torch_model("RNN", nonlinearity="relu", bidirectional=True), FULL)
    cases["torch/gru_bidi"] = (torch_model("GRU", bidirectional=True, batch_first=True), FULL)

    def flax_model(kind):
        def build():
            import jax
            from flax import linen as nn
            from flax import nnx

            x = np.zeros((2, 5, 3), np.float32)
            if kind == "linen_bidirectional":
                module = nn.Bidirectional(nn.RNN(nn.LSTMCell(4)), nn.RNN(nn.OptimizedLSTMCell(3)))
            elif kind == "linen_gru":
                module = nn.RNN(nn.GRUCell(4))
            else:
                module = nn.RNN(nn.SimpleCell(4), reverse=True, keep_order=True)
            if kind == "nnx_lstm":
                module = nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
                leaves, tree = jax.tree_util.tree_flatten(nnx.state(module, nnx.Param))
                r = np.random.default_rng(4)
                nnx.update(
                    module,
                    jax.tree_util.tree_unflatten(
                        tree, [r.normal(scale=0.5, size=np.shape(v)).astype(np.float32) for v in leaves]
                    ),
                )
                return from_flax(module), None
            variables = module.init(jax.random.key(0), x)
            leaves, tree = jax.tree_util.tree_flatten(variables)
            r = np.random.default_rng(4)
            variables = jax.tree_util.tree_unflatten(
                tree, [r.normal(scale=0.5, size=np.shape(v)).astype(np.float32) for v in leaves]
            )
            return from_flax(module, variables, time_steps=5 if kind == "linen_gru" else None), None

        return build

    for kind in ("linen_bidirectional", "linen_gru", "linen_simple_reverse", "nnx_lstm"):
        cases[f"flax/{kind}"] = (flax_model(kind), FULL)

    def lingvo(**kw):
        def build():
            r = np.random.default_rng(5)
            n_out, hidden = kw.get("num_output_nodes", 4), kw.get("num_hidden_nodes", 0)
            cell = hidden or n_out
            gates = 3 if kw.get("couple_input_forget_gates") else 4
            theta = {"wm": r.normal(size=(3 + n_out, gates * cell)), "b": r.normal(size=gates * cell)}
            if hidden:
                theta["w_proj"] = r.normal(size=(cell, n_out))
            if kw.get("layer_norm"):
                theta["ln_scale"] = 1 + 0.2 * r.normal(size=gates * cell)
            theta = {k: v.astype(np.float32) for k, v in theta.items()}
            return from_lingvo(theta, num_input_nodes=3, **kw), None

        return build

    cases["lingvo/plain"] = (lingvo(num_output_nodes=4), FULL)
    cases["lingvo/projection_cifg"] = (
        lingvo(num_output_nodes=3, num_hidden_nodes=5, couple_input_forget_gates=True, forget_gate_bias=1.0),
        FULL,
    )
    cases["lingvo/layer_norm"] = (lingvo(num_output_nodes=4, layer_norm=True), FULL)

    def tf1(basic, **kw):
        def build():
            r = np.random.default_rng(6)
            units, proj = kw["num_units"], kw.get("num_proj")
            variables = {
                "rnn/lstm_cell/kernel:0": r.normal(size=(3 + (proj or units), 4 * units)).astype(np.float32) * 0.5,
                "rnn/lstm_cell/bias:0": r.normal(size=4 * units).astype(np.float32) * 0.5,
            }
            if kw.get("use_peepholes"):
                for g in ("f", "i", "o"):
                    variables[f"rnn/lstm_cell/w_{g}_diag:0"] = r.normal(size=units).astype(np.float32)
            if proj:
                variables["rnn/lstm_cell/projection/kernel:0"] = r.normal(size=(units, proj)).astype(np.float32)
            return from_tf_v1_lstm_cell(variables, basic=basic, **kw), None

        return build

    cases["tf1/basic"] = (tf1(True, num_units=4), FULL)
    cases["tf1/all_features"] = (
        tf1(False, num_units=5, use_peepholes=True, num_proj=3, cell_clip=1.0, proj_clip=0.5),
        FULL,
    )
    return cases


def nn_cases() -> dict[str, Case]:
    from tests.nn._layers import LSTM_CASES, make

    cases: dict[str, Case] = {}
    for kind in ("lstm", "bidirectional_lstm", "simple_rnn", "bidirectional_rnn"):
        cases[f"nn/{kind}"] = (lambda kind=kind: (make(kind).to_model(), None), FULL)
    for k, case in enumerate(LSTM_CASES[1:], 1):
        cases[f"nn/lstm_case{k}"] = (lambda case=case: (make("lstm", case).to_model(), None), FULL)

    def gru(bidirectional):
        def build():
            from flax import nnx

            from jaxlstm.nn import GRU, BidirectionalGRU
            from tests.nn._layers import randomize

            cls = BidirectionalGRU if bidirectional else GRU
            return randomize(cls(4, 5, rngs=nnx.Rngs(0))).to_model(), None

        return build

    def sequential():
        from flax import nnx

        from jaxlstm.nn import LSTM, LastTimeStep, Sequential, SimpleRNN, Softmax
        from tests.nn._layers import randomize

        rngs = nnx.Rngs(0)
        model = Sequential(
            LSTM(4, 5, rngs=rngs), SimpleRNN(5, 3, rngs=rngs), LastTimeStep(), nnx.Linear(3, 2, rngs=rngs), Softmax()
        )
        return randomize(model).to_model(), None

    cases["nn/gru"] = (gru(False), FULL)
    cases["nn/bidirectional_gru"] = (gru(True), FULL)
    cases["nn/sequential"] = (sequential, FULL)
    return cases


def all_cases(while_dir: str | None) -> dict[str, Case]:
    cases: dict[str, Case] = {}
    for group in (builder_cases, glue_cases, integer_cases, converter_cases, nn_cases):
        cases.update(group())
    cases.update(while_cases(while_dir))
    return cases


def compare(before: str, after: str) -> int:
    with open(before) as f:
        a = json.load(f)
    with open(after) as f:
        b = json.load(f)
    differences = []
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            differences.append(f"{name}: only in {'after' if name in b else 'before'}")
            continue
        for key in sorted(set(a[name]) | set(b[name])):
            if a[name].get(key) != b[name].get(key):
                differences.append(f"{name} {key}: {a[name].get(key)} -> {b[name].get(key)}")
    entries = sum(len(v) for v in a.values())
    print(f"{len(a)} cases, {entries} entries; {len(differences)} differ")
    print("\n".join(differences))
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", help="JSON file to write")
    parser.add_argument("--while-dir", help="directory of the TF-converted Keras 3 WHILE models (made if missing)")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    parser.add_argument("-k", help="only cases whose name contains this")
    args = parser.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        parser.error("OUT is required")
    import keras  # noqa: F401  (Keras 3 on JAX before any TensorFlow import)

    cases = all_cases(args.while_dir)
    result = {}
    start = time.time()
    for name, case in cases.items():
        if args.k and args.k not in name:
            continue
        t = time.time()
        result[name] = fingerprint_case(name, case)
        errors = [k for k, v in result[name].items() if v.startswith("error")]
        print(f"{name}: {len(result[name])} entries, {len(errors)} errors, {time.time() - t:.1f} s", flush=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, sort_keys=True)
    print(f"{len(result)} cases in {time.time() - start:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
