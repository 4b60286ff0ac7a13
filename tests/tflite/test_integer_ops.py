"""The integer builtin operators around recurrent layers, bit for bit: jaxlstm against LiteRT's
builtin kernels and TensorFlow Lite Micro.

Every case is one operator with its own inputs and output; all cases of a runtime share one
model written by jaxlstm's exporter, run in the interpreter and in `load_tflite(...,
runtime=...)` over two invokes with different inputs, and compared exactly. Scales, zero
points, activations and shapes are chosen to reach the places where the kernels round or
saturate differently: ties (power-of-two scales), the scalar tails of LiteRT's vector loops
(sizes that are not multiples of 8 or 16), broadcasting, saturation and int16 overflow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from jaxlstm.model import ModelBuilder
from jaxlstm.ops import QuantizedTensor, QuantParams
from jaxlstm.tflite import export_tflite, load_tflite
from tests.tflite.integer_models import (
    Config,
    integer_model,
    jaxlstm_invokes,
    litert_invokes,
    micro_invokes,
    random_inputs,
)

RNG = np.random.default_rng(2020)
INVOKES = 2


@dataclasses.dataclass(frozen=True)
class Activation:
    """A runtime tensor: a model input, or the operator's output."""

    shape: tuple[int, ...]
    dtype: str
    quantization: QuantParams | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    """One operator: `operands` are activations (model inputs), constants (weights and
    biases) or None (an absent optional input)."""

    name: str
    opcode: str
    operands: tuple[Any, ...]
    output: Activation
    options: tuple[tuple[str, Any], ...] = ()
    micro: bool = True  # TFLite Micro runs it (it has no uint8 kernels)

    def __str__(self) -> str:
        return self.name


def _scale(low: float = -3, high: float = 0) -> float:
    return float(np.float32(10 ** RNG.uniform(low, high)))


def q(scale: float, zero_point: int = 0) -> QuantParams:
    return QuantParams(float(np.float32(scale)), zero_point)


def weights(n_out: int, n_in: int, scale: float | np.ndarray) -> QuantizedTensor:
    return QuantizedTensor(RNG.integers(-127, 128, (n_out, n_in)).astype(np.int8), np.asarray(scale, np.float32))


def bias(n: int, dtype: str, scale: float | np.ndarray) -> QuantizedTensor:
    return QuantizedTensor(RNG.integers(-30000, 30000, n).astype(dtype), np.asarray(scale, np.float32).reshape(-1))


def _quantize_cases() -> list[Case]:
    shape = (3, 21)  # 63 elements: a vector loop of 8 and a tail of 7
    cases = [
        Case(
            f"quantize_float_to_{dt}_scale_{s:g}",
            "QUANTIZE",
            (Activation(shape, "float32"),),
            Activation(shape, dt, q(s, z)),
            (),
            dt != "uint8",
        )
        for dt, s, z in (("int8", 0.05, -3), ("uint8", 0.02, 131), ("int16", 2**-10, 0), ("int8", 2**-4, 5))
    ]
    for src, dst in (
        ("int8", "int8"),
        ("int8", "uint8"),
        ("uint8", "int8"),
        ("int16", "int8"),
        ("int16", "int16"),
        ("int8", "int16"),
    ):
        zp = {"int8": -7, "uint8": 120, "int16": 0}
        x = Activation((2, 23), src, q(_scale(), zp[src]))  # 46: a vector loop of 16, a tail of 14
        cases.append(
            Case(
                f"requantize_{src}_to_{dst}",
                "QUANTIZE",
                (x,),
                Activation(x.shape, dst, q(_scale(), zp[dst] + (3 if dst != "int16" else 0))),
                (),
                "uint8" not in (src, dst),
            )
        )
    for dt, z in (("int8", 9), ("uint8", 125), ("int16", 0)):
        cases.append(
            Case(
                f"dequantize_{dt}",
                "DEQUANTIZE",
                (Activation(shape, dt, q(_scale(), z)),),
                Activation(shape, "float32"),
                (),
                dt != "uint8",
            )
        )
    return cases


