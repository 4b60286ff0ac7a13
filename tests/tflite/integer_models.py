"""Fully integer LSTM models for the parity tests: random float weights and calibration
ranges, quantized by `jaxlstm.quantization.quantize_lstm` and built with `ModelBuilder`."""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxlstm.model import Model, ModelBuilder
from jaxlstm.ops import GATES, LSTMOptions, LSTMWeights
from jaxlstm.quantization import LSTMRanges, quantize_lstm


@dataclasses.dataclass(frozen=True)
class Config:
    """One integer LSTM: sizes, optional parts, options, layout and operator."""

    n_input: int = 3
    n_cell: int = 4
    n_output: int | None = None  # None: n_cell (no projection) or 3
    batch: int = 2
    time: int = 3
    cifg: bool = False
    peephole: bool = False
    projection: bool = False
    projection_bias: bool = False
    layer_norm: bool = False
    cell_clip: float = 0.0
    proj_clip: float = 0.0
    time_major: bool = False
    single_step: bool = False  # the LSTM op instead of UNIDIRECTIONAL_SEQUENCE_LSTM
    weight_scale: float = 0.5  # the float weights' standard deviation

    @property
    def outputs(self) -> int:
        if self.n_output is not None:
            return self.n_output
        return 3 if self.projection else self.n_cell

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.single_step:
            return (self.batch, self.n_input)
        if self.time_major:
            return (self.time, self.batch, self.n_input)
        return (self.batch, self.time, self.n_input)

    def __str__(self) -> str:
        parts = [f"b{self.batch}", f"t{self.time}", f"i{self.n_input}", f"c{self.n_cell}", f"o{self.outputs}"]
        flags = ("cifg", "peephole", "projection", "projection_bias", "layer_norm", "time_major", "single_step")
        parts += [f for f in flags if getattr(self, f)]
        parts += [f"{k}{getattr(self, k)}" for k in ("cell_clip", "proj_clip") if getattr(self, k)]
        return "_".join(parts)


def float_weights(rng: np.random.Generator, c: Config) -> LSTMWeights:
    def normal(*shape: int) -> np.ndarray:
        return (rng.normal(size=shape) * c.weight_scale).astype(np.float32)

    fields = {}
    for g in GATES[1:] if c.cifg else GATES:
        fields[f"input_to_{g}_weights"] = normal(c.n_cell, c.n_input)
        fields[f"recurrent_to_{g}_weights"] = normal(c.n_cell, c.outputs)
        fields[f"{g}_gate_bias"] = normal(c.n_cell)
        if c.peephole and g != "cell":
            fields[f"cell_to_{g}_weights"] = normal(c.n_cell)
        if c.layer_norm:
            fields[f"{g}_layer_norm_coefficients"] = normal(c.n_cell) + 1
    if c.projection:
        fields["projection_weights"] = normal(c.outputs, c.n_cell)
        if c.projection_bias:
            fields["projection_bias"] = normal(c.outputs)
    return LSTMWeights(**fields)


def calibration_ranges(rng: np.random.Generator) -> LSTMRanges:
    """Random ranges of the sizes calibration gives (cells up to +-20: scales 2^-15 to 2^-10)."""

    def span(low: float, high: float) -> tuple[float, float]:
        return -float(rng.uniform(low, high)), float(rng.uniform(low, high))

    return LSTMRanges(
        input=span(0.5, 3),
        output=span(0.3, 1),
        cell_state=span(0.5, 20),
        hidden=span(0.3, 1),
        gates=tuple(span(1, 8) for _ in GATES),
    )


def integer_model(rng: np.random.Generator, configs: list[Config], activations: str = "int8") -> Model:
    """One subgraph holding one integer LSTM per config, each with its own input and output.

    A streaming model (`Model.stateful`): exported, its invokes carry the state, so two
    invokes check the carried state as well."""
    b = ModelBuilder()
    outputs = []
    for k, c in enumerate(configs):
        weights, quantization = quantize_lstm(float_weights(rng, c), calibration_ranges(rng), activations=activations)
        options = LSTMOptions(cell_clip=c.cell_clip, proj_clip=c.proj_clip, time_major=c.time_major)
        x = b.add_input(f"x{k}", c.input_shape, activations, quantization.input)
        add = b.add_lstm_cell if c.single_step else b.add_lstm
        outputs.append(add(x, weights, options, name=f"lstm{k}", quantization=quantization))
    return b.build(outputs, [f"y{k}" for k in range(len(configs))]).replace(stateful=True)


def random_inputs(rng: np.random.Generator, configs: list[Config], activations: str = "int8") -> list[np.ndarray]:
    info = np.iinfo(activations)
    return [rng.integers(info.min, info.max + 1, size=c.input_shape).astype(activations) for c in configs]


def run_twice(model: Model, inputs: list[np.ndarray]) -> list[tuple[list[np.ndarray], dict[str, np.ndarray]]]:
    """(outputs, state) after each of two `apply` calls from a fresh state, the state carried
    over: like two interpreter invokes."""
    state = model.init_state()
    runs = []
    for _ in range(2):
        outputs, state = model.apply(model.params, state, *inputs)
        runs.append(([np.asarray(y) for y in outputs], {k: np.asarray(v) for k, v in state.items()}))
    return runs


def litert_invokes(data: bytes, inputs: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """The outputs of one LiteRT interpreter (builtin kernels, no XNNPACK) invoked once per
    entry of `inputs` (a list of input arrays per invoke), without a reset."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    runs = []
    for xs in inputs:
        for d, x in zip(interpreter.get_input_details(), xs):
            interpreter.set_tensor(d["index"], x)
        interpreter.invoke()
        runs.append([interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()])
    return runs


def micro_invokes(data: bytes, inputs: list[list[np.ndarray]], n_outputs: int) -> list[list[np.ndarray]]:
    """Like `litert_invokes`, in TFLite Micro's interpreter (skips the test without it)."""
    import pytest

    runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")
    interpreter = runtime.Interpreter.from_bytes(data, arena_size=8 << 20)
    runs = []
    for xs in inputs:
        for k, x in enumerate(xs):
            interpreter.set_input(x, k)
        interpreter.invoke()
        runs.append([interpreter.get_output(k).copy() for k in range(n_outputs)])
    return runs


def jaxlstm_invokes(model: Model, inputs: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """`model.apply` once per entry of `inputs`, the state carried over: like the interpreters."""
    state = model.init_state()
    runs = []
    for xs in inputs:
        outputs, state = model.apply(model.params, state, *xs)
        runs.append([np.asarray(y) for y in outputs])
    return runs
