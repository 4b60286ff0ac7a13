"""What TensorFlow's converter writes for Keras 3 recurrent models: every subgraph's operators.

Builds small Keras 3 models (TensorFlow backend) - LSTM, GRU, SimpleRNN, Bidirectional with each
merge mode, go_backwards, Masking, stacked layers with a Dense head, convolutional and
normalization front ends - converts each with `tf.lite.TFLiteConverter.from_keras_model`, float
and dynamic-range (`Optimize.DEFAULT`, no representative dataset), with a dynamic (None) and a
fixed batch, and prints per file: the conversion time, every subgraph's operators (opcode,
version, options, inputs and outputs as shape/dtype, `c` marking constants), the WHILE ops'
cond/body subgraphs and whether a Flex or custom op appears; then one summary table of the
opcodes per model and subgraph role. Keras runs on the TensorFlow backend (set here, before
keras is imported).

    python experiments/survey_while_models.py [--only NAME ...] [--brief] [--run-subgraphs]
        [--check-rewrite] [--batch N]

With --run-subgraphs, every cond and body subgraph is also cut out as a model of its own and run
in LiteRT's builtin kernels and in jaxlstm (eagerly, then under jit), which checks the kernels of
everything inside the loops before WHILE itself is supported.

With --check-rewrite, every body whose sequence writes (the lowered TensorListSetItem: SLICE /
CONCATENATION whose shapes depend on the loop counter) `load_tflite` rewrote into
DYNAMIC_UPDATE_SLICE is cut out twice, as the converter wrote it and as `export_tflite` writes
it back, and both run in LiteRT's builtin kernels for every counter value 0 .. T-1 on random
carries: the outputs must be bit-identical (the rewritten body also runs in jaxlstm under jit).
The whole model then runs in jaxlstm against LiteRT. --batch N (e.g. 2) surveys that batch only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # the converter traces TensorFlow functions
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import time
from collections import Counter

import numpy as np
from ai_edge_litert import schema_py_generated as schema

TIME, FEATURES, UNITS, BATCH = 6, 8, 4, 2
# Dense(..) reaches TFLite's 1024-element quantization threshold only with enough units.
BIG_UNITS = 32

OPCODE_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TYPE_NAMES = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def models(keras):
    """{name: a function batch -> keras.Model}."""
    L = keras.layers

    def seq(layers, features=FEATURES, time_steps=TIME, dtype="float32"):
        def build(batch):
            return keras.Sequential([keras.Input((time_steps, features), batch_size=batch, dtype=dtype), *layers()])

        return build

    big = BIG_UNITS
    table = {
        "lstm_seq": seq(lambda: [L.LSTM(UNITS, return_sequences=True)]),
        "lstm_last": seq(lambda: [L.LSTM(UNITS)]),
        "lstm_big_last": seq(lambda: [L.LSTM(big)], features=big),
        "stacked_lstm_dense_softmax": seq(
            lambda: [L.LSTM(UNITS, return_sequences=True), L.LSTM(UNITS), L.Dense(3, activation="softmax")]
        ),
        "lstm_go_backwards": seq(lambda: [L.LSTM(UNITS, go_backwards=True, return_sequences=True)]),
        "lstm_return_state": None,  # functional, below
        "gru_reset_after": seq(lambda: [L.GRU(UNITS, return_sequences=True)]),
        "gru_reset_before": seq(lambda: [L.GRU(UNITS, reset_after=False, return_sequences=True)]),
        "simple_rnn": seq(lambda: [L.SimpleRNN(UNITS, return_sequences=True)]),
        "simple_rnn_last": seq(lambda: [L.SimpleRNN(UNITS)]),
        "masking_lstm": seq(lambda: [L.Masking(0.0), L.LSTM(UNITS)]),
        "masking_lstm_seq": seq(lambda: [L.Masking(0.0), L.LSTM(UNITS, return_sequences=True)]),
        "conv1d_maxpool_lstm": seq(
            lambda: [L.Conv1D(6, 3, padding="same", activation="relu"), L.MaxPooling1D(2), L.LSTM(UNITS)]
        ),
        "conv1d_big_avgpool_lstm": seq(
            lambda: [L.Conv1D(big, 3, activation="relu6"), L.AveragePooling1D(2), L.LSTM(big)], features=big
        ),
        "sepconv_layernorm_gru": seq(
            lambda: [L.SeparableConv1D(6, 3, padding="same"), L.LayerNormalization(), L.GRU(UNITS)]
        ),
        "zeropad_conv_leakyrelu_gap": seq(
            lambda: [L.ZeroPadding1D(1), L.Conv1D(6, 3, dilation_rate=2), L.LeakyReLU(0.2), L.GlobalAveragePooling1D()]
        ),
        "conv2d_depthwise_lstm": None,  # functional, below
        "embedding_lstm": None,  # functional, below
        "batchnorm_lstm_globalmax": seq(
            lambda: [L.BatchNormalization(), L.LSTM(UNITS, return_sequences=True), L.GlobalMaxPooling1D()]
        ),
        "lstm_timedistributed_dense": seq(
            lambda: [L.LSTM(UNITS, return_sequences=True), L.TimeDistributed(L.Dense(3)), L.Dense(2)]
        ),
        "lstm_unroll": seq(lambda: [L.LSTM(UNITS, unroll=True)]),
        "lstm_stateful": seq(lambda: [L.LSTM(UNITS, stateful=True)]),
        "masking_bidi_lstm": seq(lambda: [L.Masking(0.0), L.Bidirectional(L.LSTM(UNITS))]),
        # Weights of 1024+ elements, so that dynamic-range quantization turns them int8.
        "big_stacked_lstm_dense": seq(
            lambda: [L.LSTM(big, return_sequences=True), L.LSTM(big), L.Dense(big, activation="softmax")],
            features=big,
        ),
        "big_gru_reset_after": seq(lambda: [L.GRU(big, return_sequences=True)], features=big),
        "big_gru_reset_before": seq(lambda: [L.GRU(big, reset_after=False)], features=big),
        "big_simple_rnn": seq(lambda: [L.SimpleRNN(big, return_sequences=True)], features=big),
        "big_bidi_lstm_sum": seq(lambda: [L.Bidirectional(L.LSTM(big), merge_mode="sum")], features=big),
        "big_masking_lstm": seq(lambda: [L.Masking(0.0), L.LSTM(big)], features=big),
        "big_conv_dilated_depthwise": None,  # functional, below
    }
    for merge in ("concat", "sum", "mul", "ave", None):
        table[f"bidi_lstm_{merge}"] = seq(
            lambda merge=merge: [L.Bidirectional(L.LSTM(UNITS, return_sequences=True), merge_mode=merge)]
        )
    table["bidi_lstm_concat_last"] = seq(lambda: [L.Bidirectional(L.LSTM(UNITS))])
    table["bidi_gru"] = seq(lambda: [L.Bidirectional(L.GRU(UNITS, return_sequences=True))])

    def return_state(batch):
        x = keras.Input((TIME, FEATURES), batch_size=batch)
        y, h, c = L.LSTM(UNITS, return_sequences=True, return_state=True)(x)
        return keras.Model(x, [y, h, c])

    def conv2d_depthwise(batch):
        x = keras.Input((TIME, FEATURES, 2), batch_size=batch)
        y = L.Conv2D(4, (3, 3), strides=(1, 2), padding="same", activation="relu")(x)
        y = L.DepthwiseConv2D((3, 3), depth_multiplier=2, padding="valid")(y)
        y = L.MaxPooling2D((1, 2))(y)
        y = L.Reshape((y.shape[1], y.shape[2] * y.shape[3]))(y)
        return keras.Model(x, L.LSTM(UNITS)(y))

    def embedding(batch):
        x = keras.Input((TIME,), batch_size=batch, dtype="int32")
        return keras.Model(x, L.LSTM(UNITS)(L.Embedding(20, FEATURES)(x)))

    def conv_dilated_depthwise(batch):
        x = keras.Input((TIME * 2, 8, big), batch_size=batch)
        y = L.Conv2D(big, (3, 3), dilation_rate=(2, 1), padding="same", activation="relu6")(x)
        y = L.DepthwiseConv2D((3, 3), depth_multiplier=1, padding="same", activation="relu")(y)
        y = L.AveragePooling2D((2, 2), padding="same")(y)
        y = L.Reshape((y.shape[1], y.shape[2] * y.shape[3]))(y)
        return keras.Model(x, L.GRU(UNITS)(y))

    table["embedding_lstm"] = embedding
    table["big_conv_dilated_depthwise"] = conv_dilated_depthwise
    table["lstm_return_state"] = return_state
    table["conv2d_depthwise_lstm"] = conv2d_depthwise
    return table


def randomize(model) -> None:
    """Seeded random weights: Keras' initial zero biases would be folded away by the converter."""
    rng = np.random.default_rng(0)
    for v in model.weights:
        value = rng.normal(scale=0.5, size=v.shape)
        if "variance" in v.path:  # BatchNormalization's moving variance must stay positive
            value = np.abs(value) + 0.5
        v.assign(value.astype(v.dtype))


