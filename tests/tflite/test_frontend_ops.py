"""Front-end and glue operators (convolutions, pools, masking and shape ops): one-operator models,
our kernels against LiteRT's builtin kernels and its default XNNPACK delegate.

Each case is exported, loaded back (`load_tflite`, as a converted file would be) and run eagerly
and under `jax.jit`; LiteRT computes the output shapes itself (Prepare), so they are checked too.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxlstm.model import ModelBuilder, Operator
from jaxlstm.model.graph import options_tuple
from jaxlstm.model.runtime import run_operator
from jaxlstm.ops import QuantizedTensor, quantize_symmetric
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite

EXACT = 0.0  # elementwise, selection and indexing ops: the same float operations as LiteRT
SUMS = 1e-5  # convolutions, average pools and means: float32 sums in another order (~1e-6 of ~10)


@dataclasses.dataclass(frozen=True)
class Case:
    """One operator: runtime inputs ("x") and constants ("c") by position, and its options."""

    name: str
    opcode: str
    operands: tuple[tuple[str, np.ndarray | QuantizedTensor], ...]
    options: tuple[tuple[str, object], ...] = ()
    tolerance: float = EXACT
    xnnpack: str | None = None  # why the XNNPACK delegate quantizes differently, if it does
    xnnpack_rtol: float = 0.0  # XNNPACK's own approximations, relative

    def __str__(self):
        return self.name

    def export(self) -> tuple[bytes, list[np.ndarray]]:
        b = ModelBuilder()
        refs, inputs, values = [], [], []
        for k, (kind, value) in enumerate(self.operands):
            if kind == "x":
                refs.append(b.add_input(f"x{k}", value.shape, value.dtype.name))
                inputs.append(value)
            else:
                refs.append(b.add_constant(f"c{k}", value))
            values.append(value)
        # Declared output shapes and types from our kernel; LiteRT recomputes them in Prepare.
        op = Operator(self.opcode, tuple(range(len(values))), (), self.options)
        outputs, _ = run_operator(op, values)
        outs = [b.add_intermediate(f"y{k}", np.shape(y), np.asarray(y).dtype.name) for k, y in enumerate(outputs)]
        b.add_operator(self.opcode, refs, outs, **dict(self.options))
        return export_tflite(b.build(outs)), inputs


def case(name, opcode, *operands, tolerance=EXACT, xnnpack=None, xnnpack_rtol=0.0, **options) -> Case:
    return Case(name, opcode, operands, options_tuple(options), tolerance, xnnpack, xnnpack_rtol)


RNG = np.random.default_rng(0)


def f32(*shape, scale=1.0) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def per_channel(w: np.ndarray, axis: int) -> QuantizedTensor:
    """Symmetric int8 with one scale per channel of `axis`, as the converter quantizes filters."""
    others = tuple(a for a in range(w.ndim) if a != axis)
    scale = np.abs(w).max(axis=others, keepdims=True) / 127
    return QuantizedTensor(np.round(w / scale).astype(np.int8), scale.astype(np.float32))


def equal_scales(w: np.ndarray) -> QuantizedTensor:
    """Per-channel layout (a scale per output channel) with every scale equal."""
    q = quantize_symmetric(w)
    return QuantizedTensor(q.values, np.full((w.shape[0], 1, 1, 1), q.scale, np.float32))


def window(padding="SAME", stride=(1, 1), dilation=(1, 1), activation="NONE") -> dict:
    return {
        "padding": padding,
        "stride_h": stride[0],
        "stride_w": stride[1],
        "dilation_h_factor": dilation[0],
        "dilation_w_factor": dilation[1],
        "fused_activation_function": activation,
    }


def pool(size, padding="SAME", stride=(1, 1), activation="NONE") -> dict:
    options = window(padding, stride, activation=activation)
    del options["dilation_h_factor"], options["dilation_w_factor"]
    return {**options, "filter_height": size[0], "filter_width": size[1]}


XNNPACK_SYMMETRIC = "XNNPACK quantizes the input asymmetrically where the builtin kernel is symmetric"
XNNPACK_RSQRT = 4e-7  # XNNPACK approximates rsqrt within a few ulps; the builtin kernel divides
XNNPACK_PER_PIXEL = "XNNPACK runs a 1x1 hybrid convolution as FULLY_CONNECTED: one input scale per pixel"
IMAGE = ("x", f32(2, 7, 6, 4))


def conv(name, filters, quantize=None, groups=1, xnnpack=None, **win):
    w = f32(6, filters[0], filters[1], 4 // groups, scale=0.5)
    w = w if quantize is None else quantize(w)
    xnnpack = XNNPACK_SYMMETRIC if quantize in (quantize_symmetric, equal_scales) else xnnpack
    return case(name, "CONV_2D", IMAGE, ("c", w), ("c", f32(6)), tolerance=SUMS, xnnpack=xnnpack, **window(**win))


def depthwise(name, filters, multiplier=1, hybrid=False, **win):
    w = f32(1, filters[0], filters[1], 4 * multiplier, scale=0.5)
    w = per_channel(w, 3) if hybrid else w
    operands = (IMAGE, ("c", w), ("c", f32(4 * multiplier)))
    return case(name, "DEPTHWISE_CONV_2D", *operands, tolerance=SUMS, depth_multiplier=multiplier, **window(**win))


def by_channel(w):
    return per_channel(w, 0)


CONVOLUTIONS = [
    conv("conv_same", (3, 2)),
    conv("conv_valid_stride_relu6", (3, 3), padding="VALID", stride=(2, 1), activation="RELU6"),
    conv("conv_dilated_strided_relu", (3, 2), stride=(1, 2), dilation=(2, 1), activation="RELU"),
    conv("conv_1x1", (1, 1)),
    conv("conv_grouped", (3, 3), groups=2),
    conv("hybrid_conv_same", (3, 2), by_channel),
    conv("hybrid_conv_valid_stride_relu6", (3, 3), by_channel, padding="VALID", stride=(2, 1), activation="RELU6"),
    conv("hybrid_conv_dilated_relu_n1_to_1", (3, 2), by_channel, dilation=(2, 2), activation="RELU_N1_TO_1"),
    conv("hybrid_conv_1x1", (1, 1), by_channel, xnnpack=XNNPACK_PER_PIXEL),
    conv("hybrid_conv_grouped", (3, 3), by_channel, groups=2),
    conv("hybrid_conv_per_tensor", (3, 2), quantize_symmetric),
    conv("hybrid_conv_equal_scales", (3, 3), equal_scales, padding="VALID"),
    depthwise("depthwise_same", (3, 3)),
    depthwise("depthwise_multiplier_valid_stride", (3, 2), 2, padding="VALID", stride=(2, 2), activation="RELU"),
    depthwise("depthwise_dilated", (2, 3), dilation=(2, 1), activation="RELU6"),
    depthwise("hybrid_depthwise_same", (3, 3), hybrid=True),
    depthwise("hybrid_depthwise_multiplier_valid_stride", (3, 2), 2, True, padding="VALID", stride=(2, 2)),
    depthwise("hybrid_depthwise_dilated", (2, 3), hybrid=True, dilation=(2, 1), activation="RELU_N1_TO_1"),
]

POOLS = [
    case("max_pool_same_stride", "MAX_POOL_2D", IMAGE, **pool((3, 3), stride=(2, 2))),
    case("max_pool_valid_relu", "MAX_POOL_2D", IMAGE, **pool((2, 2), "VALID", (2, 1), "RELU")),
    case("average_pool_same_stride", "AVERAGE_POOL_2D", IMAGE, tolerance=SUMS, **pool((3, 3), stride=(2, 2))),
    case(
        "average_pool_valid_relu6", "AVERAGE_POOL_2D", IMAGE, tolerance=SUMS, **pool((2, 1), "VALID", (1, 1), "RELU6")
    ),
]

X = ("x", f32(2, 3, 4, scale=3))
INTS = ("x", RNG.integers(-3, 4, size=(2, 3)).astype(np.int32))
MASK = ("x", RNG.random((2, 3, 4)) > 0.5)


def i32(*values) -> np.ndarray:
    return np.asarray(values, np.int32)


ELEMENTWISE = [
    case("relu", "RELU", X),
    case("relu6", "RELU6", X),
    case("relu_n1_to_1", "RELU_N1_TO_1", X),
    case("leaky_relu", "LEAKY_RELU", X, alpha=0.2),
    case("leaky_relu_alpha_above_1", "LEAKY_RELU", X, alpha=1.5),
    case("neg", "NEG", X),
    case("neg_int32", "NEG", INTS),
    case("rsqrt", "RSQRT", ("x", np.abs(f32(2, 3, 4)) + 0.1), xnnpack_rtol=XNNPACK_RSQRT),
    case("div_relu", "DIV", X, ("x", f32(2, 3, 4)), fused_activation_function="RELU"),
    case("div_broadcast_constant", "DIV", X, ("c", f32(4)), fused_activation_function="NONE"),
    case("div_int32_truncates", "DIV", INTS, ("c", i32(2, -2, 3)), fused_activation_function="NONE"),
    case("squared_difference_broadcast", "SQUARED_DIFFERENCE", X, ("c", f32(4))),
    case("maximum", "MAXIMUM", X, ("x", f32(2, 3, 4))),
    case("minimum_broadcast_constant", "MINIMUM", X, ("c", f32(1, 3, 1))),
    case("less_int32_scalar", "LESS", INTS, ("c", i32(1))),
    case("less_equal", "LESS_EQUAL", X, ("c", f32(4))),
    case("greater", "GREATER", X, ("x", f32(2, 3, 4))),
    case("greater_equal_int32", "GREATER_EQUAL", INTS, ("c", i32(0, 1, 2))),
    case("equal_int32", "EQUAL", INTS, ("c", i32(0))),
    case("not_equal_zero", "NOT_EQUAL", ("x", np.where(f32(2, 3, 4) > 0, f32(2, 3, 4), 0)), ("c", np.float32(0))),
    case("logical_and", "LOGICAL_AND", MASK, ("x", RNG.random((2, 3, 4)) > 0.5)),
    case("logical_or_broadcast", "LOGICAL_OR", MASK, ("c", np.asarray([True, False, False, True]))),
    case("logical_not", "LOGICAL_NOT", MASK),
    case("select_v2_broadcast", "SELECT_V2", ("x", RNG.random((2, 3, 1)) > 0.5), X, ("c", np.float32(0))),
    case("select", "SELECT", MASK, X, ("x", f32(2, 3, 4))),
    case("select_rank1_condition", "SELECT", ("x", np.asarray([True, False])), X, ("x", f32(2, 3, 4))),
    case("cast_float_to_int32", "CAST", X, in_data_type="FLOAT32", out_data_type="INT32"),
    case("cast_int32_to_float", "CAST", INTS, in_data_type="INT32", out_data_type="FLOAT32"),
    case("cast_bool_to_float", "CAST", MASK, in_data_type="BOOL", out_data_type="FLOAT32"),
    case("zeros_like", "ZEROS_LIKE", X),
]

REDUCTIONS = [
    case("mean_spatial_keep_dims", "MEAN", IMAGE, ("c", i32(1, 2)), tolerance=SUMS, keep_dims=True),
    case("mean_last_axis", "MEAN", X, ("c", i32(-1)), tolerance=SUMS, keep_dims=False),
    case("mean_repeated_negative_axes", "MEAN", X, ("c", i32(0, -3, 2)), tolerance=SUMS, keep_dims=False),
    case("sum", "SUM", X, ("c", i32(1)), tolerance=SUMS, keep_dims=True),
    case("reduce_prod", "REDUCE_PROD", X, ("c", i32(2)), tolerance=SUMS, keep_dims=False),
    case("reduce_max_scalar_axis", "REDUCE_MAX", X, ("c", np.int32(1)), keep_dims=False),
    case("reduce_min", "REDUCE_MIN", X, ("c", i32(0, 2)), keep_dims=True),
    case("reduce_any_keep_dims", "REDUCE_ANY", MASK, ("c", np.int32(-1)), keep_dims=True),
    case("reduce_all", "REDUCE_ALL", MASK, ("c", i32(1)), keep_dims=False),
]

SHAPES = [
    case("pad", "PAD", X, ("c", i32([0, 0], [1, 2], [0, 1]))),
    case("padv2", "PADV2", X, ("c", i32([1, 0], [0, 0], [2, 1])), ("c", np.float32(-1.5))),
    case("pad_image", "PAD", IMAGE, ("c", i32([0, 0], [1, 1], [2, 0], [0, 0]))),
    case("slice", "SLICE", X, ("c", i32(0, 1, 1)), ("c", i32(-1, 2, 3))),
    case("slice_runtime_begin", "SLICE", X, ("x", i32(1, 0, 2)), ("c", i32(1, 3, 2))),
    case("expand_dims_negative_axis", "EXPAND_DIMS", X, ("c", i32(-2))),
    case("squeeze_dims", "SQUEEZE", ("x", f32(2, 1, 3, 1)), squeeze_dims=(3,)),
    case("squeeze_all", "SQUEEZE", ("x", f32(2, 1, 3, 1))),
    case("broadcast_to", "BROADCAST_TO", ("x", f32(3, 1)), ("c", i32(2, 3, 4))),
    case("tile", "TILE", X, ("c", i32(1, 2, 3))),
    case("split_v", "SPLIT_V", X, ("c", i32(1, -1, 2)), ("c", np.int32(2)), num_splits=3),
    case("space_to_batch_nd", "SPACE_TO_BATCH_ND", IMAGE, ("c", i32(2, 3)), ("c", i32([1, 0], [0, 0]))),
    case(
        "batch_to_space_nd", "BATCH_TO_SPACE_ND", ("x", f32(12, 2, 3, 2)), ("c", i32(2, 3)), ("c", i32([1, 0], [2, 1]))
    ),
    # What the converter writes for a dilated Conv1D with a dynamic batch (rank 3, version 3).
    case("space_to_batch_nd_rank3", "SPACE_TO_BATCH_ND", X, ("c", i32(2)), ("c", i32([2, 3]))),
    case("batch_to_space_nd_rank3", "BATCH_TO_SPACE_ND", ("x", f32(4, 3, 4)), ("c", i32(2)), ("c", i32([0, 2]))),
]

CASES = CONVOLUTIONS + POOLS + ELEMENTWISE + REDUCTIONS + SHAPES


def _assert_matches(ours, lite, tolerance, what, rtol=0.0):
    assert len(ours) == len(lite), what
    for a, b in zip(ours, lite):
        a = np.asarray(a)
        assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        if tolerance == EXACT and rtol == 0:
            np.testing.assert_array_equal(a, b, err_msg=what)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=tolerance, err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_operator_matches_litert(case):
    data, inputs = case.export()
    m = load_tflite(data)
    (builtin,) = run_litert(data, inputs, xnnpack=False)
    _assert_matches(m(*inputs), builtin, case.tolerance, "eager vs builtin kernel")
    jitted = jax.jit(lambda params, *xs: m.apply(params, {}, *xs)[0])(m.params, *inputs)
    _assert_matches(jitted, builtin, case.tolerance, "jit vs builtin kernel")
    (delegated,) = run_litert(data, inputs)  # the XNNPACK delegate takes what it supports
    if case.xnnpack is None:
        _assert_matches(m(*inputs), delegated, case.tolerance, "eager vs XNNPACK", case.xnnpack_rtol)
    else:  # a documented difference: the delegate must indeed differ
        assert np.max(np.abs(np.asarray(m(*inputs)[0]) - delegated[0])) > 1e-3, case.xnnpack


def _model(opcode, operands, out_shape, **options):
    """A one-operator model; operands are ("x", shape, dtype) inputs or ("c", value) constants."""
    b = ModelBuilder()
    refs = [
        b.add_input(f"x{k}", o[1], o[2]) if o[0] == "x" else b.add_constant(f"c{k}", o[1])
        for k, o in enumerate(operands)
    ]
    y = b.add_intermediate("y", out_shape)
    b.add_operator(opcode, refs, [y], **options)
    return b.build([y])


def test_slice_of_a_run_time_size_needs_concrete_values():
    """A size computed at run time gives a data-dependent shape: fine eagerly, refused under jit."""
    m = _model("SLICE", [("x", (4, 3), "float32"), ("c", i32(1, 0)), ("x", (2,), "int32")], (-1, -1))
    x, size = f32(4, 3), i32(2, 3)
    ((expected,),) = run_litert(export_tflite(m), [x, size], xnnpack=False)
    np.testing.assert_array_equal(load_tflite(export_tflite(m))(x, size)[0], expected)
    with pytest.raises(NotImplementedError, match="SLICE size must be a constant"):
        jax.jit(lambda *a: m(*a))(x, size)


UNSUPPORTED = {  # valid files that ask for something LiteRT does not do (or jaxlstm cannot know)
    "conv_with_tanh": (
        _model(
            "CONV_2D",
            [("x", (1, 3, 3, 2), "float32"), ("c", f32(1, 1, 1, 2)), ("c", f32(1))],
            (1, 3, 3, 1),
            **window(activation="TANH"),
        ),
        "fused activation TANH",
    ),
    "cast_without_type": (_model("CAST", [("x", (2,), "float32")], (2,)), "out_data_type"),
    "mean_of_int32": (
        _model("MEAN", [("x", (2, 3), "int32"), ("c", i32(1))], (2,), keep_dims=False),
        "MEAN of int32",
    ),
}


@pytest.mark.parametrize("model, message", UNSUPPORTED.values(), ids=list(UNSUPPORTED))
def test_unsupported_configurations_raise_not_implemented(model, message):
    inputs = [np.zeros(model.tensors[i].shape, model.tensors[i].dtype) for i in model.inputs]
    with pytest.raises(NotImplementedError, match=message):
        model(*inputs)
