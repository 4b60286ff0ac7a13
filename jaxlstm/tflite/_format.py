"""The .tflite flatbuffer format: named constants and the tables shared by reader and writer.

The schema classes come from LiteRT's generated module (`ai_edge_litert.schema_py_generated`,
object API: `ModelT`, `TensorT`, ...); this module only names what the schema leaves implicit:
which option fields are enums, and dtype mappings; each operator's options table is in
`jaxlstm.model.operators`.
"""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from jaxlstm.model.operators import BUILTINS, OPERATORS

FILE_IDENTIFIER = b"TFL3"  # bytes 4-8 of every .tflite file
SCHEMA_VERSION = 3  # Model.version written by every current converter
# Operator codes above 127 do not fit the deprecated int8 field, which then holds this value
# (schema.fbs: PLACEHOLDER_FOR_GREATER_OP_CODES); readers take max(deprecated, builtin).
PLACEHOLDER_FOR_GREATER_OP_CODES = 127
SIGNATURE_KEY = "serving_default"

OPCODE_NAMES: dict[int, str] = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
OPCODES: dict[str, int] = {v: k for k, v in OPCODE_NAMES.items()}

# Builtin options table of each operator jaxlstm reads and writes (None: the op has no options).
OPTIONS: dict[str, str | None] = {op: OPERATORS[op].options for op in sorted(BUILTINS)}

# Option fields whose values are schema enums, kept as names in `Operator.options`.
ENUM_FIELDS: dict[str, type] = {
    "fused_activation_function": schema.ActivationFunctionType,
    "kernel_type": schema.LSTMKernelType,
    "weights_format": schema.FullyConnectedOptionsWeightsFormat,
    "quantized_bias_type": schema.TensorType,
    "out_type": schema.TensorType,
    "padding": schema.Padding,
    "in_data_type": schema.TensorType,
    "out_data_type": schema.TensorType,
}

TENSOR_TYPES: dict[int, str] = {
    schema.TensorType.FLOAT32: "float32",
    schema.TensorType.FLOAT16: "float16",
    schema.TensorType.INT32: "int32",
    schema.TensorType.INT64: "int64",
    schema.TensorType.INT16: "int16",
    schema.TensorType.INT8: "int8",
    schema.TensorType.UINT8: "uint8",
    schema.TensorType.BOOL: "bool",
}
DTYPES: dict[str, int] = {v: k for k, v in TENSOR_TYPES.items()}


def read_model(data: bytes) -> Any:
    """The schema's `ModelT` of .tflite `data`, for every reader of files (`load_tflite`,
    `jaxlstm inspect`): checks the identifier, and that the tables' element counts fit in the
    file (which bounds the unpacking work for hostile offsets) before unpacking.

    Raises:
      ValueError: not a .tflite file, a truncated file (`truncated_message`), or a
        malformed flatbuffer.
    """
    if len(data) < 8:
        raise ValueError(f"not a .tflite file: {len(data)} bytes is shorter than a flatbuffer header")
    if data[4:8] != FILE_IDENTIFIER:
        raise ValueError(f"not a .tflite file: file identifier {data[4:8]!r}, expected {FILE_IDENTIFIER!r}")
    try:
        root = schema.Model.GetRootAs(data, 0)
        counts = [root.BuffersLength(), root.OperatorCodesLength(), root.SubgraphsLength()]
        for i in range(root.SubgraphsLength()):
            sg = root.Subgraphs(i)
            counts += [sg.TensorsLength(), sg.OperatorsLength()]
        if sum(counts) * 4 <= len(data):
            return schema.ModelT.InitFromPackedBuf(data, 0)
        detail = f"its tables list {sum(counts):,} entries"
    except (IndexError, struct.error, ValueError) as e:  # an offset or a vector past the end
        detail = f"{type(e).__name__}: {e}"
    except (TypeError, OverflowError, UnicodeDecodeError, AttributeError) as e:
        raise ValueError(f"malformed .tflite flatbuffer: {type(e).__name__}: {e}") from e
    raise ValueError(truncated_message(len(data), detail))


def truncated_message(size: int, detail: str) -> str:
    """The one wording of a .tflite file that ends before the data its tables point to."""
    return (
        f"truncated .tflite file: its {size:,} bytes end before the data it refers to ({detail}); "
        "the file was cut short (an interrupted download or copy?) or is corrupt"
    )


def enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def snake_case(name: str) -> str:
    """``fusedActivationFunction`` -> ``fused_activation_function``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel_case(name: str) -> str:
    """``fused_activation_function`` -> ``fusedActivationFunction``."""
    head, *rest = name.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def options_to_dict(options: Any) -> dict[str, Any]:
    """A generated ``*OptionsT`` object as {snake_case field: value}, enums as names.

    Raises:
      ValueError: an enum field holds a value the schema does not define.
      NotImplementedError: a nested options table (e.g. FullyConnected ``quant_spec``).
    """
    result = {}
    for attr, value in vars(options).items():
        if value is None:
            continue
        key = snake_case(attr)
        if key in ENUM_FIELDS:
            names = enum_names(ENUM_FIELDS[key])
            if value not in names:
                raise ValueError(f"option {key}={value} is not a valid {ENUM_FIELDS[key].__name__}")
            value = names[value]
        elif isinstance(value, (list, np.ndarray)):
            value = tuple(int(v) for v in value)
        elif not isinstance(value, (bool, int, float)):
            raise NotImplementedError(f"nested option table {key} is not supported")
        result[key] = value
    return result


def dict_to_options(opcode: str, options: dict[str, Any]) -> tuple[int, Any]:
    """(`BuiltinOptions` type, ``*OptionsT`` object) for `opcode` with `options` set.

    Raises:
      NotImplementedError: jaxlstm cannot write `opcode`.
      ValueError: an option that the op's options table does not have.
    """
    if opcode not in OPTIONS:
        raise NotImplementedError(f"cannot export operator {opcode}; exportable operators: {sorted(OPTIONS)}")
    table = OPTIONS[opcode]
    if table is None:
        if options:
            raise ValueError(f"{opcode} takes no options, got {sorted(options)}")
        return schema.BuiltinOptions.NONE, None
    obj = getattr(schema, table + "T")()
    for key, value in options.items():
        attr = camel_case(key)
        if not hasattr(obj, attr):
            raise ValueError(f"{opcode}: {table} has no option {key!r}")
        if key in ENUM_FIELDS:
            value = getattr(ENUM_FIELDS[key], value)
        elif isinstance(value, tuple):
            value = list(value)
        setattr(obj, attr, value)
    return getattr(schema.BuiltinOptions, table), obj
