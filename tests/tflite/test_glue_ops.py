"""The non-recurrent operators of converted models: our kernels against LiteRT's, one op each."""

from __future__ import annotations

import numpy as np
import pytest

from jaxlstm.model import ModelBuilder
from jaxlstm.ops import QuantizedTensor, quantize_symmetric
from jaxlstm.parity.litert import run_litert
from jaxlstm.tflite import export_tflite, load_tflite

ATOL = 1e-5  # float32 kernels with another summation order / transcendental implementation


def _f32(rng, *shape):
    return rng.normal(size=shape).astype(np.float32)


def _unary(opcode, **options):
    def build(b, rng):
        x = b.add_input("x", (2, 3, 4))
        y = b.add_intermediate("y", (2, 3, 4))
        b.add_operator(opcode, [x], [y], **options)
        return [y], [_f32(rng, 2, 3, 4) * 3]

    return build


def _binary(opcode, activation, constant_shape=None):
    def build(b, rng):
        x = b.add_input("x", (2, 3, 4))
        other = b.add_constant("c", _f32(rng, *constant_shape)) if constant_shape else b.add_input("z", (2, 3, 4))
        y = b.add_intermediate("y", (2, 3, 4))
        b.add_operator(opcode, [x, other], [y], fused_activation_function=activation)
        return [y], [_f32(rng, 2, 3, 4)] + ([] if constant_shape else [_f32(rng, 2, 3, 4)])

    return build


def _fully_connected(keep_num_dims, weights="float", activation="RELU", asymmetric=False):
    def build(b, rng):
        x = b.add_input("x", (2, 3, 6))
        w = _f32(rng, 5, 6)
        if weights == "per_tensor":
            w = quantize_symmetric(w)
        elif weights == "per_channel":  # one scale per output row, as the MLIR quantizer writes
            scale = np.abs(w).max(axis=1, keepdims=True) / 127
            w = QuantizedTensor(np.round(w / scale).astype(np.int8), scale.astype(np.float32))
        wr, br = b.add_constant("w", w), b.add_constant("b", _f32(rng, 5))
        y = b.add_intermediate("y", (2, 3, 5) if keep_num_dims else (6, 5))
        b.add_operator(
            "FULLY_CONNECTED",
            [x, wr, br],
            [y],
            fused_activation_function=activation,
            keep_num_dims=keep_num_dims,
            asymmetric_quantize_inputs=asymmetric,
        )
        return [y], [_f32(rng, 2, 3, 6)]

    return build


def _with_constants(opcode, in_shape, out_shape, constants, **options):
    def build(b, rng):
        x = b.add_input("x", in_shape)
        refs = [b.add_constant(f"c{k}", np.asarray(v)) for k, v in enumerate(constants)]
        y = b.add_intermediate("y", out_shape)
        b.add_operator(opcode, [x, *refs], [y], **options)
        return [y], [_f32(rng, *in_shape)]

    return build


def _dequantize(source):
    def build(b, rng):
        x = b.add_input("x", (3, 4))
        w = _f32(rng, 3, 4)
        c = b.add_constant("c", quantize_symmetric(w) if source == "int8" else w.astype(np.float16))
        d, y = b.add_intermediate("d", (3, 4)), b.add_intermediate("y", (3, 4))
        b.add_operator("DEQUANTIZE", [c], [d])
        b.add_operator("ADD", [x, d], [y], fused_activation_function="NONE")
        return [y], [_f32(rng, 3, 4)]

    return build


def _gather(b, rng):
    ids = b.add_input("ids", (2, 5), "int32")
    table = b.add_constant("embeddings", _f32(rng, 10, 4))
    y = b.add_intermediate("y", (2, 5, 4))
    b.add_operator("GATHER", [table, ids], [y], axis=0, batch_dims=0)
    return [y], [rng.integers(0, 10, size=(2, 5)).astype(np.int32)]


def _unpack_pack(b, rng):
    x = b.add_input("x", (2, 3, 4))
    steps = [b.add_intermediate(f"t{k}", (2, 4)) for k in range(3)]
    b.add_operator("UNPACK", [x], steps, num=3, axis=1)
    y = b.add_intermediate("y", (3, 2, 4))
    b.add_operator("PACK", steps, [y], values_count=3, axis=0)
    return [y], [_f32(rng, 2, 3, 4)]


def _split(b, rng):
    x = b.add_input("x", (2, 6))
    axis = b.add_constant("axis", np.asarray(1, np.int32))
    parts = [b.add_intermediate(f"p{k}", (2, 3)) for k in range(2)]
    b.add_operator("SPLIT", [axis, x], parts, num_splits=2)
    return parts, [_f32(rng, 2, 6)]


def _fill_from_shape(b, rng):
    """SHAPE -> STRIDED_SLICE -> CONCATENATION -> FILL: the stateless exporter's state zeroing."""
    x = b.add_input("x", (2, 3, 4))
    shape = b.add_intermediate("shape", (3,), "int32")
    b.add_operator("SHAPE", [x], [shape], out_type="INT32")
    consts = [b.add_constant(n, np.asarray([v], np.int32)) for n, v in (("begin", 0), ("end", 1), ("strides", 1))]
    batch = b.add_intermediate("batch", (1,), "int32")
    b.add_operator("STRIDED_SLICE", [shape, *consts], [batch], begin_mask=0, end_mask=0, shrink_axis_mask=0)
    dims = b.add_intermediate("dims", (2,), "int32")
    b.add_operator(
        "CONCATENATION",
        [batch, b.add_constant("rest", np.asarray([5], np.int32))],
        [dims],
        axis=0,
        fused_activation_function="NONE",
    )
    y = b.add_intermediate("y", (2, 5))
    b.add_operator("FILL", [dims, b.add_constant("value", np.asarray(1.5, np.float32))], [y])
    return [y], [_f32(rng, 2, 3, 4)]


