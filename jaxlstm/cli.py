"""The ``jaxlstm`` command line: convert, inspect, parity, demo (a thin layer over the library).

Exit codes: 0 success; 1 a parity check failed; 2 a user error (bad path, not a .tflite file,
an unsupported operator or option), reported as one line on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
from collections.abc import Sequence

from jaxlstm._text import plain

_SOURCE_KINDS = """\
SRC kinds:
  .keras  a Keras 3 model file (jaxlstm.convert.from_keras; Keras is not imported)
  .h5     a tf_keras / Keras model file (loaded with tf_keras, then from_keras)
  .tflite a TFLite model, re-exported: the WHILE loops that TensorFlow 2.16+ writes for
          Keras LSTM, GRU and SimpleRNN layers become fused operators (see --no-fuse-loops);
          optionally rewritten (--strip-cell-clip, --fuse-bidirectional) and quantized (--quantize)
  .pt     a PyTorch nn.LSTM / nn.RNN / nn.GRU saved with torch.save(module), or its
          state_dict (jaxlstm.convert.from_torch; sizes are read from the weight shapes)

The written file behaves like Keras predict: every invoke starts from zero state, and
resizing the input alone (resize_tensor_input, or the signature runner) runs it at any
batch and length. --stateful writes a streaming file instead (the state carries over
between invokes until reset_all_variables(); fix the batch with --batch N, or resize the
variable tensors with the input). A .tflite SRC keeps its own behaviour unless
--stateful / --no-stateful is given. GRU layers need --time-steps T (TFLite has no GRU
operator: the layer is unrolled over T steps).
"""

_INSPECT_DESCRIPTION = """\
Describe a .tflite file: operators with their fused-op slots (CIFG, peephole, projection,
layer norm, aux input, int8 hybrid weights), their integer path (8x8_16, 8x8_8, 16x8,
hybrid, float) and options, tensor shapes and types, variable (state) tensors, signature
defs, which runtimes (LiteRT, TFLite Micro) can run the file, whether each WHILE loop (Keras 3
recurrent layers converted by TensorFlow 2.16+) is fusable into a fused operator by `jaxlstm
convert` (or why not), and warnings about what keeps the model off a plain runtime (Flex /
SELECT_TF ops, custom ops, WHILE loops in files jaxlstm cannot load) and known converter quirks
(cell_clip=10 on LSTMs converted from Keras, which never clips).
"""

_INSPECT_EPILOG = """\
--json prints a stable dict (full field list in the jaxlstm.inspect docstring):
  {"operators":  [{"subgraph", "index", "opcode", "version", "custom_code", "inputs",
                   "outputs", "options", "slots", "features"}, ...],
   "tensors":    [{"subgraph", "index", "name", "shape", "shape_signature", "dtype",
                   "is_variable", "is_constant", "quantization"}, ...],
   "signatures": [{"key", "subgraph", "inputs": [{"name", "tensor"}], "outputs": [...]}, ...],
   "runtimes":   {"litert": [reason, ...], "tflite-micro": [reason, ...]},
   "warnings":   [{"code", "subgraph", "operator", "message"}, ...]}
