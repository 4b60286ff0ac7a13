"""Parity of one model across runtimes: LiteRT, jaxlstm and (optionally) the source framework.

`compare` runs a .tflite model in the LiteRT interpreter and in jaxlstm (`load_tflite`), and
the framework model it came from when given, on the same inputs: random ones, and adversarial
ones with large magnitudes that drive LSTM cell states past 10. Each input runs the way a LiteRT
user runs the file: at batch 1 and at a batch > 1 (resizing the input only, plus the state
tensors of a streaming file), and invoked twice without a reset. It reports, per input case,
batch, invoke, pair of runtimes and model output, the max abs / max rel error and pass/fail:

    report = compare("model.tflite", source="model.keras")
    print(report.format()); report.passed; report.semantics; report.to_dict()

The file's semantics decide what the second invoke gives: "predict" (every invoke starts from
zero state) the same as the first, in every runtime; "streaming" (the state carries over) the
continuation of the first, in LiteRT and in jaxlstm (`Model.apply` with the state it returned).
The source, a stateless framework call, is compared with the first invoke (and, for a predict
file, the second).

An element passes when ``|a - b| <= tolerance * max(1, |b|)`` (absolute error for values up to
1, relative beyond; `b` is the reference: LiteRT, or jaxlstm for source-vs-jaxlstm).
``max_rel`` is ``max |a - b| / max(1, |b|)``, the quantity compared with the tolerance.

Fully integer files (int8 / int16 activations) are compared exactly: tolerance 0, integer
outputs as integers (``max_abs`` is then the largest difference in LSBs, and ``mismatched``
counts the differing elements); the source is compared with the dequantized outputs. LiteRT
runs them with its builtin kernels alone: XNNPACK, its default delegate, computes int8
QUANTIZE, DEQUANTIZE, requantization and MUL with its own float rescaling, an LSB away from
the builtin kernels (which jaxlstm reproduces) here and there (on int8 FULLY_CONNECTED, ADD,
SOFTMAX, LOGISTIC and TANH it agreed with them in jaxlstm's tests).
``runtime="tflite-micro"`` compares against TensorFlow Lite Micro's interpreter instead (the
only runtime of int16-activation LSTMs), with jaxlstm reproducing its kernels.

Known quirk, reported rather than hidden: TFLiteConverter writes cell_clip=10 into LSTMs
converted from Keras, which never clips. When a source pair fails and jaxlstm with the clip
removed matches the source, the failure is labelled as this quirk.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxlstm._text import plain
from jaxlstm.model import Model
from jaxlstm.model.operators import RECURRENT
from jaxlstm.model.rewrite import strip_cell_clip

# LiteRT's own float kernel tests compare against goldens at 1e-5 (lstm_test.cc,
# unidirectional_sequence_lstm_test.cc); jaxlstm's hybrid path emulates LiteRT's integer
# arithmetic, so the same bound applies to hybrid models on the jaxlstm-vs-LiteRT pair.
DEFAULT_TOLERANCE = 1e-5
# A float source against an int8-weight (hybrid) model: weight quantization error. Upstream
# hybrid kernel tests allow up to 0.0157651 against the float goldens (lstm_test.cc).
HYBRID_SOURCE_TOLERANCE = 2e-2
# A float source against a fully integer model (dequantized outputs): int8 quantization of
# weights and activations, a dozen output LSBs at the 1/256 of a softmax.
INTEGER_SOURCE_TOLERANCE = 5e-2
RUNTIMES = ("litert", "tflite-micro")
DEFAULT_STEPS = 64  # time steps when the model's time dimension is dynamic
ADVERSARIAL_MAGNITUDE = 10.0  # saturates the gates: |cell state| grows by up to 1 per step
BATCHES = (1, 3)  # the batches of generated inputs when the model's batch is dynamic
INVOKES = 2  # invokes per input, without a reset in between

SEMANTICS = {
    "predict": "every invoke starts from zero state",
    "streaming": "the state carries over from one invoke to the next until reset_all_variables()",
}


@dataclasses.dataclass(frozen=True)
class OutputError:
    """The error of one model output, for one input, invoke and pair of runtimes.

    Attributes:
      case: the input case ("random", "adversarial_flip", "adversarial_rotation", "given").
      batch: the batch size of the input.
      invoke: 1 or 2: the first invoke, or the second on the same input without a reset.
      pair: "<runtime> vs <reference runtime>", e.g. "jaxlstm vs litert".
      output: the model output's name.
      max_abs: max |a - b|.
      max_rel: max |a - b| / max(1, |b|), the quantity held to the tolerance.
      tolerance: the bound `max_rel` was checked against.
      passed: max_rel <= tolerance.
      per_step: max |a - b| per time step when the output has a time axis, else None.
      note: why it failed, when that is known (the cell_clip quirk).
      mismatched: how many elements fail the tolerance.
    """

    case: str
    batch: int
    invoke: int
    pair: str
    output: str
    max_abs: float
    max_rel: float
    tolerance: float
    passed: bool
    per_step: tuple[float, ...] | None = None
    note: str = ""
    mismatched: int = 0


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """The result of `compare`: one `OutputError` per (case, batch, invoke, pair, output).

    Attributes:
      errors: all comparisons.
      hybrid: the model has int8 weights (TFLite's hybrid path).
      steps: the number of time steps of the generated inputs (None for given inputs).
      semantics: "predict" or "streaming" (`SEMANTICS`), as the file runs.
      notes: findings about the model, e.g. the cell_clip quirk.
      integer: the model is fully integer (compared exactly).
      runtime: the interpreter jaxlstm was compared with: "litert" or "tflite-micro".
    """

    errors: tuple[OutputError, ...]
    hybrid: bool
    steps: int | None
    semantics: str = "predict"
    notes: tuple[str, ...] = ()
    integer: bool = False
    runtime: str = "litert"

    @property
    def passed(self) -> bool:
        return all(e.passed for e in self.errors)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: passed, hybrid, integer, runtime, steps, semantics, notes and the
        list of errors."""
        return {
            "passed": self.passed,
            "hybrid": self.hybrid,
            "integer": self.integer,
            "runtime": self.runtime,
            "steps": self.steps,
            "semantics": self.semantics,
            "notes": list(self.notes),
            "errors": [
                {**dataclasses.asdict(e), "per_step": None if e.per_step is None else list(e.per_step)}
                for e in self.errors
            ],
        }

    def format(self) -> str:
        """The file's semantics, a table with one line per comparison, the notes and the verdict."""
        header = (
            "case",
            "batch",
            "invoke",
            "pair",
            "output",
            "max_abs",
            "max_rel",
            "mismatched",
            "tolerance",
            "result",
        )
        rows = [header] + [
            (
                e.case,
                str(e.batch),
                str(e.invoke),
                e.pair,
                e.output,
                f"{e.max_abs:.3g}",
                f"{e.max_rel:.3g}",
                str(e.mismatched),
                f"{e.tolerance:g}",
                "pass" if e.passed else "FAIL" + (" (known quirk: cell_clip=10)" if e.note else ""),
            )
            for e in self.errors
        ]
        widths = [max(len(r[k]) for r in rows) for k in range(len(header) - 1)]
        lines = [f"semantics: {self.semantics} ({SEMANTICS[self.semantics]})"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
        lines += [f"note: {n}" for n in self.notes]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def compare(
    model: str | os.PathLike | bytes | Model | Any,
    *,
    source: str | os.PathLike | Callable[..., Any] | None = None,
    inputs: Sequence[np.ndarray] | np.ndarray | None = None,
    steps: int | None = None,
    seed: int = 0,
    tolerance: float | None = None,
    source_tolerance: float | None = None,
    progress: bool = False,
    runtime: str = "litert",
) -> ParityReport:
    """Runs `model` in LiteRT, jaxlstm and optionally its source framework; reports the errors.

    Args:
      model: a .tflite path or its bytes, or a jaxlstm `Model` (or an object with
        ``to_model()``), which is exported first (`export_tflite`'s defaults).
      source: the framework model it came from: a ``.keras`` / ``.h5`` path (Keras 3 or
        tf_keras), a Keras model, or any callable taking the inputs as NumPy arrays
        [B, T, F] and returning the output(s) in the model's output order.
      inputs: the model inputs (one array per model input), run as case "given"; default:
        generated cases "random" (standard normal), "adversarial_flip" (+-10 per feature,
        the sign of every feature flipping halfway) and "adversarial_rotation" (magnitude
        10, the direction turning once over the sequence), each at the batches `BATCHES`
        (or the model's fixed batch); the adversarial ones push LSTM cell states past 10.
        Integer model inputs take these values quantized (given float inputs too).
      steps: time steps of generated inputs; default: the model's static time dimension,
        else `DEFAULT_STEPS`. Must equal a static time dimension.
      seed: seed of the generated inputs.
      tolerance: the bound for jaxlstm vs the runtime; default `DEFAULT_TOLERANCE` for float
        and hybrid models, 0 for fully integer ones.
      source_tolerance: the bound for pairs involving the source; default `tolerance` for
        float models, `HYBRID_SOURCE_TOLERANCE` for hybrid ones, `INTEGER_SOURCE_TOLERANCE`
        for fully integer ones.
      progress: show a tqdm progress bar.
      runtime: the interpreter to compare with, ``"litert"`` (LiteRT) or ``"tflite-micro"``
        (TensorFlow Lite Micro, which needs static shapes); jaxlstm reproduces its kernels
        (`load_tflite`'s ``runtime``).

    Returns:
      A `ParityReport`.

    Raises:
      FileNotFoundError: a path does not exist.
      ValueError: not a .tflite file; inputs or steps that do not fit the model; source
        outputs that do not match the model outputs; dynamic shapes for TFLite Micro.
      NotImplementedError: the model has operators jaxlstm (or the runtime) cannot run.
    """
    from jaxlstm.inspect import read_tflite_bytes
    from jaxlstm.parity.litert import run_litert, run_tflite_micro
    from jaxlstm.tflite import export_tflite, load_tflite

    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    if isinstance(model, (str, os.PathLike, bytes, bytearray)):
        data = read_tflite_bytes(model)
    else:
        data = export_tflite(model)
    jax_model = load_tflite(data, runtime=runtime)
    semantics = "streaming" if jax_model.stateful else "predict"
    hybrid = _is_hybrid(jax_model)
    integer = _is_integer(jax_model)
    if tolerance is None:
        tolerance = 0.0 if integer else DEFAULT_TOLERANCE
    if source_tolerance is None:
        source_tolerance = INTEGER_SOURCE_TOLERANCE if integer else HYBRID_SOURCE_TOLERANCE if hybrid else tolerance
    source_fn = None if source is None else _source_callable(source)
    unclipped = _unclipped(jax_model) if source_fn is not None and not integer else None
    time_axis = 0 if _time_major(jax_model) else 1
    if runtime == "tflite-micro":
        _check_static(jax_model)
    runs: dict[tuple[str, int], list[np.ndarray]] = {}  # (case, batch) -> inputs
    if inputs is None:
        for batch in _batches(jax_model):
            shapes, steps = _input_shapes(jax_model, steps, time_axis, batch)
            for case, xs in _generated_cases(shapes, time_axis, seed).items():
                runs[(case, batch)] = _model_inputs(jax_model, xs)
    else:
        arrays = [np.asarray(x) for x in ([inputs] if isinstance(inputs, np.ndarray) else inputs)]
        if len(arrays) != len(jax_model.inputs):
            raise ValueError(
                f"the model takes {len(jax_model.inputs)} inputs {jax_model.input_names}, got {len(arrays)}"
            )
        arrays = _model_inputs(jax_model, arrays)
        jax_model.check_inputs(*arrays)
        runs[("given", jax_model.input_batch(*arrays) or 1)] = arrays
        steps = None

    output_names = list(jax_model.signature_names[1])
    state_batch = (lambda batch: batch) if jax_model.stateful else (lambda batch: None)

    def reference(xs: list[np.ndarray], batch: int) -> list[list[np.ndarray]]:
        if runtime == "tflite-micro":
            return run_tflite_micro(data, xs, invocations=INVOKES)
        # Integer models: the builtin kernels alone (XNNPACK rescales in float; module docstring).
        return run_litert(
            data, xs, invocations=INVOKES, reset=False, state_batch=state_batch(batch), xnnpack=not integer
        )

    def jaxlstm(xs: list[np.ndarray], batch: int) -> list[list[np.ndarray]]:
        """One output list per invoke: the state carried (streaming) or zero each time (predict)."""
        outputs, state = jax_model.apply(jax_model.params, None, *xs)
        invokes = [outputs]
        for _ in range(INVOKES - 1):
            if jax_model.stateful:
                outputs, state = jax_model.apply(jax_model.params, state, *xs)
            invokes.append(outputs)  # predict: the same computation from zero state again
        return invokes

    runners: dict[str, Callable] = {runtime: reference, "jaxlstm": jaxlstm}
    if source_fn is not None:
        runners["source"] = lambda xs, batch: [
            source_fn([_real(x, jax_model, i) for i, x in zip(jax_model.inputs, xs)])
        ]
    real_outputs = [functools.partial(_real, model=jax_model, index=i) for i in jax_model.outputs]
    errors: list[OutputError] = []
    with _progress(len(runs) * len(runners), progress) as bar:
        for (case, batch), xs in runs.items():
            results = {}
            for name, run in runners.items():
                bar.set_description(f"{case}, batch {batch}: {name}")
                results[name] = [_as_outputs(r, output_names, name) for r in run(xs, batch)]
                bar.update()
            errors += _case_errors(
                case,
                batch,
                results,
                output_names,
                time_axis,
                tolerance,
                source_tolerance,
                None if unclipped is None else lambda xs=xs: unclipped(*xs),
                source_on_every_invoke=not jax_model.stateful,
                reference=runtime,
                real_outputs=real_outputs,
            )
    notes = ()
    if any(e.note for e in errors):
        notes = (
            "the source and LiteRT differ where the LSTM cell state passes 10; that is "
            "TFLiteConverter's cell_clip=10 on LSTMs from Keras (Keras never clips). "
            "`jaxlstm convert MODEL.tflite --strip-cell-clip -o fixed.tflite` matches Keras.",
        )
    return ParityReport(
        tuple(errors), hybrid, steps, semantics=semantics, notes=notes, integer=integer, runtime=runtime
    )


def plot_errors(report: ParityReport, path: str | os.PathLike) -> None:
    """Draws the parity of every comparison to `path` (PNG).

    Top: the max relative error of each comparison (case, batch, invoke, pair and output) as
    a bar, log scale, against its tolerance: every model has one, whatever its outputs. Below,
    when outputs have a time axis: the max abs error per time step, one line per input case,
    pair and output (the largest over batches and invokes).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    floor = 1e-12  # zero errors on a log scale
    errors = list(report.errors)
    per_step = [e for e in errors if e.per_step is not None]
    heights = [0.25 * len(errors) + 1.2] + ([3.0] if per_step else [])
    fig, axes = plt.subplots(len(heights), 1, figsize=(9, sum(heights)), height_ratios=heights, squeeze=False)
    ax = axes[0, 0]
    pairs = list(dict.fromkeys(e.pair for e in errors))
    colours = {p: f"C{k}" for k, p in enumerate(pairs)}
    rows = np.arange(len(errors))[::-1]
    ax.barh(rows, [max(e.max_rel, floor) for e in errors], color=[colours[e.pair] for e in errors])
    ax.set_yticks(rows, [f"{e.case} b{e.batch} #{e.invoke}: {e.pair} [{e.output}]" for e in errors], fontsize=7)
    for tol in sorted({e.tolerance for e in errors}):
        ax.axvline(tol, color="gray", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("max |a - b| / max(1, |b|)   (dashed: tolerance)")
    verdict = "PASSED" if report.passed else "FAILED"
    ax.set_title(f"parity: {verdict}; semantics {report.semantics} ({SEMANTICS[report.semantics]})", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[p]) for p in pairs]
    ax.legend(handles, pairs, fontsize="small", loc="lower right")
    if per_step:
        ax = axes[1, 0]
        lines: dict[tuple[str, str, str], np.ndarray] = {}
        for e in per_step:
            key = (e.case, e.pair, e.output)
            step = np.maximum(np.asarray(e.per_step), floor)
            lines[key] = step if key not in lines else np.maximum(lines[key], step)
        for (case, pair, output), values in lines.items():
            ax.semilogy(values, label=f"{case}: {pair} [{output}]", linewidth=0.9)
        ax.set_xlabel("time step")
        ax.set_ylabel("max |error|")
        ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- inputs


def _time_major(model: Model) -> bool:
    return any(op.option("time_major", False) for op in model.operators if op.opcode in RECURRENT)


def _batches(model: Model) -> tuple[int, ...]:
    """The batches to run: the first input's fixed batch, or a state tensor's fixed batch, or `BATCHES`."""
    first = model.inputs[0]
    axis = model.batch_axes().get(first, 0)
    shape = model.tensors[first].shape
    if len(shape) > axis and shape[axis] >= 0:
        return (shape[axis],)
    fixed = {t.shape[0] for t in model.tensors if t.is_variable and len(t.shape) == 2 and t.shape[0] >= 0}
    return tuple(sorted(fixed)) if fixed else BATCHES


def _input_shapes(
    model: Model, steps: int | None, time_axis: int, batch: int
) -> tuple[list[tuple[int, ...]], int | None]:
    """Concrete input shapes: dynamic batch -> `batch`, dynamic time -> `steps`."""
    shapes, chosen = [], steps
    axes = model.batch_axes()
    for i in model.inputs:
        t = model.tensors[i]
        shape = list(t.shape)
        if len(shape) == 3:
            static = shape[time_axis]
            if static >= 0 and steps is not None and steps != static:
                raise ValueError(
                    f"input {t.name!r} has a fixed time dimension of {static} (shape {tuple(t.shape)}); "
                    f"steps={steps} cannot be used. Omit steps, or export the model with a dynamic time dimension"
                )
            shape[time_axis] = static if static >= 0 else (steps or DEFAULT_STEPS)
            chosen = shape[time_axis]
        batch_axis = axes.get(i, 0)
        if len(shape) > batch_axis and shape[batch_axis] < 0:
            shape[batch_axis] = batch
        shapes.append(tuple(1 if d < 0 else d for d in shape))
    return shapes, chosen


def _generated_cases(shapes: list[tuple[int, ...]], time_axis: int, seed: int) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    cases: dict[str, list[np.ndarray]] = {"random": [], "adversarial_flip": [], "adversarial_rotation": []}
    for shape in shapes:
        cases["random"].append(rng.standard_normal(shape).astype(np.float32))
        if len(shape) != 3:
            big = (ADVERSARIAL_MAGNITUDE * rng.standard_normal(shape)).astype(np.float32)
            cases["adversarial_flip"].append(big)
            cases["adversarial_rotation"].append(big)
            continue
        batch_axis = 1 - time_axis
        n_time, n_batch, n_feat = shape[time_axis], shape[batch_axis], shape[2]
        t = np.arange(n_time)[:, None, None]
        u = rng.standard_normal((1, n_batch, n_feat))
        v = rng.standard_normal((1, n_batch, n_feat))
        flip = np.where(t < n_time // 2, 1.0, -1.0) * np.sign(u)
        angle = 2 * np.pi * t / n_time
        rotation = (np.cos(angle) * u + np.sin(angle) * v) / np.sqrt((u**2 + v**2).mean(-1, keepdims=True))
        for name, x in (("adversarial_flip", flip), ("adversarial_rotation", rotation)):
            x = (ADVERSARIAL_MAGNITUDE * x).astype(np.float32)  # [T, B, F]
            cases[name].append(x if time_axis == 0 else np.swapaxes(x, 0, 1))
    return cases


# ----------------------------------------------------------------------------- runtimes


def _is_integer(model: Model) -> bool:
    """Whether any activation or state tensor is a quantized integer (a fully integer model)."""
    constants = model.constants
    return any(
        t.dtype in ("int8", "uint8", "int16") and t.scale is not None and (i not in constants or t.is_variable)
        for i, t in enumerate(model.tensors)
    )


def _model_inputs(model: Model, xs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """`xs` as the model's input types: float values for an integer input are quantized
    (``clip(round(x / scale) + zero_point)``), integers pass."""
    arrays = []
    for i, x in zip(model.inputs, xs):
        t = model.tensors[i]
        x = np.asarray(x)
        if t.dtype == "float32" or t.scale is None or np.issubdtype(x.dtype, np.integer):
            arrays.append(x.astype(t.dtype) if np.issubdtype(x.dtype, np.integer) else x.astype(np.float32))
            continue
        info = np.iinfo(t.dtype)
        q = np.rint(x / np.float32(t.scale)) + t.zero_point
        arrays.append(np.clip(q, info.min, info.max).astype(t.dtype))
    return arrays


def _real(x: np.ndarray, model: Model, index: int) -> np.ndarray:
    """The real values of tensor `index`'s integer `x` (``scale * (x - zero_point)``), float32."""
    t = model.tensors[index]
    if t.scale is None or not np.issubdtype(np.asarray(x).dtype, np.integer):
        return np.asarray(x, np.float32)
    return (np.asarray(x, np.int64) - t.zero_point).astype(np.float32) * np.float32(t.scale)


def _check_static(model: Model) -> None:
    """TFLite Micro allocates every tensor at its shape: no dynamic dimensions."""
    dynamic = [t.name for t in model.tensors if any(d < 0 for d in t.shape)]
    if dynamic:
        raise ValueError(
            f"TFLite Micro runs static shapes only, and tensors {dynamic[:3]} have dynamic dimensions; "
            "export the model with batch_size and time_steps (jaxlstm convert --batch N --time-steps T)"
        )


def _is_hybrid(model: Model) -> bool:
    from jaxlstm.ops import QuantizedTensor

    return any(isinstance(v, QuantizedTensor) for v in model.params.values())


def _unclipped(model: Model) -> Model | None:
    stripped, changed = strip_cell_clip(model)
    return stripped if changed else None


def _source_callable(source: Any) -> Callable[[list[np.ndarray]], Any]:
    """A function of the input list; loads a .keras / .h5 path with Keras 3 or tf_keras."""
    if isinstance(source, (str, os.PathLike)):
        source = load_keras(source)
    if hasattr(source, "predict"):  # a Keras model: one input array, or a list of them
        return lambda xs: source(xs[0] if len(xs) == 1 else xs, training=False)
    if callable(source):
        return lambda xs: source(*xs)
    raise TypeError(f"source must be a .keras/.h5 path, a Keras model or a callable, got {type(source).__name__}")


def load_keras(path: str | os.PathLike) -> Any:
    """Loads a Keras model file: ``.keras`` with Keras 3 (JAX backend unless set), ``.h5`` with tf_keras.

    Each format falls back to the other library (tf_keras writes ``.keras`` too).

    Raises:
      FileNotFoundError: no such file.
      ValueError: neither library can load it.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"{path}: expected a Keras model file (.keras or .h5)")
    loaders = [_load_with_keras3, _load_with_tf_keras]
    if path.endswith(".h5"):
        loaders.reverse()
    failures = []
    for load in loaders:
        try:
            return load(path)
        except ImportError as e:
            failures.append(plain(str(e)))
        except Exception as e:  # each library raises its own error types on a foreign file
            failures.append(plain(f"{type(e).__name__}: {e}").splitlines()[0])
    raise ValueError(f"cannot load {path} as a Keras model: {'; '.join(failures)}")


def _load_with_keras3(path: str) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    return keras.saving.load_model(path, compile=False)


def _load_with_tf_keras(path: str) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras

    return tf_keras.models.load_model(path, compile=False)


def _as_outputs(result: Any, names: list[str], runtime: str) -> list[np.ndarray]:
    outputs = list(result) if isinstance(result, (list, tuple)) else [result]
    outputs = [np.asarray(y) for y in outputs]
    outputs = [y if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32) for y in outputs]
    if len(outputs) != len(names):
        raise ValueError(f"{runtime} returned {len(outputs)} outputs, the model has {len(names)} {names}")
    return outputs


# ----------------------------------------------------------------------------- errors


def _error(
    a: np.ndarray, b: np.ndarray, time_axis: int, tolerance: float
) -> tuple[float, float, tuple[float, ...] | None, int]:
    """(max |a - b|, max |a - b| / max(1, |b|), max |a - b| per time step, how many elements
    fail `tolerance`). Integers are compared as integers: the differences are in LSBs."""
    wide = np.int64 if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer) else np.float64
    diff = np.abs(a.astype(wide) - b.astype(wide)).astype(np.float64)
    scale = np.maximum(1.0, np.abs(b.astype(np.float64)))
    max_abs = float(diff.max()) if diff.size else 0.0
    max_rel = float((diff / scale).max()) if diff.size else 0.0
    mismatched = int(np.count_nonzero(~(diff <= tolerance * scale)))  # NaN fails
    per_step = None
    if diff.ndim == 3:
        other = tuple(k for k in range(3) if k != time_axis)
        per_step = tuple(float(v) for v in diff.max(axis=other))
    return max_abs, max_rel, per_step, mismatched


def _case_errors(
    case: str,
    batch: int,
    results: dict[str, list[list[np.ndarray]]],
    names: list[str],
    time_axis: int,
    tolerance: float,
    source_tolerance: float,
    unclipped: Callable[[], list] | None,
    *,
    source_on_every_invoke: bool,
    reference: str = "litert",
    real_outputs: Sequence[Callable[[np.ndarray], np.ndarray]] = (),
) -> list[OutputError]:
    """The comparisons of one input: each invoke of jaxlstm vs the `reference` runtime, and
    the source (one stateless call) vs the first invoke, or every invoke of a predict file
    (integer outputs as their real values, `real_outputs`)."""
    comparisons = []
    for invoke in range(1, len(results[reference]) + 1):
        comparisons.append(("jaxlstm", invoke, reference, invoke, tolerance))
        if "source" in results and (invoke == 1 or source_on_every_invoke):
            comparisons.append(("source", 1, reference, invoke, source_tolerance))
            if invoke == 1:
                comparisons.append(("source", 1, "jaxlstm", 1, source_tolerance))
    errors, unclipped_outputs = [], None
    for a, a_invoke, b, invoke, tol in comparisons:
        for k, (name, ya, yb) in enumerate(zip(names, results[a][a_invoke - 1], results[b][invoke - 1])):
            if ya.shape != yb.shape:
                raise ValueError(f"output {name!r}: {a} gives shape {ya.shape}, {b} gives {yb.shape}")
            if a == "source" and real_outputs:
                yb = real_outputs[k](yb)
            max_abs, max_rel, per_step, mismatched = _error(ya, yb, time_axis, tol)
            passed, note = max_rel <= tol, ""
            if not passed and a == "source" and unclipped is not None:
                if unclipped_outputs is None:
                    unclipped_outputs = [np.asarray(y) for y in unclipped()]
                _, rel_unclipped, _, _ = _error(ya, unclipped_outputs[k], time_axis, tol)
                if rel_unclipped <= tol:
                    note = (
                        f"cell_clip=10 quirk: jaxlstm without the clip matches the source (max_rel {rel_unclipped:.2g})"
                    )
            errors.append(
                OutputError(
                    case, batch, invoke, f"{a} vs {b}", name, max_abs, max_rel, tol, passed, per_step, note, mismatched
                )
            )
    return errors


def _progress(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, leave=False, unit="run")
