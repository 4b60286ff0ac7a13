"""The `jaxlstm` command line: convert, inspect, parity, demo; exit codes and one-line errors.

Models are made in the tests: with jaxlstm's ModelBuilder + export_tflite, with Keras 3 and
PyTorch (converted by `jaxlstm convert`), and with TensorFlow's TFLiteConverter from tf_keras
(the model whose cell_clip=10 quirk `inspect` and `parity` must report). Commands run
in-process through `main([...])`, except one smoke test of the installed console script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from jaxlstm import export_tflite
from jaxlstm.cli import main
from jaxlstm.convert import lstm_weights_from_fused
from jaxlstm.model import ModelBuilder
from jaxlstm.ops import LSTMOptions, LSTMWeights

KERAS_TIME = 48  # long enough for adversarial inputs to push |cell state| past 10


def _weights(rng: np.random.Generator, n_input: int, n_cell: int) -> LSTMWeights:
    def normal(*shape):
        return rng.normal(0.0, 0.3, shape).astype(np.float32)

    return lstm_weights_from_fused(normal(n_input, 4 * n_cell), normal(n_cell, 4 * n_cell), normal(4 * n_cell))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys, *argv: str, expected_code: int = 0) -> dict:
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == expected_code
    return json.loads(out)


def _warning_codes(report: dict) -> list[str]:
    return [w["code"] for w in report["warnings"]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """A jaxlstm-made model: LSTM (3 -> 4, no clip) + FULLY_CONNECTED, input [1, 10, 3];
    exported with the defaults (predict: FILL operators zero the LSTM state first)."""
    rng = np.random.default_rng(0)
    b = ModelBuilder()
    x = b.add_input("input", (1, 10, 3))
    h = b.add_lstm(x, _weights(rng, 3, 4), LSTMOptions(), name="lstm")
    y = b.add_fully_connected(h, rng.normal(size=(2, 4)).astype(np.float32), np.zeros(2, np.float32))
    path = str(tmp_path_factory.mktemp("tiny") / "tiny.tflite")
    export_tflite(b.build([y]), path)
    return path


def _lstm_operator(m):
    """The UNIDIRECTIONAL_SEQUENCE_LSTM `OperatorT` of an unpacked model."""
    from ai_edge_litert import schema_py_generated as schema

    code = schema.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    return next(op for op in m.subgraphs[0].operators if m.operatorCodes[op.opcodeIndex].builtinCode == code)


def _edit_flatbuffer(src: str, dst: str, edit) -> None:
    """Writes `src` to `dst` after `edit(ModelT)` (the schema's object API)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    with open(src, "rb") as f:
        m = schema.ModelT.InitFromPackedBuf(f.read(), 0)
    edit(m)
    builder = flatbuffers.Builder(0)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    with open(dst, "wb") as f:
        f.write(builder.Output())


@pytest.fixture(scope="module")
def unsupported(tiny, tmp_path_factory) -> str:
    """`tiny` plus a WHILE, a Flex and a custom operator."""
    from ai_edge_litert import schema_py_generated as schema

    def add_operators(m) -> None:
        for builtin, custom in (
            (schema.BuiltinOperator.WHILE, None),
            (schema.BuiltinOperator.CUSTOM, b"FlexTensorListReserve"),
            (schema.BuiltinOperator.CUSTOM, b"MyCustomOp"),
        ):
            code = schema.OperatorCodeT()
            code.builtinCode = code.deprecatedBuiltinCode = builtin
            code.customCode = custom
            m.operatorCodes.append(code)
            op = schema.OperatorT()
            op.opcodeIndex = len(m.operatorCodes) - 1
            op.inputs, op.outputs = [0], [0]
            m.subgraphs[0].operators.append(op)

    path = str(tmp_path_factory.mktemp("unsupported") / "unsupported.tflite")
    _edit_flatbuffer(tiny, path, add_operators)
    return path


@pytest.fixture(scope="module")
def tf_keras_model(tmp_path_factory) -> tuple[str, str]:
    """(.h5, .tflite) of a tf_keras LSTM [1, 48, 3] -> [1, 48, 16] made by TFLiteConverter."""
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential(
        [tf_keras.layers.Input((KERAS_TIME, 3), batch_size=1), tf_keras.layers.LSTM(16, return_sequences=True)]
    )
    folder = tmp_path_factory.mktemp("tf_keras")
    h5, tflite = str(folder / "model.h5"), str(folder / "model.tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "HDF5 is a legacy format"
        model.save(h5)
    with open(tflite, "wb") as f:
        f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return h5, tflite


# ----------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "argv, expected",
    [
        pytest.param([], ("convert", "inspect", "parity", "demo"), id="top"),
        pytest.param(
            ["convert"],
            (
                "--quantize",
                "--stateful",
                "--batch",
                "--strip-cell-clip",
                "--fuse-bidirectional",
                "--no-fuse-loops",
                ".keras",
                ".tflite",
                ".pt",
            ),
            id="convert",
        ),
        pytest.param(["inspect"], ("--json", "WHILE", "fusable", "Flex", "cell_clip=10"), id="inspect"),
        pytest.param(
            ["parity"], ("--source", "--steps", "--plot", "--tolerance", "adversarial", "Exit code"), id="parity"
        ),
    ],
)
def test_help_is_complete(capsys, argv, expected):
    code, out, _ = _run(capsys, *argv, "--help")
    assert code == 0
    assert all(word in out for word in expected), out


# ----------------------------------------------------------------------------- inspect


def test_inspect_json_schema_on_a_jaxlstm_model(capsys, tiny):
    report = _json(capsys, "inspect", tiny)
    assert set(report) == {"operators", "tensors", "signatures", "runtimes", "warnings"}
    lstm, dense = (op for op in report["operators"] if op["opcode"] not in ("FILL", "SHAPE", "STRIDED_SLICE"))
    assert set(lstm) == {
        "subgraph",
        "index",
        "opcode",
        "version",
        "custom_code",
        "inputs",
        "outputs",
        "options",
        "slots",
        "features",
    }
    assert (lstm["opcode"], dense["opcode"]) == ("UNIDIRECTIONAL_SEQUENCE_LSTM", "FULLY_CONNECTED")
    assert lstm["options"]["cell_clip"] == 0.0 and lstm["options"]["fused_activation_function"] == "TANH"
    assert lstm["features"] == {
        "cifg": False,
        "peephole": False,
        "projection": False,
        "diagonal_recurrent": False,
        "layer_norm": False,
        "hybrid": False,
        "quantization": "float",
        "integer_path": "float",
    }
    assert lstm["slots"]["cell_to_forget_weights"] is None
    assert lstm["slots"]["input_to_forget_weights"] == lstm["inputs"][2]
    assert dense["slots"] is None and dense["features"] is None
    tensors = {t["index"]: t for t in report["tensors"]}
    assert set(tensors[0]) == {
        "subgraph",
        "index",
        "name",
        "shape",
        "shape_signature",
        "dtype",
        "is_variable",
        "is_constant",
        "quantization",
    }
    assert tensors[lstm["slots"]["cell_state"]]["is_variable"]
    assert tensors[lstm["slots"]["input_to_forget_weights"]]["is_constant"]
    (signature,) = report["signatures"]
    assert signature["key"] == "serving_default" and signature["inputs"][0]["tensor"] == lstm["inputs"][0]
    assert report["warnings"] == []  # no cell_clip=10 quirk on a jaxlstm-made model; it loads; predict
    assert report["runtimes"] == {"litert": [], "tflite-micro": []}  # float, static shapes


def test_inspect_human_readable(capsys, tiny):
    code, out, err = _run(capsys, "inspect", tiny)
    assert code == 0 and err == ""
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in out and "features: cifg=no" in out
    assert "state (variable tensors): output_state=" in out and "warnings: none" in out


def test_inspect_flags_what_keeps_a_model_off_a_plain_runtime(capsys, unsupported):
    report = _json(capsys, "inspect", unsupported)
    assert _warning_codes(report) == ["while_loop", "flex_op", "custom_op", "not_loadable"]
    not_loadable = report["warnings"][-1]
    assert (not_loadable["subgraph"], not_loadable["operator"]) == (None, None)
    assert "load_tflite refuses this file: NotImplementedError" in not_loadable["message"]
    assert [op["custom_code"] for op in report["operators"][-2:]] == ["FlexTensorListReserve", "MyCustomOp"]


@pytest.mark.parametrize(
    "merge_outputs, batch, flagged",
    [
        pytest.param(True, 2, True, id="merged_batch2"),
        pytest.param(False, 2, False, id="unmerged_batch2"),
        pytest.param(True, 1, False, id="merged_batch1"),
    ],
)
def test_inspect_flags_merged_batch_major_bidirectional(capsys, tmp_path, merge_outputs, batch, flagged):
    rng = np.random.default_rng(1)
    b = ModelBuilder()
    x = b.add_input("input", (batch, 5, 3))
    fw, bw = b.add_bidirectional_lstm(x, _weights(rng, 3, 4), _weights(rng, 3, 4), LSTMOptions(), merge_outputs=False)
    path = str(tmp_path / "bidi.tflite")
    export_tflite(b.build([fw, bw]), path, stateful=True)  # one operator: the LSTM

    def merge(m) -> None:  # the exporter never writes merged batch-major outputs itself
        (op,) = m.subgraphs[0].operators
        op.builtinOptions.mergeOutputs = True
        op.outputs = op.outputs[:1]
        m.subgraphs[0].outputs = op.outputs

    if merge_outputs:
        _edit_flatbuffer(path, path, merge)
    report = _json(capsys, "inspect", path)
    assert report["operators"][0]["options"]["merge_outputs"] == merge_outputs
    assert ("merged_batch_major" in _warning_codes(report)) == flagged


def test_inspect_flags_activation_none_on_an_lstm(capsys, tmp_path, tiny):
    def no_activation(m) -> None:
        _lstm_operator(m).builtinOptions.fusedActivationFunction = 0  # NONE

    path = str(tmp_path / "none.tflite")
    _edit_flatbuffer(tiny, path, no_activation)
    assert _warning_codes(_json(capsys, "inspect", path)) == ["activation_none"]


@pytest.mark.slow  # TensorFlow import + TFLiteConverter (module fixture): ~15 s of CPU
def test_inspect_flags_the_keras_cell_clip_on_a_tflite_converter_model(capsys, tf_keras_model):
    report = _json(capsys, "inspect", tf_keras_model[1])
    (lstm,) = [op for op in report["operators"] if op["opcode"] == "UNIDIRECTIONAL_SEQUENCE_LSTM"]
    assert lstm["options"]["cell_clip"] == 10.0
    flagged = [(w["subgraph"], w["operator"]) for w in report["warnings"] if w["code"] == "keras_cell_clip"]
    assert flagged == [(lstm["subgraph"], lstm["index"])]


# ----------------------------------------------------------------------------- errors


def _one_line_error(capsys, *argv: str) -> str:
    code, out, err = _run(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_user_errors_are_one_line_with_exit_code_2(capsys, tmp_path, tiny, unsupported):
    text_file = tmp_path / "notes.tflite"
    text_file.write_text("hello, not a flatbuffer")
    missing = str(tmp_path / "missing.tflite")
    cases = [
        (["inspect", missing], "no such file"),
        (["parity", missing], "no such file"),
        (["convert", missing, "-o", str(tmp_path / "o.tflite")], "no such file"),
        (["inspect", str(text_file)], "not a .tflite file"),
        (["parity", str(text_file)], "not a .tflite file"),
        (["parity", unsupported], "WHILE"),
        (["parity", tiny, "--steps", "3"], "fixed time dimension"),
        (["parity", tiny, "--source", str(text_file)], "Keras model file"),
        (["convert", str(text_file).replace(".tflite", ".txt"), "-o", "x.tflite"], "no such file"),
        (["convert", tiny, "-o", str(tmp_path / "o.tflite"), "--batch", "4"], "static batch 1"),
        (["bogus"], "invalid choice"),
        (["parity"], "required"),
        (["convert", tiny], "-o/--output"),
    ]
    for argv, message in cases:
        assert message in _one_line_error(capsys, *argv), argv
    assert not (tmp_path / "o.tflite").exists()


def test_out_of_range_indices_are_a_user_error(capsys, tmp_path, tiny):
    def break_input(m) -> None:
        op = _lstm_operator(m)
        op.inputs = [999 if k == 2 else i for k, i in enumerate(op.inputs)]  # input_to_forget_weights

    path = str(tmp_path / "broken.tflite")
    _edit_flatbuffer(tiny, path, break_input)
    assert "malformed .tflite file" in _one_line_error(capsys, "inspect", path)
    _one_line_error(capsys, "parity", path)


def test_a_truncated_file_says_so_in_inspect_convert_and_load_tflite(capsys, tmp_path, tiny):
    from jaxlstm.tflite import load_tflite

    with open(tiny, "rb") as f:
        data = f.read()
    path = tmp_path / "cut.tflite"
    path.write_bytes(data[: len(data) * 2 // 3])  # an interrupted download
    with pytest.raises(ValueError) as error:
        load_tflite(path)
    expected = str(error.value)
    assert expected.startswith("truncated .tflite file:")
    for argv in (["inspect", str(path)], ["convert", str(path), "-o", str(tmp_path / "o.tflite")]):
        assert _one_line_error(capsys, *argv) == f"jaxlstm {argv[0]}: error: {expected}"


def test_a_failed_write_names_the_destination(capsys, tmp_path, tiny):
    out = tmp_path / "no_such_dir" / "o.tflite"
    message = _one_line_error(capsys, "convert", tiny, "-o", str(out))
    assert message == f"jaxlstm convert: error: no such file or directory: {out}"


def test_inspect_piped_into_head_exits_quietly(tiny):
    """`jaxlstm inspect MODEL | head`: the reader closes the pipe; no traceback, exit 141 (SIGPIPE)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "jaxlstm", "inspect", tiny], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # the reader has gone before the first line is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Error" not in stderr and "Traceback" not in stderr, stderr


def test_inspect_reports_what_load_tflite_does(capsys, tmp_path, tiny):
    """A fully integer LSTM (int8 input, int16 state) is not hybrid, and a file that
    load_tflite refuses is not "warnings: none"."""
    from ai_edge_litert import schema_py_generated as schema

    from jaxlstm.tflite import load_tflite

    def integer(m) -> None:
        op = _lstm_operator(m)
        m.subgraphs[0].tensors[op.inputs[0]].type = schema.TensorType.INT8
        for slot in (18, 19):
            m.subgraphs[0].tensors[op.inputs[slot]].type = schema.TensorType.INT16

    path = str(tmp_path / "integer.tflite")
    _edit_flatbuffer(tiny, path, integer)
    report = _json(capsys, "inspect", path)
    (lstm,) = [op for op in report["operators"] if op["features"]]
    assert lstm["features"]["quantization"] == "integer" and lstm["features"]["hybrid"] is False
    with pytest.raises((ValueError, NotImplementedError)) as error:
        load_tflite(path)
    (warning,) = [w for w in report["warnings"] if w["code"] == "not_loadable"]
    assert warning["message"].endswith(f"{type(error.value).__name__}: {error.value}")
    code, out, _ = _run(capsys, "inspect", path)
    assert code == 0 and "warnings: none" not in out and "not_loadable: jaxlstm.load_tflite refuses" in out


def test_inspect_says_when_the_state_carries_over(capsys, tmp_path):
    rng = np.random.default_rng(7)
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, 3))
    model = b.build([b.add_lstm(x, _weights(rng, 3, 4), LSTMOptions(), name="lstm")])
    paths = {stateful: str(tmp_path / f"{stateful}.tflite") for stateful in (False, True)}
    for stateful, path in paths.items():
        export_tflite(model, path, stateful=stateful)
    assert _warning_codes(_json(capsys, "inspect", paths[False])) == []
    (warning,) = _json(capsys, "inspect", paths[True])["warnings"]
    assert warning["code"] == "streaming_state" and "reset_all_variables()" in warning["message"]
    assert "'lstm/output_state' [-1, 4]" in warning["message"]


def test_convert_keeps_or_changes_the_semantics_of_a_tflite_file(capsys, tmp_path):
    from jaxlstm.tflite import load_tflite

    rng = np.random.default_rng(8)
    b = ModelBuilder()
    x = b.add_input("input", (-1, -1, 3))
    src = str(tmp_path / "streaming.tflite")
    export_tflite(b.build([b.add_lstm(x, _weights(rng, 3, 4), LSTMOptions())]), src, stateful=True)
    for flags, stateful in (([], True), (["--no-stateful"], False), (["--stateful"], True)):
        out = str(tmp_path / "out.tflite")
        assert _run(capsys, "convert", src, "-o", out, *flags)[0] == 0
        assert load_tflite(out).stateful is stateful, flags


def test_convert_a_torch_gru_needs_time_steps(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from jaxlstm.parity.litert import run_litert

    torch.manual_seed(1)
    gru = torch.nn.GRU(3, 4, batch_first=True)
    src, out = str(tmp_path / "gru.pt"), str(tmp_path / "gru.tflite")
    torch.save(gru, src)
    assert "--time-steps T" in _one_line_error(capsys, "convert", src, "-o", out)
    code, stdout, _ = _run(capsys, "convert", src, "-o", out, "--time-steps", "6")
    assert code == 0 and "UNPACK" in stdout
    x = np.random.default_rng(9).normal(size=(2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        expected = gru(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(run_litert(out, [x])[0][0], expected, atol=1e-5, rtol=0)


def test_unknown_source_type_is_a_user_error(capsys, tmp_path):
    src = tmp_path / "model.onnx"
    src.write_bytes(b"\0")
    assert "unknown source type .onnx" in _one_line_error(capsys, "convert", str(src), "-o", str(tmp_path / "o.tflite"))


# ----------------------------------------------------------------------------- convert


def test_convert_quantizes_a_tflite_model_and_the_hybrid_model_passes_parity(capsys, tmp_path):
    b = ModelBuilder()
    x = b.add_input("input", (1, 8, 32))
    b_out = b.add_lstm(x, _weights(np.random.default_rng(2), 32, 32), LSTMOptions(), name="lstm")
    src, out = str(tmp_path / "float.tflite"), str(tmp_path / "hybrid.tflite")
    export_tflite(b.build([b_out]), src)
    code, stdout, _ = _run(capsys, "convert", src, "-o", out, "--quantize", "dynamic")
    assert code == 0
    assert f"wrote {out} ({os.path.getsize(out):,} bytes)" in stdout and "UNIDIRECTIONAL_SEQUENCE_LSTM" in stdout
    assert "int8 weight tensors: 8" in stdout  # the 8 gate matrices; biases stay float
    (lstm,) = [op for op in _json(capsys, "inspect", out)["operators"] if op["features"]]
    assert lstm["features"]["hybrid"]
    code, stdout, _ = _run(capsys, "parity", out)
    assert code == 0 and "PASSED" in stdout


def test_convert_quantize_int8_and_int16_with_calibration(capsys, tmp_path, tiny):
    """Fully integer conversion of a float .tflite file: the int8 file (--io integer: int8 in and
    out) runs in LiteRT exactly as jaxlstm runs it; the int16 one (float32 in and out) in
    TFLite Micro."""
    from jaxlstm import load_tflite
    from jaxlstm.parity.litert import run_litert

    rng = np.random.default_rng(5)
    calibration = str(tmp_path / "calibration.npy")
    np.save(calibration, rng.normal(size=(16, 10, 3)).astype(np.float32))
    x = rng.normal(size=(1, 10, 3)).astype(np.float32)
    out = str(tmp_path / "int8.tflite")
    code, stdout, _ = _run(
        capsys, "convert", tiny, "-o", out, "--quantize", "int8", "--calibration", calibration, "--io", "integer"
    )
    assert code == 0 and "fully integer: int8 activations" in stdout and "LiteRT and TFLite Micro" in stdout
    model = load_tflite(out)
    assert model.tensors[model.inputs[0]].dtype == "int8"
    x_int8 = np.clip(np.round(x / 0.05), -128, 127).astype(np.int8)
    np.testing.assert_array_equal(run_litert(out, [x_int8], xnnpack=False)[0][0], model(x_int8)[0])
    out = str(tmp_path / "int16.tflite")
    code, stdout, _ = _run(capsys, "convert", tiny, "-o", out, "--quantize", "int16", "--calibration", calibration)
    assert code == 0 and "TFLite Micro only" in stdout
    model = load_tflite(out, runtime="tflite-micro")
    lstm = next(op for op in model.operators if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    assert model.tensors[lstm.inputs[0]].dtype == "int16"
    micro = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    interpreter = micro.Interpreter.from_bytes(open(out, "rb").read())
    interpreter.set_input(x, 0)
    interpreter.invoke()
    np.testing.assert_array_equal(interpreter.get_output(0), model(x)[0])


def test_convert_quantize_user_errors(capsys, tmp_path, tiny):
    wrong = str(tmp_path / "wrong.npy")
    np.save(wrong, np.zeros((4, 10, 5), np.float32))
    out = str(tmp_path / "o.tflite")
    cases = [
        (["--quantize", "int8"], "--quantize int8 needs --calibration DATA.npy"),
        (["--quantize", "dynamic", "--calibration", wrong], "--calibration applies to --quantize int8 or int16 only"),
        (["--io", "integer"], "--io applies to --quantize int8 or int16 only"),
        (["--quantize", "int16", "--calibration", wrong], "input 'input' has shape [1, 10, 3]"),
        (["--quantize", "int8", "--calibration", str(tmp_path / "none.npy")], "no such file"),
    ]
    for flags, message in cases:
        assert message in _one_line_error(capsys, "convert", tiny, "-o", out, *flags), flags
    assert not os.path.exists(out)


def test_convert_a_keras3_file_and_check_parity_against_it(capsys, tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((12, 3)), keras.layers.LSTM(5, return_sequences=True), keras.layers.Dense(2)])
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()])
    src, out = str(tmp_path / "model.keras"), str(tmp_path / "model.tflite")
    model.save(src)
    code, stdout, _ = _run(capsys, "convert", src, "-o", out)
    assert code == 0 and "UNIDIRECTIONAL_SEQUENCE_LSTM" in stdout and "FULLY_CONNECTED" in stdout
    report = _json(capsys, "parity", out, "--source", src)
    assert report["passed"] and {e["pair"] for e in report["errors"]} >= {"source vs litert"}
    assert report["semantics"] == "predict" and {e["batch"] for e in report["errors"]} == {1, 3}
    # A source that cannot take the file's inputs: Keras' bold error text arrives plain.
    other = keras.Sequential([keras.Input((12, 4)), keras.layers.LSTM(5, return_sequences=True)])
    other_src = str(tmp_path / "other.keras")
    other.save(other_src)
    message = _one_line_error(capsys, "parity", out, "--source", other_src, "--json")  # --json: no progress bar
    assert "\x1b" not in message and "dot_general" in message


def test_convert_a_torch_state_dict(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    from jaxlstm.parity import compare

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, batch_first=True)
    src, out = str(tmp_path / "lstm.pt"), str(tmp_path / "lstm.tflite")
    torch.save(lstm.state_dict(), src)
    code, stdout, _ = _run(capsys, "convert", src, "-o", out, "--batch-first")
    assert code == 0 and "UNIDIRECTIONAL_SEQUENCE_LSTM" in stdout
    with torch.no_grad():
        report = compare(out, source=lambda x: lstm(torch.from_numpy(x))[0].numpy(), steps=16)
    assert report.passed, report.format()


@pytest.mark.slow  # TensorFlow import + TFLiteConverter (module fixture): ~15 s of CPU
def test_strip_cell_clip_makes_the_tflite_model_match_keras(capsys, tmp_path, tf_keras_model):
    h5, tflite = tf_keras_model
    out = str(tmp_path / "unclipped.tflite")
    code, _, stderr = _run(capsys, "convert", tflite, "-o", out, "--strip-cell-clip")
    assert code == 0 and "warning: --strip-cell-clip" in stderr
    assert "keras_cell_clip" not in _warning_codes(_json(capsys, "inspect", out))
    report = _json(capsys, "parity", out, "--source", h5)
    assert report["passed"], report


def _tf_style_bidirectional(path: str) -> None:
    """TensorFlow's unfused Keras Bidirectional(LSTM): REVERSE_V2, 2 LSTMs, REVERSE_V2, CONCATENATION."""
    rng = np.random.default_rng(5)
    b = ModelBuilder()
    x = b.add_input("input", (2, 12, 3))
    options = LSTMOptions(cell_clip=10.0)
    backward = b.add_reverse(b.add_lstm(b.add_reverse(x, 1), _weights(rng, 3, 4), options, name="bw"), 1)
    forward = b.add_lstm(x, _weights(rng, 3, 4), options, name="fw")
    export_tflite(b.build([b.add_concatenation([forward, backward])]), path)


def test_fuse_bidirectional_keeps_litert_outputs(capsys, tmp_path):
    from jaxlstm.parity.litert import run_litert

    src, out = str(tmp_path / "unfused.tflite"), str(tmp_path / "fused.tflite")
    _tf_style_bidirectional(src)
    code, stdout, _ = _run(capsys, "convert", src, "-o", out, "--fuse-bidirectional", "--stateful")
    assert code == 0
    assert stdout.splitlines()[1] == "operators: BIDIRECTIONAL_SEQUENCE_LSTM, CONCATENATION"
    x = 10 * np.random.default_rng(4).standard_normal((2, 12, 3)).astype(np.float32)
    (before,), (after,) = run_litert(src, [x])[0], run_litert(out, [x])[0]
    # Same kernels and math in both files; the bound is LiteRT's float kernel-test tolerance.
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "flag, message",
    [
        pytest.param(["--fuse-bidirectional"], "no REVERSE_V2 + UNIDIRECTIONAL_SEQUENCE_LSTM pair", id="fuse"),
        pytest.param(["--quantize", "dynamic"], "the model stays float", id="quantize_small"),
    ],
)
def test_convert_warns_when_a_flag_changes_nothing(capsys, tmp_path, tiny, flag, message):
    code, _, stderr = _run(capsys, "convert", tiny, "-o", str(tmp_path / "o.tflite"), *flag)
    assert code == 0 and message in stderr


# ----------------------------------------------------------------------------- parity


@pytest.mark.slow  # TensorFlow import + TFLiteConverter (module fixture): ~15 s of CPU
def test_parity_reports_the_keras_cell_clip_quirk(capsys, tf_keras_model):
    h5, tflite = tf_keras_model
    report = _json(capsys, "parity", tflite, "--source", h5, expected_code=1)
    assert not report["passed"] and "cell_clip=10" in report["notes"][0]
    errors = report["errors"]
    assert all(e["passed"] for e in errors if e["pair"] == "jaxlstm vs litert")
    assert all(e["passed"] for e in errors if e["case"] == "random")
    failed = [e for e in errors if not e["passed"]]
    assert failed and all(e["case"].startswith("adversarial") and "cell_clip=10" in e["note"] for e in failed)


def test_parity_passes_on_a_jaxlstm_model_with_json_and_plot(capsys, tmp_path, tiny):
    plot = tmp_path / "errors.png"
    code, out, _ = _run(capsys, "parity", tiny, "--plot", str(plot), "--tolerance", "1e-5")
    assert code == 0 and "PASSED" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = _json(capsys, "parity", tiny, "--seed", "1")
    assert report["passed"] and report["steps"] == 10 and report["notes"] == []


def test_parity_exit_code_1_when_the_tolerance_is_not_met(capsys, tiny):
    code, out, _ = _run(capsys, "parity", tiny, "--tolerance", "0")
    assert code == 1 and "FAILED" in out


# ----------------------------------------------------------------------------- demo, script


def test_demo_dispatches_the_rest_of_the_command_line(monkeypatch):
    calls = []
    fake = types.ModuleType("jaxlstm.demo")
    fake.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "jaxlstm.demo", fake)
    assert main(["demo", "--epochs", "1", "--help"]) == 0
    assert calls == [["--epochs", "1", "--help"]]


def test_console_script_smoke(tiny):
    script = shutil.which("jaxlstm")
    if script is None:
        pytest.skip("the jaxlstm console script is not installed (pip install -e .)")
    result = subprocess.run([script, "inspect", tiny, "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in [op["opcode"] for op in json.loads(result.stdout)["operators"]]
