"""Fully integer LSTMs, bit for bit: jaxlstm against LiteRT and TensorFlow Lite Micro.

Models come from `jaxlstm.quantization.quantize_lstm` (random weights and calibration
ranges) and jaxlstm's writer, plus one made by TensorFlow's converter. Every comparison is
exact: outputs and final states over multi-step sequences and two invokes that carry the
state. Invalid models are refused at load with the reason.
"""

from __future__ import annotations

import itertools
import warnings

import jax
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.model.operators import OPERATORS
from jaxlstm.ops import LSTMOptions, LSTMQuantization, LSTMWeights, QuantizedTensor, QuantParams
from jaxlstm.ops._fixed_point import quantize_multiplier
from jaxlstm.ops.lstm_integer import prepare
from jaxlstm.parity.litert import variable_tensors
from jaxlstm.quantization import LSTMRanges, quantize_lstm
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.integer_models import (
    Config,
    calibration_ranges,
    float_weights,
    integer_model,
    random_inputs,
    run_twice,
)
from tests.tflite.models import edit_flatbuffer


def _litert(data: bytes, inputs: list[np.ndarray]) -> list[tuple[list[np.ndarray], dict[int, np.ndarray]]]:
    """(outputs, {variable tensor index: value}) after each of two invokes without reset."""
    interpreter = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()  # the variables start at their zero points
    states = [i for i, _ in variable_tensors(data)]
    runs = []
    for _ in range(2):
        for d, x in zip(interpreter.get_input_details(), inputs):
            interpreter.set_tensor(d["index"], x)
        interpreter.invoke()
        outputs = [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]
        runs.append((outputs, {i: interpreter.get_tensor(i).copy() for i in states}))
    return runs