def _fully_connected_cases() -> list[Case]:
    cases = []
    for k, (dt, per_channel, bias_type, activation, keep) in enumerate(
        (
            ("int8", False, "int32", "NONE", False),
            ("int8", False, "int32", "RELU", True),
            ("int8", True, "int32", "RELU6", False),
            ("int8", True, None, "RELU_N1_TO_1", False),
            ("int16", False, "int64", "NONE", False),
            ("int16", True, "int64", "RELU", False),
            ("int16", False, "int32", "NONE", True),
            ("int16", True, None, "NONE", False),
        )
    ):
        n_in, n_out = 7 + k, 5
        x = q(_scale(-2, 0), int(RNG.integers(-10, 10)) if dt == "int8" else 0)
        y = q(_scale(-2, 0.5) if dt == "int8" else _scale(-4, -2), int(RNG.integers(-10, 10)) if dt == "int8" else 0)
        w_scale = np.float32(10 ** RNG.uniform(-3, -1, (n_out, 1))) if per_channel else _scale(-3, -1)
        shape = (2, 3, n_in) if keep else (3, n_in)
        b = None if bias_type is None else bias(n_out, bias_type, np.float32(x.scale) * np.asarray(w_scale, np.float32))
        out_shape = shape[:-1] + (n_out,) if keep else (3, n_out)
        name = f"fully_connected_{dt}_{'per_channel' if per_channel else 'per_tensor'}_{bias_type or 'no'}_bias_{activation.lower()}"
        cases.append(
            Case(
                name + ("_keep_num_dims" if keep else ""),
                "FULLY_CONNECTED",
                (Activation(shape, dt, x), weights(n_out, n_in, w_scale), b),
                Activation(out_shape, dt, y),
                (("fused_activation_function", activation), ("keep_num_dims", keep)),
            )
        )
    return cases


def _activation_cases() -> list[Case]:
    cases = []
    outputs = {
        ("LOGISTIC", "int8"): q(1 / 256, -128),
        ("TANH", "int8"): q(1 / 128, 0),
        ("LOGISTIC", "uint8"): q(1 / 256, 0),
        ("TANH", "uint8"): q(1 / 128, 128),
    }
    for opcode in ("LOGISTIC", "TANH"):
        for dt, scale, zp in (
            ("int8", 0.06, 4),
            ("int8", 2**-5, 0),
            ("uint8", 0.05, 130),
            ("int16", 2**-12, 0),
            ("int16", 2**-11, 0),
            ("int16", 0.0007, 0),
        ):
            out = outputs.get((opcode, dt), q(2**-15, 0))
            shape = (4, 37)
            cases.append(
                Case(
                    f"{opcode.lower()}_{dt}_scale_{scale:g}",
                    opcode,
                    (Activation(shape, dt, q(scale, zp)),),
                    Activation(shape, dt, out),
                    (),
                    dt != "uint8",
                )
            )
    for dt, out_dt, out, beta in (
        ("int8", "int8", q(1 / 256, -128), 1.0),
        ("int8", "int8", q(1 / 256, -128), 0.7),
        ("int8", "int16", q(1 / 65536, -32768), 1.0),
        ("int16", "int16", q(1 / 32768, 0), 1.0),
        ("uint8", "uint8", q(1 / 256, 0), 1.0),
    ):
        x = q(_scale(-2, -0.5), 0 if dt == "int16" else 3 + (128 if dt == "uint8" else 0))
        shape = (5, 11)
        cases.append(
            Case(
                f"softmax_{dt}_to_{out_dt}_beta_{beta:g}",
                "SOFTMAX",
                (Activation(shape, dt, x),),
                Activation(shape, out_dt, out),
                (("beta", beta),),
                dt != "uint8",
            )
        )
    return cases


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _binary_cases() -> list[Case]:
    cases = []
    shapes = (((3, 21), (3, 21)), ((3, 21), (1, 21)), ((3, 21), (3, 1)), ((1,), (37,)), ((2, 3, 17), (1, 3, 1)))
    for opcode in ("ADD", "MUL"):
        for k, (a_shape, b_shape) in enumerate(shapes):
            a, b = q(_scale(), int(RNG.integers(-9, 9))), q(_scale(), int(RNG.integers(-9, 9)))
            # A small output scale drives results past int16, where LiteRT's vector loop wraps.
            y_scale = (max(a.scale, b.scale) if opcode == "ADD" else a.scale * b.scale) * (0.01 if k == 0 else 2.0)
            activation = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1", "NONE")[k]
            out = Activation(np.broadcast_shapes(a_shape, b_shape), "int8", q(y_scale, int(RNG.integers(-9, 9))))
            name = f"{opcode.lower()}_int8_{_dims(a_shape)}_by_{_dims(b_shape)}_{activation.lower()}"
            cases.append(
                Case(
                    name,
                    opcode,
                    (Activation(a_shape, "int8", a), Activation(b_shape, "int8", b)),
                    out,
                    (("fused_activation_function", activation),),
                )
            )
        shape = (3, 21)
        cases.append(
            Case(
                f"{opcode.lower()}_int16",
                opcode,
                (Activation(shape, "int16", q(_scale(-4, -2))), Activation(shape, "int16", q(_scale(-4, -2)))),
                Activation(shape, "int16", q(_scale(-4, -1) if opcode == "ADD" else 1e-6)),
                (("fused_activation_function", "NONE"), ("pot_scale_int16", False))
                if opcode == "ADD"
                else (("fused_activation_function", "NONE"),),
            )
        )
    # pot_scale_int16 (the schema default): LiteRT's power-of-two path, TFLite Micro's general one.
    shape = (3, 21)
    cases.append(
        Case(
            "add_int16_power_of_two_scales",
            "ADD",
            (Activation(shape, "int16", q(2**-12)), Activation(shape, "int16", q(2**-14))),
            Activation(shape, "int16", q(2**-12)),
            (("fused_activation_function", "NONE"),),
        )
    )
    return cases