def _options(op) -> str:
    opts = op.builtinOptions
    if opts is None:
        return ""
    fields = []
    for k, v in vars(opts).items():
        if isinstance(v, (list, np.ndarray)):
            v = list(np.asarray(v).tolist())
        fields.append(f"{k}={v}")
    return f"{type(opts).__name__[:-1]}({', '.join(fields)})"


def _tensor(sg, buffers, i) -> str:
    if i < 0:
        return "-"
    t = sg.tensors[i]
    dims = t.shapeSignature if t.shapeSignature is not None else t.shape
    shape = [] if dims is None else [int(d) for d in dims]
    const = t.buffer > 0 and buffers[t.buffer].data is not None
    quant = ""
    if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale):
        quant = f" q{len(t.quantization.scale)}"
    var = " var" if t.isVariable else ""
    return f"{TYPE_NAMES.get(t.type, t.type)}{shape}{' c' if const else ''}{quant}{var}"


def describe(data: bytes, brief: bool) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(printed lines, {role: opcodes}, flex/custom op names) of one .tflite file."""
    m = schema.ModelT.InitFromPackedBuf(data, 0)
    codes = []
    for c in m.operatorCodes:
        name = OPCODE_NAMES[max(c.builtinCode, c.deprecatedBuiltinCode)]
        if name == "CUSTOM":
            name = f"CUSTOM:{c.customCode.decode()}"
        codes.append((name, c.version))
    roles = {0: "main"}
    for sg in m.subgraphs:
        for op in sg.operators or []:
            if codes[op.opcodeIndex][0] == "WHILE":
                roles.setdefault(op.builtinOptions.condSubgraphIndex, "cond")
                roles.setdefault(op.builtinOptions.bodySubgraphIndex, "body")
    lines, ops_by_role, custom = [], {}, []
    for k, sg in enumerate(m.subgraphs):
        role = roles.get(k, "other")
        name = sg.name.decode() if isinstance(sg.name, bytes) else sg.name
        ins = ", ".join(_tensor(sg, m.buffers, i) for i in sg.inputs)
        outs = ", ".join(_tensor(sg, m.buffers, i) for i in sg.outputs)
        lines.append(f"  subgraph {k} ({role}, {name}): inputs [{ins}] -> outputs [{outs}]")
        for op in sg.operators or []:
            opcode, version = codes[op.opcodeIndex]
            ops_by_role.setdefault(role, []).append(opcode)
            if opcode.startswith("CUSTOM") or opcode.startswith("FLEX"):
                custom.append(opcode)
            if brief:
                continue
            ins = ", ".join(_tensor(sg, m.buffers, i) for i in op.inputs)
            outs = ", ".join(_tensor(sg, m.buffers, i) for i in op.outputs)
            lines.append(f"    {opcode} v{version} {_options(op)}\n      in: {ins}\n      out: {outs}")
        if brief:
            lines.append("    " + " ".join(ops_by_role.get(role, [])[-len(sg.operators or []) :]))
    return lines, ops_by_role, custom


def convert(tf, model, quant: str, select_tf_ops: bool) -> bytes:
    """The .tflite bytes of `model`; TensorFlow's chatter on stdout is dropped."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quant == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if select_tf_ops:  # what the converter's error for dynamic TensorList shapes suggests
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        converter._experimental_lower_tensor_list_ops = False
    with contextlib.redirect_stdout(io.StringIO()):
        return converter.convert()