def _tflite_micro(data: bytes, inputs: list[np.ndarray], n_outputs: int):
    """Like `_litert`, in TFLite Micro's interpreter."""
    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    interpreter = runtime.Interpreter.from_bytes(data, intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
    states = [i for i, _ in variable_tensors(data)]
    runs = []
    for _ in range(2):
        for k, x in enumerate(inputs):
            interpreter.set_input(x, k)
        interpreter.invoke()
        outputs = [interpreter.get_output(k).copy() for k in range(n_outputs)]
        runs.append((outputs, {i: interpreter.GetTensor(i, 0)["tensor_data"].copy() for i in states}))
    return runs


def _assert_runs_equal(model, ours, theirs, outputs: list[int] | None = None):
    """Outputs `outputs` (default: all) and every state tensor, after both invokes, exactly."""
    for invoke, ((y, state), (y_ref, state_ref)) in enumerate(zip(ours, theirs)):
        for k in outputs if outputs is not None else range(len(y)):
            np.testing.assert_array_equal(y[k], y_ref[k], err_msg=f"output {k}, invoke {invoke}")
        for index, value in state_ref.items():
            name = model.tensors[index].name
            if outputs is None or any(name.startswith(f"lstm{k}/") for k in outputs):
                np.testing.assert_array_equal(state[name], value.reshape(state[name].shape), err_msg=name)


# ----------------------------------------------------------------------------- LiteRT


def _every_feature_combination() -> list[Config]:
    """CIFG x peephole x projection (none, without bias, with bias) x layer norm: 24
    configurations, alternating layouts and clips."""
    configs = []
    combos = itertools.product((False, True), (False, True), ("none", "no_bias", "bias"), (False, True))
    for k, (cifg, peephole, projection, layer_norm) in enumerate(combos):
        configs.append(
            Config(
                cifg=cifg,
                peephole=peephole,
                projection=projection != "none",
                projection_bias=projection == "bias",
                layer_norm=layer_norm,
                time_major=k % 2 == 1,
                cell_clip=(0.0, 0.3, 8.0)[k % 3],
                proj_clip=0.4 if projection != "none" and k % 4 < 2 else 0.0,
            )
        )
    return configs


LITERT_CONFIGS = [
    *_every_feature_combination(),
    # The kernel reads n_output peephole weights (the n_output bug): with n_output < n_cell
    # a batch-major sequence (one row at a time) and a time-major one differ.
    Config(n_cell=5, n_output=2, batch=3, peephole=True, projection=True),
    Config(n_cell=5, n_output=2, batch=3, peephole=True, projection=True, time_major=True),
    # The single-step LSTM op.
    Config(single_step=True, batch=1, peephole=True, layer_norm=True),
    Config(single_step=True, batch=3, cifg=True, peephole=True, projection=True, projection_bias=True),
    # Large weights drive the gates into saturation; the smallest sizes.
    Config(batch=3, time=5, n_cell=6, weight_scale=2.0, cell_clip=2.0),
    Config(n_input=1, n_cell=1, batch=1, time=6),
]


@pytest.fixture(scope="module")
def litert_runs():
    """All of LITERT_CONFIGS in one model: LiteRT's and jaxlstm's two invokes."""
    rng = np.random.default_rng(20)
    data = export_tflite(integer_model(rng, LITERT_CONFIGS))
    inputs = random_inputs(rng, LITERT_CONFIGS)
    model = load_tflite(data)
    return model, run_twice(model, inputs), _litert(data, inputs)


@pytest.mark.parametrize("k", range(len(LITERT_CONFIGS)), ids=[str(c) for c in LITERT_CONFIGS])
def test_litert_bit_exact(litert_runs, k):
    model, ours, theirs = litert_runs
    _assert_runs_equal(model, ours, theirs, [k])


def test_second_invoke_saw_the_carried_state(litert_runs):
    _, ours, _ = litert_runs
    assert any(not np.array_equal(a, b) for a, b in zip(ours[0][0], ours[1][0]))


def test_the_peephole_n_output_bug_separates_the_layouts():
    """The same weights and rows, batch-major and time-major: LiteRT's peephole term for
    n_output < n_cell pairs flat cells across the whole batch when time-major (the
    kernel's bug), so the results differ; each matches LiteRT (above)."""
    configs = [
        Config(n_cell=5, n_output=2, batch=3, peephole=True, projection=True),
        Config(n_cell=5, n_output=2, batch=3, peephole=True, projection=True, time_major=True),
    ]
    batch_major = integer_model(np.random.default_rng(3), configs[:1])
    time_major = integer_model(np.random.default_rng(3), configs[1:])  # the same draws: the same weights
    x = random_inputs(np.random.default_rng(4), configs[:1])[0]
    y = np.asarray(batch_major(x)[0])
    y_time_major = np.swapaxes(np.asarray(time_major(np.swapaxes(x, 0, 1))[0]), 0, 1)
    assert not np.array_equal(y, y_time_major)


@settings(max_examples=6, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(1, 3),
    st.integers(1, 6),
)
def test_litert_random_configurations(seed, cifg, peephole, projection, layer_norm, time_major, batch, n_cell):
    rng = np.random.default_rng(seed)
    n_output = int(rng.integers(1, n_cell + 1)) if projection else None
    config = Config(
        n_input=int(rng.integers(1, 5)),
        n_cell=n_cell,
        n_output=n_output,
        batch=batch,
        time=int(rng.integers(1, 5)),
        cifg=cifg,
        peephole=peephole,
        projection=projection,
        projection_bias=projection and bool(rng.integers(2)),
        layer_norm=layer_norm,
        time_major=time_major,
        cell_clip=float(rng.choice([0.0, 0.5, 4.0])),
    )
    data = export_tflite(integer_model(rng, [config]))
    inputs = random_inputs(rng, [config])
    model = load_tflite(data)
    _assert_runs_equal(model, run_twice(model, inputs), _litert(data, inputs))


@pytest.fixture(scope="module")
def converted() -> tuple[bytes, LSTMWeights]:
    """tf_keras LSTM(8), last step only, full-integer PTQ with int8 input and output:
    UNIDIRECTIONAL_SEQUENCE_LSTM with 5 intermediates, then STRIDED_SLICE. Also returns
    the layer's float weights."""
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.InputLayer(input_shape=(6, 5), batch_size=2), tf_keras.layers.LSTM(8)])
    calibration = np.random.default_rng(0).normal(size=(16, 2, 6, 5)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([c] for c in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():  # "Statistics for quantized inputs were expected": int8 IO
        warnings.simplefilter("ignore", UserWarning)
        data = converter.convert()
    return data, lstm_weights_from_fused(*model.layers[0].get_weights())


def test_converter_made_model(converted):
    converted, _ = converted
    model = load_tflite(converted)
    assert model.opcodes == ["UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE"]
    assert len(model.operators[0].intermediates) == 5
    x = np.random.default_rng(1).integers(-128, 128, size=(2, 6, 5)).astype(np.int8)
    ours, theirs = run_twice(model, [x]), _litert(converted, [x])
    _assert_runs_equal(model, ours, theirs)
    np.testing.assert_array_equal(model(x)[0], theirs[0][0][0])  # load_tflite(bytes)(x): a fresh state


def test_quantizer_follows_the_converter(converted):
    """quantize_lstm on the Keras layer's float weights, with the ranges the converter's
    activation quantization implies, gives the converter's integers and scales."""
    data, float_weights = converted
    model = load_tflite(data)
    op = model.operators[0]
    tensors = [model.tensors[i] for i in op.inputs]

    def implied_range(t):  # the real values of -128 and 127
        scale = np.float32(t.scale)
        return float(scale * np.float32(-128 - t.zero_point)), float(scale * np.float32(127 - t.zero_point))

    ranges = LSTMRanges(input=implied_range(tensors[0]), output=implied_range(tensors[18]), cell_state=(-0.9, 0.7))
    weights, quantization = quantize_lstm(float_weights, ranges)
    for name, value in vars(weights).items():
        if value is not None:
            theirs = model.constants[op.inputs[OPERATORS[op.opcode].slot(name)]]
            np.testing.assert_array_equal(value.values, theirs.values, err_msg=name)
            assert np.float32(value.scale) == np.float32(theirs.scale), name
    assert quantization.cell_state == tensors[19].scale == 2.0**-15
    hidden = model.tensors[op.intermediates[4]]
    assert quantization.intermediates[4] == QuantParams(hidden.scale, hidden.zero_point)
    assert quantization.intermediates[:4] == (None,) * 4


# ----------------------------------------------------------------------------- TFLite Micro

MICRO_CONFIGS = [
    Config(),
    Config(time_major=True, cell_clip=0.5),
    Config(batch=3, time=5, n_cell=6, n_input=2, weight_scale=1.5),
    Config(batch=1, time=4, n_input=1, n_cell=2),
]


@pytest.mark.parametrize("activations", ["int8", "int16"])
def test_tflite_micro_bit_exact(activations):
    rng = np.random.default_rng(30)
    data = export_tflite(integer_model(rng, MICRO_CONFIGS, activations))
    inputs = random_inputs(rng, MICRO_CONFIGS, activations)
    model = load_tflite(data, runtime="tflite-micro")
    _assert_runs_equal(model, run_twice(model, inputs), _tflite_micro(data, inputs, len(MICRO_CONFIGS)))


def _tie_case():
    """A 16x8 LSTM (n_input 1, n_cell 4, 11 time-major steps, batch 3) from a 250-model
    sweep, in which the output gate's recurrent multiplier sits on an exact tie of the
    int64 rescale's 16-bit reduction, (m + 2^15) >> 16."""
    q8, q16 = np.int8, np.int16

    def weights(values, scale):
        return QuantizedTensor(np.asarray(values, q8), np.float32(scale))

    fields = {
        "input_to_input_weights": weights([[19], [-127], [-26], [19]], 0.01790756732225418),
        "input_to_forget_weights": weights([[-49], [-127], [37], [68]], 0.018423687666654587),
        "input_to_cell_weights": weights([[127], [63], [16], [68]], 0.02048731967806816),
        "input_to_output_weights": weights([[24], [-84], [5], [127]], 0.014554833061993122),
        "recurrent_to_input_weights": weights(
            [[-56, 35, -46, -20], [-8, 122, -20, -34], [38, -28, 9, -127], [15, -3, -74, 73]], 0.027044858783483505
        ),
        "recurrent_to_forget_weights": weights(
            [[-51, -126, -33, -84], [10, 11, -35, 3], [76, 127, -43, 52], [-21, -84, 95, 27]], 0.019658807665109634
        ),
        "recurrent_to_cell_weights": weights(
            [[66, -13, 29, -19], [32, -16, 127, -21], [25, 22, -20, 47], [-7, -24, -2, -42]], 0.028259437531232834
        ),
        "recurrent_to_output_weights": weights(
            [[12, -12, 60, 54], [101, -106, 16, -26], [-51, 4, -67, -127], [-53, -17, 102, -43]], 0.026868687942624092
        ),
        "input_gate_bias": np.asarray([-359171, -303682, -1762518, -2169000], np.int64),
        "forget_gate_bias": np.asarray([127162, 398398, -257611, -1386843], np.int64),
        "cell_gate_bias": np.asarray([1317224, 665502, 1072509, -1588077], np.int64),
        "output_gate_bias": np.asarray([-1942482, -3240928, -630868, -451820], np.int64),
    }
    h = QuantParams(2.9635471946676262e-05)
    quantization = LSTMQuantization(QuantParams(6.419629062293097e-05), h, 2.0**-10, h)
    x = np.asarray(
        [
            [10035, 23639, 13645], [3752, 25689, 4058], [12839, -30784, -2747], [17721, 8747, 11986],
            [17659, 5632, -26306], [20543, 584, -1920], [-6323, -7701, -19431], [15781, 20077, -340],
            [-25801, 6966, -30968], [-22772, -20944, -19599], [1074, -20809, 669],
        ],
        q16,
    )[..., None]  # fmt: skip
    return LSTMWeights(**fields), quantization, x


def test_tflite_micro_16x8_multiplier_tie():
    """TFLite Micro multiplies the input and weight scales in double (kernel_util.cc
    GetQuantizedConvolutionMultipler): here the float product's multiplier would reduce to
    the other 16-bit neighbour and flip 1 LSB of h at step 13 (of 22, over two invokes)."""
    weights, quantization, x = _tie_case()
    b = ModelBuilder()
    y = b.add_lstm(b.add_input("x", x.shape, "int16", quantization.input), weights, LSTMOptions(time_major=True),
                   quantization=quantization)  # fmt: skip
    data = export_tflite(b.build([y]), stateful=True)  # two invokes carry the state
    model = load_tflite(data, runtime="tflite-micro")
    _assert_runs_equal(model, run_twice(model, [x]), _tflite_micro(data, [x], 1))

    plan = prepare(weights, quantization, LSTMOptions(time_major=True), runtime="tflite-micro", activations="int16")
    s_h, s_w = np.float32(quantization.output_state.scale), np.float32(weights.recurrent_to_output_weights.scale)
    double, single = plan.gate("output")[1], quantize_multiplier(float(s_h * s_w) / 2**-12)
    assert (single.multiplier + 2**15) % 2**16 == 0  # the float product's multiplier is a tie
    assert (double.multiplier + 2**15) >> 16 != (single.multiplier + 2**15) >> 16


def test_the_runtimes_differ_on_int8_and_each_mode_matches_its_own():
    """The same int8 file: TFLite Micro saturates each gate matmul separately, rescales the
    cell with multipliers and reads a 256-entry sigmoid table, so it differs from LiteRT."""
    configs = [Config(batch=2, time=6, n_cell=6, weight_scale=1.0)]
    rng = np.random.default_rng(8)
    data = export_tflite(integer_model(rng, configs))
    inputs = random_inputs(rng, configs)
    lite, micro = _litert(data, inputs), _tflite_micro(data, inputs, 1)
    assert any(not np.array_equal(a[0][0], b[0][0]) for a, b in zip(lite, micro))
    for runtime, reference in (("litert", lite), ("tflite-micro", micro)):
        model = load_tflite(data, runtime=runtime)
        _assert_runs_equal(model, run_twice(model, inputs), reference)


# ----------------------------------------------------------------------------- refused at load


@pytest.fixture(scope="module")
def full_featured() -> bytes:
    """An int8 LSTM with peephole, projection and layer norm (reads all its intermediates)."""
    config = Config(peephole=True, projection=True, projection_bias=True, layer_norm=True)
    return export_tflite(integer_model(np.random.default_rng(40), [config]))


def _tensor(model, suffix: str):
    return next(t for t in model.subgraphs[0].tensors if t.name.decode().endswith(suffix))


def _set_scale(suffix: str, scale: float):
    def edit(model):
        _tensor(model, suffix).quantization.scale = [scale]

    return edit


def _unquantize(suffix: str):
    def edit(model):
        _tensor(model, suffix).quantization = None

    return edit


def _drop_intermediates(model):
    model.subgraphs[0].operators[0].intermediates = []


def _per_channel(model):
    q = _tensor(model, "input_to_forget_weights").quantization
    q.scale, q.zeroPoint, q.quantizedDimension = [q.scale[0]] * 4, [0] * 4, 0


def _int16_output_state(model):
    _tensor(model, "output_state").type = schema.TensorType.INT16


def _weight_zero_point(model):
    _tensor(model, "recurrent_to_cell_weights").quantization.zeroPoint = [3]


INVALID = {
    "cell_scale_not_a_power_of_two": (_set_scale("cell_state", 1e-4), ValueError, "not a power of two"),
    "cell_scale_too_coarse": (_set_scale("cell_state", 2.0**-8), ValueError, r"2\^-8; LiteRT's kernel needs 2\^-15"),
    "cell_scale_too_fine": (_set_scale("cell_state", 2.0**-16), ValueError, r"2\^-16"),
    "no_intermediates": (_drop_intermediates, ValueError, "needs 5 intermediate tensors"),
    "hidden_intermediate_unquantized": (_unquantize("intermediate_4"), ValueError, "intermediate 4"),
    "layer_norm_intermediate_unquantized": (_unquantize("intermediate_2"), ValueError, r"intermediates 0-3.*\[2\]"),
    "per_channel_weights": (_per_channel, NotImplementedError, "per-channel scales"),
    "output_state_int16_for_int8_input": (_int16_output_state, ValueError, "output_state is int16"),
    "weight_zero_point": (_weight_zero_point, ValueError, "ignore weight zero points"),
}


@pytest.mark.parametrize("edit,error,message", INVALID.values(), ids=list(INVALID))
def test_invalid_integer_lstm_is_refused(full_featured, edit, error, message):
    with pytest.raises(error, match=message):
        load_tflite(edit_flatbuffer(full_featured, edit))


def test_peephole_with_n_output_above_n_cell_is_refused():
    data = export_tflite(
        integer_model(np.random.default_rng(0), [Config(n_cell=3, n_output=5, peephole=True, projection=True)])
    )
    with pytest.raises(ValueError, match="n_output=5 > n_cell=3"):
        load_tflite(data)


def test_each_runtime_refuses_what_it_cannot_run():
    rng = np.random.default_rng(0)
    int16 = export_tflite(integer_model(rng, [Config()], "int16"))
    with pytest.raises(NotImplementedError, match="LiteRT has no LSTM kernel for int16"):
        load_tflite(int16)
    peephole = export_tflite(integer_model(rng, [Config(peephole=True)]))
    with pytest.raises(NotImplementedError, match=r"supports none of \['peephole'\]"):
        load_tflite(peephole, runtime="tflite-micro")
    single_step = export_tflite(integer_model(rng, [Config(single_step=True)]))
    with pytest.raises(NotImplementedError, match="no kernel for the single-step LSTM op"):
        load_tflite(single_step, runtime="tflite-micro")

    def twelve_intermediates(model):  # the experimental 8x8_8 kernel
        op = model.subgraphs[0].operators[0]
        op.intermediates = list(op.intermediates) * 2 + list(op.intermediates)[:2]

    with pytest.raises(NotImplementedError, match="experimental 8x8_8 kernel"):
        load_tflite(edit_flatbuffer(single_step, twelve_intermediates))
    with pytest.raises(ValueError, match="runtime must be one of"):
        load_tflite(single_step, runtime="tflite")


def test_operators_without_integer_kernels_are_refused_on_integer_activations():
    b = ModelBuilder()
    config = Config()
    weights, quantization = quantize_lstm(
        float_weights(np.random.default_rng(0), config), calibration_ranges(np.random.default_rng(1))
    )
    x = b.add_input("x", config.input_shape, "int8", quantization.input)
    y = b.add_lstm(x, weights, LSTMOptions(), quantization=quantization)
    z = b.add_intermediate("negated", config.input_shape[:2] + (4,), "int8", quantization.output)
    b.add_operator("NEG", [y], [z])
    with pytest.raises(NotImplementedError, match="NEG on quantized integer activations"):
        load_tflite(export_tflite(b.build([z])))


# ----------------------------------------------------------------------------- export


def _op_versions(data: bytes) -> dict[str, int]:
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return {names[c.builtinCode]: c.version for c in model.operatorCodes}


def test_export_round_trip_and_op_versions():
    """int8 LSTM and UNIDIRECTIONAL_SEQUENCE_LSTM are version 1 (as the converter writes
    them), the int16 one version 5 (op_version.cc); intermediates are [0]-shaped tensors
    without buffers; load -> export gives the same bytes."""
    rng = np.random.default_rng(0)
    int8 = export_tflite(integer_model(rng, [Config(), Config(single_step=True)]))
    assert _op_versions(int8) == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 1, "LSTM": 1}
    assert _op_versions(export_tflite(integer_model(rng, [Config()], "int16"))) == {"UNIDIRECTIONAL_SEQUENCE_LSTM": 5}
    assert export_tflite(load_tflite(int8)) == int8
    model = schema.ModelT.InitFromPackedBuf(int8, 0)
    for index in model.subgraphs[0].operators[0].intermediates:
        t = model.subgraphs[0].tensors[index]
        assert list(t.shape) == [0] and model.buffers[t.buffer].data is None


def test_stateless_export_starts_every_invoke_from_the_zero_point():
    """stateful=False: each state is the QUANTIZE of a float FILL of 0 (its zero point) at
    every invoke; `load_tflite` reads the resets back as predict semantics (and drops them)."""
    configs = [Config(cifg=True, projection=True)]
    rng = np.random.default_rng(0)
    model = integer_model(rng, configs)
    inputs = random_inputs(rng, configs)
    data = export_tflite(model, stateful=False)
    first, second = (run[0][0] for run in _litert(data, inputs))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, model(*inputs)[0])
    loaded = load_tflite(data)
    assert not loaded.stateful and loaded.opcodes == ["UNIDIRECTIONAL_SEQUENCE_LSTM"]
    np.testing.assert_array_equal(loaded(*inputs)[0], first)
    again = export_tflite(loaded)  # predict again
    np.testing.assert_array_equal(_litert(again, inputs)[1][0][0], first)