def _concatenation_cases() -> list[Case]:
    cases = []
    for dt, zp in (("int8", -5), ("int16", 0)):
        x = q(_scale(), zp)
        cases.append(
            Case(
                f"concatenation_{dt}",
                "CONCATENATION",
                (Activation((2, 5), dt, x), Activation((2, 3), dt, x)),
                Activation((2, 8), dt, x),
                (("axis", -1), ("fused_activation_function", "NONE")),
            )
        )
    # uint8 inputs with other quantizations than the output are requantized (concatenation.cc).
    inputs = (Activation((2, 5), "uint8", q(0.02, 128)), Activation((2, 3), "uint8", q(0.05, 100)))
    cases.append(
        Case(
            "concatenation_uint8_requantized",
            "CONCATENATION",
            inputs,
            Activation((2, 8), "uint8", q(0.03, 120)),
            (("axis", 1), ("fused_activation_function", "NONE")),
            micro=False,
        )
    )
    return cases


CASES = [*_quantize_cases(), *_fully_connected_cases(), *_activation_cases(), *_binary_cases(), *_concatenation_cases()]
MICRO_CASES = [c for c in CASES if c.micro]


def build(cases: list[Case]):
    """One model holding every case: inputs ``c<k>_<i>``, outputs ``c<k>``."""
    b = ModelBuilder()
    outputs = []
    for k, case in enumerate(cases):
        refs = []
        for i, operand in enumerate(case.operands):
            if isinstance(operand, Activation):
                refs.append(b.add_input(f"c{k}_{i}", operand.shape, operand.dtype, operand.quantization))
            else:
                refs.append(None if operand is None else b.add_constant(f"c{k}_constant_{i}", operand))
        out = b.add_intermediate(f"c{k}", case.output.shape, case.output.dtype, case.output.quantization)
        b.add_operator(case.opcode, refs, [out], **dict(case.options))
        outputs.append(out)
    return b.build(outputs)