"slots" (input name -> tensor index or null) and "features" are set for the fused LSTM/RNN
ops only; features["integer_path"] is "float", "hybrid", "8x8_16" (int8 activations: LiteRT
and TFLite Micro), "8x8_8" (LiteRT's experimental LSTM) or "16x8" (int16 activations:
TFLite Micro only). "runtimes" lists, per runtime, why it cannot run the file (empty: it
can, as far as inspect knows: 16x8 LSTMs are TFLite Micro only; TFLite Micro lacks the LSTM,
bidirectional and RNN ops, integer LSTMs with CIFG/peephole/projection/layer norm, hybrid
LSTMs, uint8 tensors and dynamic shapes). WHILE operators also have "loop": {"fusable",
"body", "layer", "fused_into", "reason", "error"}. Warning codes: while_loop, flex_op,
custom_op, unsupported_op, keras_cell_clip, activation_none, merged_batch_major, and for the whole file (operator null): not_loadable
(jaxlstm.load_tflite refuses the file; the message is its error), streaming_state (the
recurrent state carries over from one invoke to the next).
"""

_PARITY_EPILOG = """\
Inputs: "random" (standard normal) and two adversarial cases of magnitude 10 that drive
LSTM cell states past 10 ("adversarial_flip": every feature's sign flips halfway;
"adversarial_rotation": the input direction turns once over the sequence), each at batch 1
and batch 3 (or the model's fixed batch) and invoked twice, as a LiteRT user would. The
report says which semantics the file has: "predict" (every invoke starts from zero state:
the second invoke must equal the first) or "streaming" (the second invoke continues from
the state the first left, in LiteRT and in jaxlstm alike).
An element passes when |a - b| <= tolerance * max(1, |b|). For hybrid (int8-weight) models
the jaxlstm side is its emulation of LiteRT's hybrid arithmetic, so the same tolerance
applies to jaxlstm vs LiteRT; pairs with the (float) source use --source-tolerance.
Fully integer files (int8/int16 activations) are compared exactly (tolerance 0): integer
outputs as integers, with the number of mismatching elements and the largest difference in
LSBs; LiteRT runs them with its builtin kernels alone (XNNPACK, its default delegate,
rescales int8 QUANTIZE, DEQUANTIZE and MUL in float, an LSB off here and there).
--runtime tflite-micro compares against TensorFlow Lite Micro's interpreter instead (pip
install tflite-micro; static shapes only), the only runtime of int16-activation LSTMs.
Known quirk: TFLiteConverter writes cell_clip=10 into LSTMs from Keras, which never clips;
source-vs-LiteRT failures that this explains are labelled "known quirk: cell_clip=10".
Exit code 0 when every pair passes, 1 otherwise, 2 on a user error.
"""


_FULL_INTEGER = ("int8", "int16")  # --quantize choices that calibrate (jaxlstm.quantize)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _UserError(Exception):
    """A problem with the command's inputs, reported as one line (exit code 2)."""