def test_fresh_state_is_the_zero_point():
    model = integer_model(np.random.default_rng(0), [Config()])
    state = model.init_state()
    h = next(t for t in model.tensors if t.name.endswith("output_state"))
    assert h.zero_point != 0 and np.all(state[h.name] == h.zero_point)
    assert np.all(state["lstm0/cell_state"] == 0)


def test_integer_kernels_are_not_differentiable():
    configs = [Config()]
    rng = np.random.default_rng(0)
    model = integer_model(rng, configs)
    (x,) = random_inputs(rng, configs)

    def loss(params):
        (y,), _ = model.apply(params, model.init_state(), x)
        return y.astype(np.float32).sum()

    with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs"):
        jax.grad(loss)(model.params)


def _mutate_quantization(model, rng) -> None:
    """Sets one quantization field, type or intermediate of the unpacked model at random."""
    sg = model.subgraphs[0]
    tensor = sg.tensors[int(rng.integers(len(sg.tensors)))]
    op = sg.operators[0]
    kind = int(rng.integers(5))
    if kind == 0 and tensor.quantization is not None:
        tensor.quantization.scale = [float(rng.choice([0.0, -1.0, np.inf, np.nan, 1e-30, 1e30, 2.0**-20, 0.37]))]
    elif kind == 1 and tensor.quantization is not None:
        tensor.quantization.zeroPoint = [int(rng.integers(-70000, 70000))] * int(rng.integers(1, 3))
    elif kind == 2:
        tensor.type = int(rng.choice([schema.TensorType.INT8, schema.TensorType.INT16, schema.TensorType.INT32]))
    elif kind == 3:
        op.intermediates = [int(rng.integers(-1, len(sg.tensors) + 1)) for _ in range(int(rng.integers(0, 7)))]
    else:
        tensor.quantization = None


def test_fuzz_quantization_fields(full_featured):
    """Seeded random scales, zero points, types and intermediates: loading succeeds or
    raises ValueError / NotImplementedError, never anything else."""
    rng = np.random.default_rng(7)
    outcomes = {"loaded": 0, "rejected": 0}
    for _ in range(150):
        try:
            blob = edit_flatbuffer(full_featured, lambda model: _mutate_quantization(model, rng))
        except (ValueError, TypeError, OverflowError):  # the value does not fit the field
            continue
        try:
            load_tflite(blob)
            outcomes["loaded"] += 1
        except (ValueError, NotImplementedError):
            outcomes["rejected"] += 1
    assert min(outcomes.values()) > 0, outcomes