def standalone(data: bytes, index: int) -> bytes:
    """A .tflite file whose only subgraph is subgraph `index` of `data` (its inputs become the
    model's inputs), so that a WHILE's cond or body runs on its own."""
    import flatbuffers

    m = schema.ModelT.InitFromPackedBuf(data, 0)
    m.subgraphs, m.signatureDefs = [m.subgraphs[index]], []
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def run_subgraphs(data: bytes) -> list[str]:
    """Runs every subgraph but main standalone in LiteRT's builtin kernels and in jaxlstm
    (eagerly and under jit), on counters of 1 and random tensors; one line per subgraph."""
    import jax

    from jaxlstm.parity.litert import run_litert
    from jaxlstm.tflite import load_tflite

    rng = np.random.default_rng(0)
    lines = []
    for k in range(1, len(schema.ModelT.InitFromPackedBuf(data, 0).subgraphs)):
        sub = standalone(data, k)
        sg = schema.ModelT.InitFromPackedBuf(sub, 0).subgraphs[0]
        inputs = []
        for i in sg.inputs:
            t = sg.tensors[i]
            shape = [] if t.shape is None else list(t.shape)
            if t.type == schema.TensorType.INT32:
                inputs.append(np.ones(shape, np.int32))
            elif t.type == schema.TensorType.BOOL:
                inputs.append(rng.random(shape) > 0.5)
            else:
                inputs.append(rng.normal(size=shape).astype(np.float32))
        try:
            m = load_tflite(sub)
            lite = run_litert(sub, inputs, xnnpack=False)[0]
            err = max(float(np.max(np.abs(np.asarray(a, np.float64) - b), initial=0)) for a, b in zip(m(*inputs), lite))
            line = f"  subgraph {k}: max |jaxlstm - LiteRT| = {err:.2g}"
            try:
                jax.jit(lambda *xs, m=m: m(*xs))(*inputs)
            except NotImplementedError as e:
                line += f"; under jit: {e}"
        except (ValueError, NotImplementedError) as e:
            line = f"  subgraph {k}: {type(e).__name__}: {e}"
        lines.append(line)
    return lines