CASES = {
    "logistic": _unary("LOGISTIC"),
    "tanh": _unary("TANH"),
    "relu": _unary("RELU"),
    "relu6": _unary("RELU6"),
    "relu_n1_to_1": _unary("RELU_N1_TO_1"),
    "softmax": _unary("SOFTMAX", beta=0.5),
    "add_relu6": _binary("ADD", "RELU6"),
    "mul_broadcast_constant": _binary("MUL", "NONE", constant_shape=(1,)),
    "sub_relu": _binary("SUB", "RELU"),
    # LiteRT clamps these ops to the fused activation's range: a fused TANH or SIGN_BIT does nothing.
    "add_tanh": _binary("ADD", "TANH"),
    "mul_sign_bit": _binary("MUL", "SIGN_BIT"),
    "sub_relu_n1_to_1": _binary("SUB", "RELU_N1_TO_1"),
    "fully_connected_keep_num_dims": _fully_connected(True),
    "fully_connected_flattening": _fully_connected(False, activation="RELU_N1_TO_1"),
    "fully_connected_hybrid": _fully_connected(False, "per_tensor"),
    "fully_connected_hybrid_asymmetric": _fully_connected(True, "per_tensor", asymmetric=True),
    "fully_connected_hybrid_per_channel": _fully_connected(False, "per_channel", asymmetric=True),
    "reshape": _with_constants("RESHAPE", (2, 3, 4), (6, 4), [np.asarray([6, 4], np.int32)]),
    # reshape.cc reads the shape input only when it is an int32 vector, else new_shape: a
    # [1, 2] shape tensor, as some public models have, and a legacy model with no shape input.
    "reshape_2d_shape_input": _with_constants(
        "RESHAPE", (2, 3, 4), (4, 6), [np.asarray([[6, 4]], np.int32)], new_shape=(4, 6)
    ),
    "reshape_new_shape_only": _with_constants("RESHAPE", (2, 3, 4), (8, 3), [], new_shape=(8, 3)),
    "transpose": _with_constants("TRANSPOSE", (2, 3, 4), (3, 2, 4), [np.asarray([1, 0, 2], np.int32)]),
    "reverse_v2": _with_constants("REVERSE_V2", (2, 3, 4), (2, 3, 4), [np.asarray([1], np.int32)]),
    "strided_slice": _with_constants(
        "STRIDED_SLICE",
        (2, 5, 4),
        (2, 2, 4),
        [np.asarray([0, 1, 0], np.int32), np.asarray([0, 5, 0], np.int32), np.asarray([1, 2, 1], np.int32)],
        begin_mask=5,
        end_mask=5,
        shrink_axis_mask=0,
        ellipsis_mask=0,
        new_axis_mask=0,
        offset=False,
    ),
    "concatenation": _with_constants(
        "CONCATENATION", (2, 3), (2, 5), [np.ones((2, 2), np.float32)], axis=-1 % 2, fused_activation_function="NONE"
    ),
    "dequantize_int8": _dequantize("int8"),
    "dequantize_float16": _dequantize("float16"),
    "gather": _gather,
    "unpack_pack": _unpack_pack,
    "split": _split,
    "shape_fill": _fill_from_shape,
}


@pytest.mark.parametrize("build", CASES.values(), ids=list(CASES))
def test_glue_op_matches_litert(build, rng):
    b = ModelBuilder()
    outputs, inputs = build(b, rng)
    data = export_tflite(b.build(outputs))
    ours = load_tflite(data)(*inputs)  # through the importer, as a converted file would be
    (lite,) = run_litert(data, inputs, xnnpack=False)  # builtin kernels (see test_litert.py)
    for a, c in zip(ours, lite, strict=True):
        assert np.shape(a) == c.shape
        np.testing.assert_allclose(np.asarray(a), c, atol=ATOL, rtol=0)


def test_the_reader_and_the_writer_accept_the_same_operators():
    """Every builtin the reader loads (the table's, each with a kernel) the writer can
    serialize (has its options table), and vice versa."""
    from jaxlstm.model.operators import BUILTINS, GRU
    from jaxlstm.model.runtime import KERNELS
    from jaxlstm.tflite import _format

    assert set(KERNELS) - {GRU} == BUILTINS
    assert set(_format.OPTIONS) == BUILTINS
    assert all(op in _format.OPCODES for op in BUILTINS)  # a schema BuiltinOperator each


def test_concatenation_with_a_fused_activation_is_refused_like_litert():
    b = ModelBuilder()
    x = b.add_input("x", (2, 3))
    y = b.add_intermediate("y", (2, 6))
    b.add_operator("CONCATENATION", [x, x], [y], axis=1, fused_activation_function="TANH")
    data = export_tflite(b.build([y]))
    with pytest.raises(RuntimeError, match="concatenation"):
        run_litert(data, [np.ones((2, 3), np.float32)], xnnpack=False)
    with pytest.raises(ValueError, match="CONCATENATION with fused activation 'TANH'"):
        load_tflite(data)(np.ones((2, 3), np.float32))