def _values(operand: Activation, rng: np.random.Generator) -> np.ndarray:
    if operand.dtype != "float32":
        info = np.iinfo(operand.dtype)
        return rng.integers(info.min, int(info.max) + 1, operand.shape).astype(operand.dtype)
    # Floats for QUANTIZE: halfway between quantization levels (ties), ordinary values, and
    # values beyond int32 (and NaN), which convert to INT32_MIN.
    ties = (rng.integers(-300, 300, operand.shape) + 0.5).astype(np.float32)
    x = np.where(rng.random(operand.shape) < 0.5, ties, rng.normal(scale=200, size=operand.shape)).astype(np.float32)
    x.reshape(-1)[:4] = [np.inf, -np.inf, np.nan, 3e10]
    x.reshape(-1)[-2:] = [-3e10, np.nan]  # in the scalar tail too
    return x


def inputs(cases: list[Case], seed: int) -> list[list[np.ndarray]]:
    """The model inputs of each invoke; float inputs in units of their QUANTIZE's scale."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(INVOKES):
        xs = []
        for case in cases:
            for operand in case.operands:
                if isinstance(operand, Activation):
                    x = _values(operand, rng)
                    xs.append(x * np.float32(case.output.quantization.scale) if x.dtype == np.float32 else x)
        runs.append(xs)
    return runs


@pytest.fixture(scope="module")
def litert_runs():
    data = export_tflite(build(CASES))
    xs = inputs(CASES, 0)
    return jaxlstm_invokes(load_tflite(data), xs), litert_invokes(data, xs), data, xs


@pytest.fixture(scope="module")
def micro_runs():
    data = export_tflite(build(MICRO_CASES))
    xs = inputs(MICRO_CASES, 1)
    return jaxlstm_invokes(load_tflite(data, runtime="tflite-micro"), xs), micro_invokes(data, xs, len(MICRO_CASES))


def _assert_exact(ours, theirs, k: int) -> None:
    for invoke, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"invoke {invoke}", strict=True)


@pytest.mark.parametrize("k", range(len(CASES)), ids=[str(c) for c in CASES])
def test_litert_bit_exact(litert_runs, k):
    ours, theirs, _, _ = litert_runs
    _assert_exact(ours, theirs, k)


@pytest.mark.parametrize("k", range(len(MICRO_CASES)), ids=[str(c) for c in MICRO_CASES])
def test_tflite_micro_bit_exact(micro_runs, k):
    ours, theirs = micro_runs
    _assert_exact(ours, theirs, k)


def test_the_runtimes_differ_where_their_kernels_do():
    """The same file in both runtimes: LiteRT's float tables, NEON rounding and gemmlowp
    int16 activations against TFLite Micro's fixed point, reference rounding and table."""
    data = export_tflite(build(MICRO_CASES))
    xs = inputs(MICRO_CASES, 2)
    lite, micro = litert_invokes(data, xs)[0], micro_invokes(data, xs, len(MICRO_CASES))[0]
    differ = {c.name for c, a, b in zip(MICRO_CASES, lite, micro) if not np.array_equal(a, b)}
    for expected in (
        "quantize_float_to_int8_scale_0.05",
        "tanh_int16_scale_0.000244141",
        "logistic_int16_scale_0.000244141",
    ):
        assert expected in differ, sorted(differ)


def test_jit_matches_eager():
    cases = CASES[::3]
    data, xs = export_tflite(build(cases)), inputs(cases, 3)
    model = load_tflite(data)
    jitted, _ = jax.jit(model.apply)(model.params, None, *xs[0])
    eager, _ = model.apply(model.params, None, *xs[0])
    for a, b in zip(jitted, eager):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- refused at load


def _single(case: Case) -> bytes:
    return export_tflite(build([case]))


