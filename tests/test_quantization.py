"""`quantize_lstm`: the converter's conventions (checked against the converter itself in
tests/tflite/test_integer_lstm.py) and its refusals; `calibrate` against NumPy's reference
loop; `jaxlstm.quantize`: the conventions of whole models and what it refuses (the runtimes
run its models in tests/tflite/test_quantize.py)."""

from __future__ import annotations

import numpy as np
import pytest

import jaxlstm
from jaxlstm import export_tflite, load_tflite
from jaxlstm.model import Model, ModelBuilder, Ref
from jaxlstm.model.rewrite import split_bidirectional_lstm
from jaxlstm.ops import GRUOptions, GRUWeights, LSTMOptions, RNNOptions, RNNWeights, quantize_symmetric
from jaxlstm.quantization import LSTMRanges, calibrate, quantize_lstm
from jaxlstm.reference import np_lstm
from tests.tflite.integer_models import Config, calibration_ranges, float_weights


@pytest.mark.parametrize(
    "extent,scale",
    [(0.5, 2.0**-15), (1.0, 2.0**-15), (1.5, 2.0**-14), (20.0, 2.0**-10), (64.0, 2.0**-9), (500.0, 2.0**-9)],
)
def test_cell_scale_is_the_smallest_power_of_two_covering_the_range(extent, scale):
    """2^k / 32768 for the smallest 2^k >= max|c|; above 64 LiteRT's limit 2^-9 applies."""
    w = float_weights(np.random.default_rng(0), Config())
    _, q = quantize_lstm(w, LSTMRanges(input=(-1, 1), output=(-1, 1), cell_state=(-extent / 2, extent)))
    assert q.cell_state == scale


def test_biases_and_intermediates_by_configuration():
    rng = np.random.default_rng(0)
    ranges = calibration_ranges(rng)
    plain = float_weights(rng, Config())
    weights, q = quantize_lstm(plain, ranges)
    bias = weights.forget_gate_bias  # int32 at s_x * s_w
    assert bias.values.dtype == np.int32
    assert bias.scale == np.float32(q.input.scale) * np.float32(weights.input_to_forget_weights.scale)
    np.testing.assert_array_equal(
        weights.input_to_forget_weights.values, quantize_symmetric(plain.input_to_forget_weights).values
    )
    assert q.intermediates == (None, None, None, None, q.output_state)  # no projection: h's quantization

    layer_norm = float_weights(rng, Config(cifg=True, layer_norm=True, projection=True))
    weights, q = quantize_lstm(layer_norm, ranges)
    assert weights.forget_gate_bias.scale == np.float32(weights.forget_layer_norm_coefficients.scale) * np.float32(
        2.0**-10
    )
    assert weights.forget_layer_norm_coefficients.values.dtype == np.int16
    assert all(p is not None and p.zero_point == 0 for p in q.intermediates[:4])  # CIFG's input gate: a placeholder
    assert q.intermediates[4] != q.output_state  # the projection's input has its own range

    int16_weights, q16 = quantize_lstm(plain, ranges, activations="int16")
    assert int16_weights.forget_gate_bias.values.dtype == np.int64
    assert q16.input.zero_point == 0 and q16.intermediates == ()


def test_refusals():
    rng = np.random.default_rng(0)
    ranges = LSTMRanges(input=(-1, 1), output=(-1, 1), cell_state=(-1, 1))
    with pytest.raises(NotImplementedError, match=r"supports none of \['peephole'\]"):
        quantize_lstm(float_weights(rng, Config(peephole=True)), ranges, activations="int16")
    with pytest.raises(ValueError, match=r"needs ranges\.hidden"):
        quantize_lstm(float_weights(rng, Config(projection=True)), ranges)
    with pytest.raises(ValueError, match=r"needs ranges\.gates"):
        quantize_lstm(float_weights(rng, Config(layer_norm=True)), ranges)
    with pytest.raises(ValueError, match="activations must be one of"):
        quantize_lstm(float_weights(rng, Config()), ranges, activations="int4")


# ----------------------------------------------------------------------------- calibrate, quantize


def _classifier(rng: np.random.Generator, config: Config) -> Model:
    """LSTM (the config's features) -> last step -> FULLY_CONNECTED (4 classes) -> SOFTMAX."""
    b = ModelBuilder()
    x = b.add_input("input", (-1, 6, config.n_input))
    h = b.add_lstm(x, float_weights(rng, config), LSTMOptions(cell_clip=config.cell_clip), name="lstm")
    h = b.add_last_time_step(h)
    logits = b.add_fully_connected(h, rng.normal(size=(4, config.outputs)).astype(np.float32), _vector(rng, 4))
    return b.build([b.add_softmax(logits)], ["probabilities"])