# RuntimeError: LiteRT refusing a model ("... failed to prepare").
_USER_ERRORS = (_UserError, OSError, ValueError, TypeError, NotImplementedError, ImportError, RuntimeError)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``jaxlstm`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if argv[:1] == ["demo"]:  # the demo parses its own arguments, --help included
        command, run = "demo", lambda: int(importlib.import_module("jaxlstm.demo").main(argv[1:]) or 0)
    else:
        try:
            args = _build_parser().parse_args(argv)
        except SystemExit as e:  # --help (0) or a usage error (2), already printed
            return _exit_code(e)
        command, run = args.command, lambda: args.run(args)
    try:
        code = run()
        sys.stdout.flush()  # a closed pipe shows up here, not at exit
        return code
    except BrokenPipeError:  # `jaxlstm inspect x.tflite | head`: the reader has gone
        _silence_stdout()
        return 128 + signal.SIGPIPE
    except SystemExit as e:  # the demo's own argument parsing
        return _exit_code(e)
    except _USER_ERRORS as e:
        print(f"jaxlstm {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    """The error as one line of plain text: no newlines, and no terminal colour codes (Keras
    wraps the errors of its layers in bold, ``\\x1b[1m``)."""
    if isinstance(e, OSError) and e.filename and e.strerror:
        text = f"{e.strerror.lower()}: {e.filename}"  # "no such file or directory: out/x.tflite"
    else:
        text = str(e)
    return " ".join(plain(text).split()) or type(e).__name__


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (a captured stdout)
        pass


def _exit_code(e: SystemExit) -> int:
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=sys.stderr)  # sys.exit("message")
    return 1


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jaxlstm",
        description="TFLite fused LSTM/RNN models: convert, inspect and check parity with LiteRT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    convert = commands.add_parser(
        "convert",
        help="convert a Keras / PyTorch / TFLite model to a .tflite file",
        description="Convert SRC to a .tflite file of TFLite fused ops; print the operators\nand the file size.",
        epilog=_SOURCE_KINDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("src", metavar="SRC", help="the model to convert (.keras, .h5, .tflite, .pt)")
    convert.add_argument("-o", "--output", required=True, metavar="OUT.tflite", help="where to write")
    convert.add_argument(
        "--quantize",
        choices=("dynamic", *_FULL_INTEGER),
        default=None,
        help="dynamic: int8 weights, float activations (TFLite's hybrid ops); int8: fully integer, "
        "calibrated on --calibration (runs in LiteRT and TFLite Micro); int16: int16 activations, "
        "int8 weights (16x8, runs in TFLite Micro only)",
    )
    convert.add_argument(
        "--calibration",
        metavar="DATA.npy",
        help="representative inputs for --quantize int8/int16: a .npy array shaped like the model's "
        "input ([N, T, features]), or a .npz with one array per model input, in input order",
    )
    convert.add_argument(
        "--io",
        choices=("float", "integer"),
        default=None,
        help="with --quantize int8/int16: float (default) keeps float32 inputs and outputs (QUANTIZE / "
        "DEQUANTIZE at the edges); integer makes them the integer tensors",
    )
    convert.add_argument(
        "--stateful",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--stateful: carry the recurrent state from one invoke to the next (TFLite variable "
        "tensors, until reset_all_variables()); --no-stateful: start every invoke from zero "
        "state, like Keras predict. Default: predict for Keras and PyTorch sources, the file's "
        "own behaviour for a .tflite source",
    )
    convert.add_argument(
        "--batch",
        type=_batch,
        default=None,
        metavar="N|dynamic",
        help="a fixed batch size of input and state, or 'dynamic' (resize the input with "
        "resize_tensor_input); default: dynamic for Keras and PyTorch sources, the file's for .tflite",
    )
    convert.add_argument(
        "--time-steps",
        type=_positive_int,
        default=None,
        metavar="T",
        help="a fixed sequence length; required for GRU layers (TFLite has no GRU operator: "
        "the layer is unrolled over T steps). Default: the source's (dynamic when it declares none)",
    )
    convert.add_argument(
        "--strip-cell-clip",
        action="store_true",
        help="set cell_clip to 0 on every LSTM: undoes the cell_clip=10 that "
        "TFLiteConverter writes for Keras LSTMs, so the model computes what "
        "Keras computes (changes numerics once |cell state| > 10)",
    )
    convert.add_argument(
        "--fuse-bidirectional",
        action="store_true",
        help="replace TF's REVERSE_V2 + 2x UNIDIRECTIONAL_SEQUENCE_LSTM + REVERSE_V2 pattern (a Keras "
        "Bidirectional LSTM before TF 2.16) with one BIDIRECTIONAL_SEQUENCE_LSTM (same numerics)",
    )
    convert.add_argument(
        "--fuse-loops",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="replace each WHILE loop of a Keras LSTM / SimpleRNN / GRU layer (TensorFlow 2.16+) with "
        "UNIDIRECTIONAL_SEQUENCE_LSTM (a Bidirectional pair: BIDIRECTIONAL_SEQUENCE_LSTM), "
        "UNIDIRECTIONAL_SEQUENCE_RNN, or builtin operators unrolled over the loop's length (GRU), each "
        "checked against its loop in JAX; loops that do not fuse (masked, int8 weights, ...) stay, and "
        "the reason is printed. Default: --fuse-loops",
    )
    convert.add_argument(
        "--batch-first",
        action="store_true",
        help=".pt state_dict sources: the input is [B, T, F] (batch_first=True); a saved module carries its own",
    )
    convert.set_defaults(run=_convert)

    inspect = commands.add_parser(
        "inspect",
        help="show the operators, fused-op features, tensors and portability warnings",
        description=_INSPECT_DESCRIPTION,
        epilog=_INSPECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("model", metavar="MODEL.tflite")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect.set_defaults(run=_inspect)

    parity = commands.add_parser(
        "parity",
        help="compare LiteRT (or TFLite Micro), jaxlstm and the source model on the same inputs",
        description="Run MODEL.tflite in LiteRT and in jaxlstm (and the source model with\n"
        "--source) on random and adversarial inputs; report the max abs / max rel\n"
        "error per output with pass or fail.",
        epilog=_PARITY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parity.add_argument("model", metavar="MODEL.tflite")
    parity.add_argument(
        "--source", metavar="MODEL.keras", help="the Keras model (.keras / .h5) the .tflite file was made from"
    )
    parity.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        metavar="N",
        help="time steps of the generated inputs (default: the model's fixed time dimension, else 64)",
    )
    parity.add_argument("--seed", type=int, default=0, help="seed of the generated inputs (default 0)")
    parity.add_argument(
        "--tolerance",
        type=float,
        default=None,
        metavar="X",
        help="bound for jaxlstm vs the runtime (default 1e-5 for float and hybrid models, 0 for integer ones)",
    )
    parity.add_argument(
        "--source-tolerance",
        type=float,
        default=None,
        metavar="X",
        help="bound for pairs with the source (default: --tolerance for float "
        "models, 2e-2 for hybrid ones: int8 weight quantization error, 5e-2 for integer ones)",
    )
    parity.add_argument(
        "--runtime",
        choices=("litert", "tflite-micro"),
        default="litert",
        help="the interpreter to compare with (default litert; tflite-micro: TensorFlow Lite Micro's)",
    )
    parity.add_argument("--plot", metavar="OUT.png", help="draw the error over time steps to this file")
    parity.add_argument("--json", action="store_true", help="print the report as JSON")
    parity.set_defaults(run=_parity)

    commands.add_parser(
        "demo",
        add_help=False,
        help="train a small LSTM, export it and check it in LiteRT (jaxlstm demo --help for its options)",
    )
    return parser


def _batch(text: str) -> int:
    """A positive batch size, or -1 for 'dynamic'."""
    return -1 if text == "dynamic" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ----------------------------------------------------------------------------- commands


def _convert(args: argparse.Namespace) -> int:
    from jaxlstm.inspect import inspect_tflite
    from jaxlstm.model.loop_fusion import fuse_while_loops
    from jaxlstm.model.rewrite import fuse_bidirectional_lstm, strip_cell_clip
    from jaxlstm.tflite import export_tflite

    full_integer = args.quantize in _FULL_INTEGER
    if full_integer and args.calibration is None:
        raise _UserError(
            f"--quantize {args.quantize} needs --calibration DATA.npy: representative inputs shaped like the "
            "model's input, e.g. [N, T, features]"
        )
    for flag, value in (("--calibration", args.calibration), ("--io", args.io)):
        if value is not None and not full_integer:
            raise _UserError(f"{flag} applies to --quantize int8 or int16 only")
    model = _load_source(args.src, args.batch, args.batch_first)
    loops = []
    if args.fuse_loops:
        model, loops = fuse_while_loops(model)
    if args.strip_cell_clip:
        model, n = strip_cell_clip(model)
        _warn(
            "convert",
            f"--strip-cell-clip: removed cell_clip from {n} LSTM operator(s); outputs "
            "now match Keras and differ from the original .tflite once |cell state| > 10",
        )
    if args.fuse_bidirectional:
        model, n = fuse_bidirectional_lstm(model)
        if not n:
            _warn(
                "convert",
                "--fuse-bidirectional: no REVERSE_V2 + UNIDIRECTIONAL_SEQUENCE_LSTM pair that can be fused was found",
            )
    if full_integer:
        from jaxlstm.quantization import quantize

        calibration = _read_calibration(args.calibration, len(model.inputs))
        model = quantize(model, calibration, activations=args.quantize, io=args.io or "float")
    data = export_tflite(
        model,
        path=args.output,
        quantize="dynamic" if args.quantize == "dynamic" else None,
        stateful=args.stateful,
        batch_size=None if args.batch in (None, -1) else args.batch,
        time_steps=args.time_steps,
    )
    report = inspect_tflite(data, loops=False)
    ops = ", ".join(op["opcode"] for op in report["operators"] if op["subgraph"] == 0)
    print(f"wrote {args.output} ({len(data):,} bytes)")
    print(f"operators: {ops}")
    for loop in loops:
        print(f"loop: {loop}")
    if full_integer:
        runtimes = (
            "LiteRT and TFLite Micro" if args.quantize == "int8" else "TFLite Micro only (LiteRT has no 16x8 LSTM)"
        )
        print(f"fully integer: {args.quantize} activations, int8 weights; runs in {runtimes}")
    elif args.quantize:
        n_int8 = sum(t["dtype"] == "int8" and t["is_constant"] for t in report["tensors"])
        print(f"int8 weight tensors: {n_int8}")
        if not n_int8:
            _warn(
                "convert",
                "--quantize dynamic: no op has weight matrices of >= 1024 elements "
                "(TFLite's dynamic-range threshold); the model stays float",
            )
    for w in report["warnings"]:
        _warn("convert", f"{w['code']}: {w['message']}")
    return 0


def _read_calibration(path: str, n_inputs: int):
    """The calibration data of `--calibration`: the array of a .npy file (`jaxlstm.quantize`
    splits it into batches), or the arrays of a .npz (one per model input) as one batch."""
    import numpy as np

    if not os.path.exists(path):
        raise _UserError(f"no such file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise _UserError(f"{path}: not a .npy or .npz array file ({_one_line(e)})") from e
    if isinstance(data, np.ndarray):
        return data
    arrays = [data[k] for k in data.files]
    if len(arrays) != n_inputs:
        raise _UserError(f"{path} holds {len(arrays)} arrays; the model takes {n_inputs} inputs")
    return [tuple(arrays)]


def _load_source(path: str, batch: int | None, batch_first: bool):
    """The jaxlstm `Model` of a source file, chosen by its extension."""
    if not os.path.exists(path):
        raise _UserError(f"no such file: {path}")
    kind = os.path.splitext(path)[1].lower()
    batch_size = {} if batch in (None, -1) else {"batch_size": batch}
    if kind == ".tflite":
        from jaxlstm.tflite import load_tflite

        model = load_tflite(path)
        _check_batch_change(model, batch)
        return model
    if kind in (".keras", ".h5"):
        from jaxlstm.convert import from_keras

        if kind == ".keras":
            return from_keras(path, **batch_size)
        from jaxlstm.parity.compare import load_keras

        return from_keras(load_keras(path), **batch_size)
    if kind in (".pt", ".pth"):
        return _load_torch(path, batch_size, batch_first)
    raise _UserError(f"{path}: unknown source type {kind or '(no extension)'}; expected .keras, .h5, .tflite or .pt")


def _check_batch_change(model, batch: int | None) -> None:
    """A .tflite file's static batch cannot change on re-export (its state tensors are sized)."""
    first = model.inputs[0]
    shape = model.tensors[first].shape
    axis = model.batch_axes().get(first, 0)
    static = shape[axis] if len(shape) > axis else -1
    if batch is not None and static >= 0 and batch != static:
        raise NotImplementedError(
            f"input {model.tensors[first].name!r} has the static batch {static} (shape {shape}); "
            f"--batch {'dynamic' if batch < 0 else batch} cannot change it on re-export. "
            "Convert from the source model with --batch instead"
        )


def _load_torch(path: str, batch_size: dict, batch_first: bool):
    """An nn.LSTM / nn.RNN / nn.GRU saved whole (torch.save(module)) or as its state_dict."""
    import torch

    from jaxlstm.convert import from_torch

    # weights_only keeps torch.load from running arbitrary pickled code; the three module
    # classes are allowed explicitly.
    modules = (torch.nn.LSTM, torch.nn.RNN, torch.nn.GRU)
    with torch.serialization.safe_globals(list(modules)):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises UnpicklingError or RuntimeError variants
            raise _UserError(
                f"{path}: torch.load(weights_only=True) failed ({str(e).splitlines()[0]}); "
                "save the module's state_dict() instead"
            ) from None
    if isinstance(obj, dict):
        return from_torch(obj, batch_first=batch_first, **batch_size)
    if not isinstance(obj, modules):
        raise _UserError(
            f"{path}: expected a saved torch.nn.LSTM / nn.RNN / nn.GRU or its state_dict, got {type(obj).__name__}"
        )
    return from_torch(obj, **batch_size)


def _inspect(args: argparse.Namespace) -> int:
    from jaxlstm.inspect import format_report, inspect_tflite

    report = inspect_tflite(args.model)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        size = os.path.getsize(args.model)
        print(format_report(report, title=f"{args.model}: {size:,} bytes"))
    return 0


def _parity(args: argparse.Namespace) -> int:
    from jaxlstm.parity.compare import compare, plot_errors

    report = compare(
        args.model,
        source=args.source,
        steps=args.steps,
        seed=args.seed,
        tolerance=args.tolerance,
        source_tolerance=args.source_tolerance,
        progress=not args.json,
        runtime=args.runtime,
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    if args.plot:
        plot_errors(report, args.plot)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0 if report.passed else 1


def _warn(command: str, message: str) -> None:
    print(f"jaxlstm {command}: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
