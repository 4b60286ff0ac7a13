"""Shared checks for the converter tests: JAX-side and LiteRT-side parity with the source."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.testing import assert_allclose

from jaxlstm.model import Model

# The acceptance bound of issue 4. Float32 frameworks sum the gate matmuls in different
# orders, a few ulps of O(1) values per step over <= 6 steps.
ATOL = 1e-5
# Builtin operators a converted recurrent model may contain: the fused recurrent ops and
# the dense glue around them (no WHILE, no custom ops).
FUSED_AND_GLUE = {
    "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "BIDIRECTIONAL_SEQUENCE_LSTM",
    "UNIDIRECTIONAL_SEQUENCE_RNN",
    "BIDIRECTIONAL_SEQUENCE_RNN",
    "STRIDED_SLICE",
    "REVERSE_V2",
    "CONCATENATION",
    "ADD",
    "MUL",
    "FULLY_CONNECTED",
    "SOFTMAX",
    "TANH",
    "LOGISTIC",
    # the predict export's state reset: FILL, its dims from SHAPE -> STRIDED_SLICE of the input
    "FILL",
    "SHAPE",
}


def assert_outputs_close(actual: Sequence, expected: Sequence, atol: float = ATOL) -> None:
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert_allclose(np.asarray(a), np.asarray(e), rtol=0, atol=atol, err_msg=f"output {k}")


def assert_converted_matches(model: Model, inputs: Sequence[np.ndarray], expected: Sequence) -> None:
    """The converted model matches `expected` (the source framework's outputs) in JAX and,
    after `export_tflite`, in the LiteRT interpreter."""
    assert_outputs_close(model(*inputs), expected)
    assert_outputs_close(run_exported(model, inputs), expected)


def run_exported(model: Model, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    from jaxlstm import export_tflite
    from jaxlstm.parity.litert import run_litert

    (outputs,) = run_litert(export_tflite(model), [np.asarray(x, np.float32) for x in inputs])
    return outputs


def tflite_opcodes(flatbuffer: bytes) -> list[str]:
    """The builtin operator names of a .tflite file's operator codes; custom ops as 'CUSTOM:<name>'."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    codes = []
    for code in model.operatorCodes:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = names[builtin]
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        codes.append(f"CUSTOM:{custom}" if name == "CUSTOM" else name)
    return codes