def _vector(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.normal(size=n).astype(np.float32)


FEATURES = Config(n_input=3, n_cell=5, peephole=True, projection=True, projection_bias=True, layer_norm=True)


def test_calibration_records_the_ranges_of_every_tensor_and_inside_the_lstm():
    """Min and max over all batches (300 rows: batches of 256 and 44) of the graph's tensors,
    and of the cell state over every step, against NumPy's float64 reference loop."""
    rng = np.random.default_rng(0)
    model = _classifier(rng, FEATURES)
    data = rng.normal(size=(300, 6, 3)).astype(np.float32)
    calibration = calibrate(model, data, progress=False)
    assert calibration.batches == 2
    names = {model.tensors[i].name: r for i, r in calibration.tensors.items()}
    np.testing.assert_allclose(names["input"], (data.min(), data.max()))
    probabilities = np.asarray(model(data)[0])
    np.testing.assert_allclose(names["probabilities"], (probabilities.min(), probabilities.max()), rtol=1e-6)

    weights = float_weights(np.random.default_rng(0), FEATURES)  # the same draws as the model's
    cells, outputs = [], []
    for row in data:
        h, c = np.zeros(3), np.zeros(5)
        for x_t in row:
            h, c = np_lstm.lstm_step(x_t, None, h, c, weights)
            cells.append(c)
            outputs.append(h)
    (ranges,) = calibration.lstms.values()
    # float32 (jaxlstm) against float64 (the reference): a few float32 ulps over 6 steps
    np.testing.assert_allclose(ranges.cell_state, (np.min(cells), np.max(cells)), rtol=1e-5)
    np.testing.assert_allclose(ranges.output, (np.min(outputs), np.max(outputs)), rtol=1e-5)
    assert all(low < 0 < high for low, high in ranges.gates)


def test_quantize_follows_the_converter_conventions():
    rng = np.random.default_rng(1)
    model = _classifier(rng, Config(n_input=3, n_cell=5))
    data = rng.normal(size=(64, 6, 3)).astype(np.float32)
    integer = jaxlstm.quantize(model, data, progress=False)
    assert integer.opcodes == ["QUANTIZE", "UNIDIRECTIONAL_SEQUENCE_LSTM", "STRIDED_SLICE", "FULLY_CONNECTED",
                               "SOFTMAX", "DEQUANTIZE"]  # fmt: skip
    assert integer.runtime == "litert" and integer.signature_names == model.signature_names
    tensor = {t.name: t for t in integer.tensors}
    assert tensor["input"].dtype == "float32" and tensor["input/int8"].dtype == "int8"
    assert tensor["probabilities/int8"].scale == 1 / 256 and tensor["probabilities/int8"].zero_point == -128
    # The LSTM's output, its output state and the slice of its last step share one quantization.
    shared = {(tensor[n].scale, tensor[n].zero_point) for n in ("lstm/output", "lstm/output_state", "last_step/output")}
    assert len(shared) == 1
    assert tensor["lstm/cell_state"].dtype == "int16" and np.log2(tensor["lstm/cell_state"].scale) % 1 == 0
    # FULLY_CONNECTED: int8 weights per output channel, int32 bias at s_x * s_w per channel.
    weights, bias = integer.constant("dense/weights"), integer.constant("dense/bias")
    float_weights_ = model.constant("dense/weights")
    np.testing.assert_allclose(np.ravel(weights.scale), np.abs(float_weights_).max(axis=1) / 127, rtol=1e-7)
    assert bias.values.dtype == np.int32
    s_x = np.float32(tensor["last_step/output"].scale)
    np.testing.assert_array_equal(bias.scale, s_x * np.ravel(weights.scale).astype(np.float32))
    np.testing.assert_allclose(bias.values * bias.scale, model.constant("dense/bias"), atol=np.max(bias.scale))

    int16 = jaxlstm.quantize(model, data, activations="int16", io="integer", progress=False)
    assert int16.runtime == "tflite-micro" and int16.opcodes == model.opcodes
    tensor = {t.name: t for t in int16.tensors}
    assert tensor["input"].dtype == "int16" and tensor["input"].zero_point == 0
    assert (tensor["probabilities"].scale, tensor["probabilities"].zero_point) == (1 / 32768, 0)
    assert int16.constant("dense/bias").values.dtype == np.int64
    assert int16.operators[0].intermediates == ()  # TFLite Micro's kernel reads none


def test_bidirectional_lstm_becomes_two_unidirectional_ops():
    """The split computes the same floats; the CONCATENATION joins tensors of one quantization."""
    rng = np.random.default_rng(2)
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, 3))
    (y,) = b.add_bidirectional_lstm(x, *(float_weights(rng, Config(n_input=3)) for _ in "fb"), LSTMOptions())
    model = b.build([y])
    split, n = split_bidirectional_lstm(model)
    data = rng.normal(size=(5, 4, 3)).astype(np.float32)
    assert n == 1 and split.opcodes == ["UNIDIRECTIONAL_SEQUENCE_LSTM", "REVERSE_V2", "UNIDIRECTIONAL_SEQUENCE_LSTM",
                                        "REVERSE_V2", "CONCATENATION"]  # fmt: skip
    np.testing.assert_array_equal(split(data)[0], model(data)[0])

    integer = jaxlstm.quantize(model, data, io="integer", progress=False)
    concat = integer.operators[-1]
    joined = {(integer.tensors[i].scale, integer.tensors[i].zero_point) for i in (*concat.inputs, *concat.outputs)}
    assert len(joined) == 1


