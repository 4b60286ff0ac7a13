"""Op parity against the real LiteRT interpreter, for every fused recurrent op and feature.

Each case builds a one-operator model with `ModelBuilder`, exports it streaming
(``stateful=True``), invokes it twice in LiteRT without resetting (so the second run also
checks the carried state), and compares
with the `jaxlstm.ops` function applied twice with the state threaded through, and with
the exported file loaded back (`load_tflite`) and applied twice. Hybrid
cases quantize the weights here with `quantize_symmetric` (TFLite's dynamic-range rule),
independently of the exporter.

Hybrid results match to a few float32 ulps; in rare cases (about 2 in 400 random
configurations measured) a one-ulp difference in a recurrent activation (Eigen's vs XLA's
tanh) moves a re-quantized value across a rounding boundary and the error jumps to ~1e-3.
These cases use fixed seeds.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import jax
import numpy as np
import pytest

from jaxlstm import ops
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import LSTMOptions, LSTMWeights, RNNOptions, RNNWeights, quantize_symmetric
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite

FLOAT_ATOL = 1e-5  # TFLite's float kernel tests use 1e-5: its GEMM sums in another order
HYBRID_ATOL = 1e-5  # int8 dots are exact; float scaling and activations differ by ulps
ERRORS: dict[str, float] = defaultdict(float)  # family -> largest error seen


@pytest.fixture(scope="module", autouse=True)
def report_errors(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None or not ERRORS:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("\nlargest |jaxlstm - LiteRT| per family:")
        for family, err in sorted(ERRORS.items()):
            reporter.write_line(f"  {family:45s} {err:.3g}")


def _random(rng, *shape, scale=0.5):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def _quantized(weights, skip=lambda name, value: False):
    """Matrices, peepholes and projection to int8 (never biases or layer norm)."""
    fields = {}
    for f in dataclasses.fields(weights):
        v = getattr(weights, f.name)
        if v is not None and not f.name.endswith(("bias", "coefficients")) and not skip(f.name, v):
            v = quantize_symmetric(v)
        fields[f.name] = v
    return type(weights)(**fields)


def _is_diagonal(name, value):
    return name.startswith("recurrent") and np.ndim(value) == 1  # read as float by the kernel


def _apply_twice(model, inputs):
    state = model.init_state()
    runs = []
    for _ in range(2):
        outputs, state = model.apply(model.params, state, *inputs)
        runs.append(outputs)
    return runs


def _compare(family, model, inputs, reference, hybrid):
    """Runs `model` twice in LiteRT, `reference()` (two lists of outputs) and the re-imported
    file twice through `Model.apply`; asserts that both match LiteRT."""
    data = export_tflite(model, stateful=True)
    lite = run_litert(data, inputs, invocations=2, reset=False)
    with jax.disable_jit():  # eager is far cheaper than compiling each small case
        ours = reference()
        imported = _apply_twice(load_tflite(data), inputs)
    err = max(
        float(np.max(np.abs(np.asarray(a) - b)))
        for runs in (ours, imported)
        for run_ours, run_lite in zip(runs, lite, strict=True)
        for a, b in zip(run_ours, run_lite, strict=True)
    )
    key = f"{family} {hybrid or 'float'}"
    ERRORS[key] = max(ERRORS[key], err)
    assert err <= (HYBRID_ATOL if hybrid else FLOAT_ATOL), f"{key}: max error {err:.3g}"


# ----------------------------------------------------------------------------- LSTM family


@dataclasses.dataclass(frozen=True)
class LSTMCase:
    name: str
    n_output: int = 4
    cifg: bool = False
    peephole: bool = False
    projection: bool = False
    projection_bias: bool = False
    layer_norm: bool = False
    diagonal: bool = False
    cell_clip: float = 0.0
    proj_clip: float = 0.0
    time_major: bool = False
    activation: str = "TANH"

    def __str__(self):
        return self.name


N_INPUT, N_CELL, BATCH, TIME = 3, 4, 2, 4

LSTM_CASES = [
    LSTMCase("plain"),
    LSTMCase("cifg", cifg=True),
    LSTMCase("peephole", peephole=True),
    LSTMCase("projection", n_output=3, projection=True),
    LSTMCase("projection_bias", n_output=3, projection=True, projection_bias=True),
    LSTMCase("layer_norm", layer_norm=True),
    LSTMCase(
        "cifg_peephole_projection_layer_norm",
        n_output=3,
        cifg=True,
        peephole=True,
        projection=True,
        projection_bias=True,
        layer_norm=True,
    ),
    LSTMCase("cell_clip", cell_clip=0.5),
    LSTMCase("proj_clip", n_output=3, projection=True, proj_clip=0.3),
    LSTMCase("time_major", time_major=True),
    LSTMCase("diagonal", diagonal=True),
]
ACTIVATION_CASES = [LSTMCase(f"activation_{a.lower()}", activation=a) for a in ("RELU", "RELU6", "RELU_N1_TO_1")]


def lstm_weights(rng, case: LSTMCase, n_input=N_INPUT, n_aux=None) -> LSTMWeights:
    gates = ("forget", "cell", "output") if case.cifg else ops.GATES
    f = {}
    for g in gates:
        f[f"input_to_{g}_weights"] = _random(rng, N_CELL, n_input)
        f[f"recurrent_to_{g}_weights"] = _random(rng, *((N_CELL,) if case.diagonal else (N_CELL, case.n_output)))
        f[f"{g}_gate_bias"] = _random(rng, N_CELL)
        if case.layer_norm:
            f[f"{g}_layer_norm_coefficients"] = _random(rng, N_CELL) + 1
        if case.peephole and g != "cell":
            f[f"cell_to_{g}_weights"] = _random(rng, N_CELL)
        if n_aux:
            f[f"aux_input_to_{g}_weights"] = _random(rng, N_CELL, n_aux)
    if case.projection:
        f["projection_weights"] = _random(rng, case.n_output, N_CELL)
    if case.projection_bias:
        f["projection_bias"] = _random(rng, case.n_output)
    return LSTMWeights(**f)


def lstm_options(case: LSTMCase, hybrid, time_major=None) -> LSTMOptions:
    return LSTMOptions(
        fused_activation_function=case.activation,
        cell_clip=case.cell_clip,
        proj_clip=case.proj_clip,
        time_major=case.time_major if time_major is None else time_major,
        asymmetric_quantize_inputs=hybrid == "asymmetric",
    )


def _maybe_quantized(weights, hybrid):
    return _quantized(weights, _is_diagonal) if hybrid else weights


HYBRID = ["symmetric", "asymmetric"]


def _with_hybrid(cases, hybrid_too=lambda case: True):
    """(case, hybrid) pairs: every case in float, the selected ones also hybrid."""
    return [(c, h) for c in cases for h in [None] + (HYBRID if hybrid_too(c) else [])]


def _ids(pairs):
    return [f"{c}-{h or 'float'}" for c, h in pairs]


USEQ_LSTM = _with_hybrid(LSTM_CASES) + _with_hybrid(ACTIVATION_CASES, lambda c: False)


@pytest.mark.parametrize(("case", "hybrid"), USEQ_LSTM, ids=_ids(USEQ_LSTM))
def test_unidirectional_sequence_lstm(case, hybrid):
    rng = np.random.default_rng(0)
    w = _maybe_quantized(lstm_weights(rng, case), hybrid)
    options = lstm_options(case, hybrid)
    shape = (TIME, BATCH, N_INPUT) if case.time_major else (BATCH, TIME, N_INPUT)
    x = _random(rng, *shape, scale=3.0)  # large enough that |c| exceeds cell_clip
    b = ModelBuilder()
    y = b.add_lstm(b.add_input("input", shape), w, options)
    model = b.build([y])

    def reference():
        y1, s1 = ops.unidirectional_sequence_lstm(x, w, None, options=options)
        y2, _ = ops.unidirectional_sequence_lstm(x, w, s1, options=options)
        return [[y1], [y2]]

    with jax.disable_jit():  # the clips must matter for this input
        y, s = ops.unidirectional_sequence_lstm(x, w, None, options=options.replace(cell_clip=0.0, proj_clip=0.0))
    assert np.max(np.abs(s.cell_state)) > case.cell_clip and np.max(np.abs(y)) > case.proj_clip
    _compare("UNIDIRECTIONAL_SEQUENCE_LSTM", model, [x], reference, hybrid)


@pytest.mark.parametrize("hybrid", [None, *HYBRID])
@pytest.mark.parametrize("case", [LSTMCase("plain", cell_clip=0.7), LSTM_CASES[6]], ids=str)
def test_lstm_full_kernel(case, hybrid):
    rng = np.random.default_rng(1)
    w = _maybe_quantized(lstm_weights(rng, case), hybrid)
    options = lstm_options(case, hybrid)
    x = _random(rng, BATCH, N_INPUT, scale=3.0)
    b = ModelBuilder()
    model = b.build([b.add_lstm_cell(b.add_input("input", x.shape), w, options)])

    def reference():
        y1, s1 = ops.lstm(x, w, None, options=options)
        y2, _ = ops.lstm(x, w, s1, options=options)
        return [[y1], [y2]]

    _compare("LSTM", model, [x], reference, hybrid)


def test_lstm_basic_kernel():
    rng = np.random.default_rng(2)
    depth = 4
    weights, bias = _random(rng, 4 * depth, N_INPUT + depth), _random(rng, 4 * depth)
    x = _random(rng, BATCH, N_INPUT, scale=3.0)
    b = ModelBuilder()
    model = b.build([b.add_basic_lstm_cell(b.add_input("input", x.shape), weights, bias)])

    def reference():
        zeros = np.zeros((BATCH, depth), np.float32)
        h1, c1 = ops.basic_lstm_cell(x, zeros, weights, bias, zeros)
        h2, _ = ops.basic_lstm_cell(x, h1, weights, bias, c1)
        return [[h1], [h2]]

    _compare("LSTM (BASIC kernel)", model, [x], reference, None)


@dataclasses.dataclass(frozen=True)
class BidiCase:
    name: str
    time_major: bool = True
    merge_outputs: bool = False
    lstm: LSTMCase = LSTMCase("plain", cell_clip=0.8)
    n_aux: int | None = None  # aux input width
    aux_weights: bool = False  # cross-linking (else: the backward direction reads aux)
    hybrid_too: bool = True

    def __str__(self):
        return self.name


BIDI_LSTM_CASES = [
    BidiCase("separate_time_major"),
    BidiCase("separate_batch_major", time_major=False),
    BidiCase("merge_time_major", merge_outputs=True),
    # Exported as merge_outputs=False + CONCATENATION: LiteRT mis-indexes this for batch > 1.
    BidiCase("merge_batch_major", time_major=False, merge_outputs=True, hybrid_too=False),
    BidiCase(
        "peephole_projection",
        lstm=LSTMCase("pp", n_output=3, peephole=True, projection=True, projection_bias=True),
        hybrid_too=False,
    ),
    BidiCase("cifg", lstm=LSTMCase("cifg", cifg=True), hybrid_too=False),
    BidiCase("aux_cross_linked", n_aux=2, aux_weights=True),
    BidiCase("aux_cross_linked_batch_major", time_major=False, n_aux=2, aux_weights=True, hybrid_too=False),
    BidiCase("aux_without_weights", n_aux=N_INPUT),
    BidiCase("aux_without_weights_batch_major", time_major=False, n_aux=N_INPUT, hybrid_too=False),
]


def _bidi_inputs(rng, case: BidiCase, scale: float):
    shape = (TIME, BATCH, N_INPUT) if case.time_major else (BATCH, TIME, N_INPUT)
    x = _random(rng, *shape, scale=scale)
    aux = None if case.n_aux is None else _random(rng, *shape[:2], case.n_aux, scale=scale)
    return shape, x, aux


BIDI_LSTM = _with_hybrid(BIDI_LSTM_CASES, lambda c: c.hybrid_too)


@pytest.mark.parametrize(("case", "hybrid"), BIDI_LSTM, ids=_ids(BIDI_LSTM))
def test_bidirectional_sequence_lstm(case, hybrid):
    rng = np.random.default_rng(3)
    n_aux = case.n_aux if case.aux_weights else None
    fw, bw = (_maybe_quantized(lstm_weights(rng, case.lstm, n_aux=n_aux), hybrid) for _ in range(2))
    options = lstm_options(case.lstm, hybrid, time_major=case.time_major)
    shape, x, aux = _bidi_inputs(rng, case, 3.0)
    b = ModelBuilder()
    x_ref = b.add_input("input", shape)
    aux_ref = None if aux is None else b.add_input("aux_input", aux.shape)
    outs = b.add_bidirectional_lstm(x_ref, fw, bw, options, merge_outputs=case.merge_outputs, aux_input=aux_ref)
    model = b.build(outs)

    def reference():
        kw = dict(options=options, merge_outputs=case.merge_outputs)
        y1, (f1, b1) = ops.bidirectional_sequence_lstm(x, fw, bw, None, None, aux, **kw)
        y2, _ = ops.bidirectional_sequence_lstm(x, fw, bw, f1, b1, aux, **kw)
        return [list(y1), list(y2)]

    _compare("BIDIRECTIONAL_SEQUENCE_LSTM", model, [x] if aux is None else [x, aux], reference, hybrid)


# ----------------------------------------------------------------------------- RNN family


def rnn_weights(rng, n_units=4, n_input=N_INPUT, n_aux=None) -> RNNWeights:
    return RNNWeights(
        _random(rng, n_units, n_input, scale=0.4),
        _random(rng, n_units, n_units, scale=0.4),
        _random(rng, n_units),
        None if n_aux is None else _random(rng, n_units, n_aux, scale=0.4),
    )


def rnn_options(hybrid, time_major=False, activation="RELU") -> RNNOptions:
    return RNNOptions(
        fused_activation_function=activation, time_major=time_major, asymmetric_quantize_inputs=hybrid == "asymmetric"
    )


@pytest.mark.parametrize("hybrid", [None, *HYBRID])
@pytest.mark.parametrize("layout", ["step", "batch_major", "time_major"])
def test_rnn_and_unidirectional_sequence_rnn(layout, hybrid):
    rng = np.random.default_rng(4)
    w = rnn_weights(rng)
    w = _quantized(w) if hybrid else w
    options = rnn_options(hybrid, time_major=layout == "time_major")
    shape = {"step": (BATCH, N_INPUT), "batch_major": (BATCH, TIME, N_INPUT), "time_major": (TIME, BATCH, N_INPUT)}[
        layout
    ]
    x = _random(rng, *shape, scale=2.0)
    b = ModelBuilder()
    x_ref = b.add_input("input", shape)
    model = b.build([b.add_rnn_cell(x_ref, w, options) if layout == "step" else b.add_rnn(x_ref, w, options)])
    fn = ops.rnn if layout == "step" else ops.unidirectional_sequence_rnn

    def reference():
        y1, h1 = fn(x, w, None, options=options)
        y2, _ = fn(x, w, h1, options=options)
        return [[y1], [y2]]

    _compare("RNN" if layout == "step" else "UNIDIRECTIONAL_SEQUENCE_RNN", model, [x], reference, hybrid)


BIDI_RNN_CASES = [
    BidiCase("separate_batch_major", time_major=False),
    BidiCase("separate_time_major"),
    # Hybrid symmetric is exported as merge_outputs=False + CONCATENATION (LiteRT crashes).
    BidiCase("merge_time_major", merge_outputs=True),
    BidiCase("merge_batch_major", time_major=False, merge_outputs=True, hybrid_too=False),
    # n_aux > n_input: the kernel's input-size stride through aux stays in bounds.
    BidiCase("aux_cross_linked_time_major", n_aux=N_INPUT + 2, aux_weights=True),
    BidiCase("aux_cross_linked_batch_major", time_major=False, n_aux=2, aux_weights=True, hybrid_too=False),
    BidiCase("aux_without_weights_time_major", n_aux=N_INPUT, hybrid_too=False),
    # Batch-major: the kernel's backward direction reads `input`, not aux (mirrored).
    BidiCase("aux_without_weights_batch_major", time_major=False, n_aux=N_INPUT, hybrid_too=False),
]


BIDI_RNN = _with_hybrid(BIDI_RNN_CASES, lambda c: c.hybrid_too)


@pytest.mark.parametrize(("case", "hybrid"), BIDI_RNN, ids=_ids(BIDI_RNN))
def test_bidirectional_sequence_rnn(case, hybrid):
    rng = np.random.default_rng(5)
    n_aux = case.n_aux if case.aux_weights else None
    fw, bw = rnn_weights(rng, 4, n_aux=n_aux), rnn_weights(rng, 5, n_aux=n_aux)
    if hybrid:
        fw, bw = _quantized(fw), _quantized(bw)
    options = rnn_options(hybrid, case.time_major, activation="TANH")
    shape, x, aux = _bidi_inputs(rng, case, 2.0)
    b = ModelBuilder()
    x_ref = b.add_input("input", shape)
    aux_ref = None if aux is None else b.add_input("aux_input", aux.shape)
    model = b.build(
        b.add_bidirectional_rnn(x_ref, fw, bw, options, merge_outputs=case.merge_outputs, aux_input=aux_ref)
    )

    def reference():
        kw = dict(options=options, merge_outputs=case.merge_outputs)
        y1, (f1, b1) = ops.bidirectional_sequence_rnn(x, fw, bw, None, None, aux, **kw)
        y2, _ = ops.bidirectional_sequence_rnn(x, fw, bw, f1, b1, aux, **kw)
        return [list(y1), list(y2)]

    _compare("BIDIRECTIONAL_SEQUENCE_RNN", model, [x] if aux is None else [x, aux], reference, hybrid)