INVALID = {
    "softmax_int8_output_zero_point": Case(
        "x", "SOFTMAX", (Activation((2, 4), "int8", q(0.1, 0)),), Activation((2, 4), "int8", q(1 / 256, 0))
    ),
    "logistic_int8_output_scale": Case(
        "x", "LOGISTIC", (Activation((2, 4), "int8", q(0.1, 0)),), Activation((2, 4), "int8", q(1 / 128, -128))
    ),
    "tanh_int16_zero_point": Case(
        "x", "TANH", (Activation((2, 4), "int16", q(2**-12, 3)),), Activation((2, 4), "int16", q(2**-15))
    ),
    "add_int16_power_of_two_shifts": Case(
        "x",
        "ADD",
        (Activation((2, 4), "int16", q(2**-10)), Activation((2, 4), "int16", q(2**-14))),
        Activation((2, 4), "int16", q(2**-12)),
        (("fused_activation_function", "NONE"),),
    ),
    "concatenation_int8_scales_differ": Case(
        "x",
        "CONCATENATION",
        (Activation((2, 4), "int8", q(0.1)), Activation((2, 4), "int8", q(0.2))),
        Activation((2, 8), "int8", q(0.2)),
        (("axis", 1), ("fused_activation_function", "NONE")),
    ),
    "fully_connected_bias_scale": Case(
        "x",
        "FULLY_CONNECTED",
        (Activation((2, 4), "int8", q(0.1)), weights(3, 4, 0.01), bias(3, "int32", 0.5)),
        Activation((2, 3), "int8", q(0.05)),
        (("fused_activation_function", "NONE"),),
    ),
    "fully_connected_tanh": Case(
        "x",
        "FULLY_CONNECTED",
        (Activation((2, 4), "int8", q(0.1)), weights(3, 4, 0.01), None),
        Activation((2, 3), "int8", q(0.05)),
        (("fused_activation_function", "TANH"),),
    ),
}


@pytest.mark.parametrize("case", INVALID.values(), ids=list(INVALID))
def test_what_litert_refuses_is_refused_at_load(case):
    data = _single(case)
    with pytest.raises((RuntimeError, ValueError)):
        Interpreter(
            model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ).allocate_tensors()
    with pytest.raises(ValueError, match=case.opcode):
        load_tflite(data)


def test_tflite_micro_has_no_uint8_kernels():
    case = next(c for c in CASES if c.name == "dequantize_uint8")
    data = _single(case)
    load_tflite(data)
    with pytest.raises(NotImplementedError, match="TFLite Micro's kernels take int8 and int16"):
        load_tflite(data, runtime="tflite-micro")


def test_uint8_arithmetic_is_not_supported():
    shape = (2, 4)
    case = Case(
        "x",
        "ADD",
        (Activation(shape, "uint8", q(0.1, 128)), Activation(shape, "uint8", q(0.1, 128))),
        Activation(shape, "uint8", q(0.2, 128)),
        (("fused_activation_function", "NONE"),),
    )
    with pytest.raises(NotImplementedError, match="ADD: input 'c0_0' is uint8"):
        load_tflite(_single(case))


# ----------------------------------------------------------------------------- predict export


@pytest.mark.parametrize("activations", ["int8", "int16"])
def test_predict_export_restarts_from_zero_state_in_every_runtime(activations):
    """``export_tflite`` (predict) zeroes an integer state with a QUANTIZE of a float FILL,
    which LiteRT and TFLite Micro both run (TFLite Micro's FILL writes float32 and int32
    only): every invoke equals the first, and jaxlstm's fresh-state call. int16 activations
    run in TFLite Micro only."""
    configs = [Config(batch=2, time=4)]
    rng = np.random.default_rng(5)
    data = export_tflite(integer_model(rng, configs, activations).replace(stateful=False))
    xs = random_inputs(rng, configs, activations)
    runs = {"tflite-micro": micro_invokes(data, [xs, xs], 1)}
    if activations == "int8":
        runs["litert"] = litert_invokes(data, [xs, xs])
    for runtime, (first, second) in runs.items():
        np.testing.assert_array_equal(first[0], second[0], err_msg=runtime)
        np.testing.assert_array_equal(first[0], load_tflite(data, runtime=runtime)(*xs)[0], err_msg=runtime)