def test_refusals_name_the_operator():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(8, 6, 3)).astype(np.float32)
    model = _classifier(rng, Config(n_input=3))

    for opcode, add in (("GRU", _add_gru), ("UNIDIRECTIONAL_SEQUENCE_RNN", _add_rnn)):
        b = ModelBuilder()
        y = add(b, b.add_input("input", (-1, 6, 3)), rng)
        with pytest.raises(NotImplementedError, match=rf"operator 0 \({opcode}\) cannot be quantized to integers"):
            jaxlstm.quantize(b.build([y]), data, progress=False)

    hybrid = load_tflite(export_tflite(model, quantize="dynamic", quantize_min_elements=1))
    with pytest.raises(ValueError, match=r"operator 0 \(UNIDIRECTIONAL_SEQUENCE_LSTM\) has int8 \(hybrid\) weights"):
        jaxlstm.quantize(hybrid, data, progress=False)
    with pytest.raises(
        NotImplementedError,
        match=r"operator 0 \(UNIDIRECTIONAL_SEQUENCE_LSTM 'lstm/output'\): .*supports none of \['peephole'\]",
    ):
        jaxlstm.quantize(_classifier(rng, Config(n_input=3, peephole=True)), data, activations="int16", progress=False)
    with pytest.raises(ValueError, match=r"input 'input' has shape \[-1, 6, 3\].*5 features, expected 3"):
        jaxlstm.quantize(model, np.zeros((8, 6, 5), np.float32), progress=False)
    with pytest.raises(ValueError, match="holds no batches"):
        jaxlstm.quantize(model, [], progress=False)
    with pytest.raises(ValueError, match="activations must be one of"):
        jaxlstm.quantize(model, data, activations="int4")
    with pytest.raises(ValueError, match="io must be one of"):
        jaxlstm.quantize(model, data, io="uint8")


def _add_gru(b: ModelBuilder, x: Ref, rng: np.random.Generator) -> Ref:
    shapes = {"input_to": (4, 3), "recurrent_to": (4, 4)}
    weights = {
        f"{kind}_{gate}_weights": rng.normal(size=shape).astype(np.float32)
        for kind, shape in shapes.items()
        for gate in ("update", "reset", "candidate")
    }
    biases = {f"{gate}_gate_bias": _vector(rng, 4) for gate in ("update", "reset", "candidate")}
    return b.add_gru(x, GRUWeights(**weights, **biases), GRUOptions(reset_after=False))


def _add_rnn(b: ModelBuilder, x: Ref, rng: np.random.Generator) -> Ref:
    weights = RNNWeights(*(rng.normal(size=shape).astype(np.float32) for shape in ((4, 3), (4, 4), (4,))))
    return b.add_rnn(x, weights, RNNOptions())


def test_calibration_reads_each_layout_and_the_single_step_op():
    """The same weights and rows batch-major, time-major, and (one step) as the LSTM op: the
    same ranges inside the LSTM."""
    weights = float_weights(np.random.default_rng(4), FEATURES)
    data = np.random.default_rng(5).normal(size=(16, 1, 3)).astype(np.float32)
    ranges = []
    for layout in ("batch_major", "time_major", "single_step"):
        b = ModelBuilder()
        if layout == "single_step":
            x = b.add_input("input", (-1, 3))
            y = b.add_lstm_cell(x, weights, LSTMOptions(), name="lstm")
            batch = data[:, 0]
        else:
            time_major = layout == "time_major"
            x = b.add_input("input", (1, -1, 3) if time_major else (-1, 1, 3))
            y = b.add_lstm(x, weights, LSTMOptions(time_major=time_major), name="lstm")
            batch = np.swapaxes(data, 0, 1) if time_major else data
        (lstm,) = calibrate(b.build([y]), [batch], progress=False).lstms.values()
        ranges.append(lstm)
    for other in ranges[1:]:
        np.testing.assert_allclose(np.array([other.cell_state, other.hidden, *other.gates]),
                                   np.array([ranges[0].cell_state, ranges[0].hidden, *ranges[0].gates]), rtol=1e-6)  # fmt: skip