def check_rewrite(data: bytes) -> list[str]:
    """Runs every rewritten body before and after the rewrite in LiteRT (module docstring),
    then the whole model in jaxlstm (eager and jit) against LiteRT; one line per check."""
    import jax

    from jaxlstm.parity.litert import run_litert
    from jaxlstm.tflite import export_tflite, load_tflite

    model = load_tflite(data)
    rewritten = export_tflite(model)
    original = schema.ModelT.InitFromPackedBuf(data, 0)
    lines = []
    rng = np.random.default_rng(0)
    for k, graph in enumerate(model.subgraphs, 1):
        if "DYNAMIC_UPDATE_SLICE" not in graph.opcodes:
            continue
        sg = original.subgraphs[k]
        before, after = standalone(data, k), standalone(rewritten, k)
        jitted = load_tflite(after)
        run = jax.jit(lambda *xs, m=jitted: m(*xs))
        buffer = next(
            sg.tensors[i] for i in sg.inputs if sg.tensors[i].shape is not None and len(sg.tensors[i].shape) == 3
        )
        steps = int(buffer.shape[0])
        worst = 0.0
        for t in range(steps):
            inputs = []
            for i in sg.inputs:
                tensor = sg.tensors[i]
                shape = [] if tensor.shape is None else list(tensor.shape)
                if tensor.type == schema.TensorType.INT32:
                    inputs.append(np.full(shape, t, np.int32))
                elif tensor.type == schema.TensorType.BOOL:
                    inputs.append(rng.random(shape) > 0.5)
                else:
                    inputs.append(rng.normal(size=shape).astype(np.float32))
            want = run_litert(before, inputs, xnnpack=False)[0]
            got = run_litert(after, inputs, xnnpack=False)[0]
            if not all(np.array_equal(a, b) for a, b in zip(want, got)):
                raise AssertionError(f"subgraph {k}, counter {t}: the rewritten body differs in LiteRT")
            ours = run(*inputs)
            worst = max(
                worst,
                *(float(np.max(np.abs(np.subtract(a, b, dtype=np.float64)), initial=0)) for a, b in zip(ours, want)),
            )
        lines.append(
            f"  subgraph {k}: rewrite exact in LiteRT for counters 0..{steps - 1}; jaxlstm (jit) vs LiteRT {worst:.2g}"
        )
    x = [
        rng.normal(size=model.tensors[i].shape).astype(np.float32)
        if model.tensors[i].dtype == "float32"
        else rng.integers(0, 20, size=model.tensors[i].shape).astype(model.tensors[i].dtype)
        for i in model.inputs
    ]
    lite = run_litert(data, x, invocations=2, reset=False, xnnpack=False)
    eager = model(*x)
    jit = jax.jit(lambda p, *xs: model.apply(p, None, *xs)[0])(model.params, *x)
    err = max(
        float(np.max(np.abs(np.subtract(a, b, dtype=np.float64)), initial=0))
        for run in lite
        for a, b in zip(eager, run)
    )
    same = all(np.array_equal(a, b) for a, b in zip(eager, jit))
    lines.append(f"  whole model: max |jaxlstm - LiteRT| = {err:.2g} over two invokes; jit == eager: {same}")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", help="model names to survey (default: all)")
    parser.add_argument("--brief", action="store_true", help="one line of opcodes per subgraph")
    parser.add_argument(
        "--run-subgraphs", action="store_true", help="run each cond/body standalone in LiteRT and jaxlstm"
    )
    parser.add_argument(
        "--check-rewrite", action="store_true", help="check the DYNAMIC_UPDATE_SLICE rewrite of every body in LiteRT"
    )
    parser.add_argument("--batch", type=int, help=f"survey this batch only (default: None and {BATCH})")
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, keras {keras.__version__} ({keras.backend.backend()} backend)")
    summary = []
    for name, build in models(keras).items():
        if args.only and name not in args.only:
            continue
        for batch in (None, BATCH) if args.batch is None else (args.batch,):
            keras.utils.set_random_seed(0)
            try:
                model = build(batch)
            except ValueError as e:  # e.g. stateful=True needs a fixed batch
                print(f"\n== {name} batch={batch}: cannot build: {e}")
                continue
            randomize(model)
            for quant in ("float", "dynamic"):
                for select_tf_ops in (False, True):
                    start = time.perf_counter()
                    try:
                        data = convert(tf, model, quant, select_tf_ops)
                    except Exception as e:  # report and go on: the survey records what fails too
                        first = str(e).strip().splitlines()[0][:300]
                        print(f"\n== {name} batch={batch} {quant}: conversion failed: {type(e).__name__}: {first}")
                        continue  # retry with TensorFlow select ops, as the converter's message suggests
                    seconds = time.perf_counter() - start
                    lines, ops_by_role, custom = describe(data, args.brief)
                    how = quant + ("+select_tf_ops" if select_tf_ops else "")
                    print(f"\n== {name} batch={batch} {how}: {len(data)} bytes, converted in {seconds:.1f} s")
                    print("\n".join(lines))
                    print(f"  flex/custom ops: {custom or 'none'}")
                    if args.run_subgraphs and not custom:
                        print("\n".join(run_subgraphs(data)))
                    if args.check_rewrite and not custom:
                        try:
                            print("\n".join(check_rewrite(data)))
                        except (ValueError, NotImplementedError) as e:
                            print(f"  load_tflite: {type(e).__name__}: {e}")
                    summary.append((name, batch, how, ops_by_role))
                    break

    print("\n== summary: distinct opcodes (count) per subgraph role")
    for name, batch, quant, ops_by_role in summary:
        for role, ops in ops_by_role.items():
            counts = ", ".join(f"{op}x{n}" if n > 1 else op for op, n in sorted(Counter(ops).items()))
            print(f"{name:28s} {batch!s:5s} {quant:22s} {role:5s} {counts}")
    every = sorted({op for *_, roles in summary for ops in roles.values() for op in ops})
    print(f"\nall opcodes: {' '.join(every)}")


if __name__ == "__main__":
    main()
