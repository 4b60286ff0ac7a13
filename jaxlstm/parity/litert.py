"""Runs a .tflite model in the LiteRT interpreter, the reference every parity test uses, or in
TensorFlow Lite Micro's."""

from __future__ import annotations

import os

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def variable_tensors(model: bytes) -> list[tuple[int, tuple[int, ...]]]:
    """(tensor index, shape signature) of each variable tensor of subgraph 0."""
    m = schema.Model.GetRootAs(model, 0)
    sg = m.Subgraphs(0)
    result = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        if t.IsVariable():
            sig = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else t.ShapeAsNumpy()
            result.append((i, tuple(int(d) for d in sig)))
    return result


def run_litert(
    model: bytes | str | os.PathLike,
    inputs: list[np.ndarray],
    *,
    invocations: int = 1,
    reset: bool = True,
    state_batch: int | None = None,
    xnnpack: bool = True,
) -> list[list[np.ndarray]]:
    """Invokes `model` `invocations` times on the same `inputs`.

    Inputs whose shape differs from the model's are resized (dynamic batch/time).

    Args:
      model: .tflite bytes or a path.
      inputs: one array per subgraph input, in order.
      invocations: number of `invoke` calls.
      reset: call ``reset_all_variables()`` before every invoke (independent runs);
        False lets the state carry over, as LiteRT does by default.
      state_batch: resize the variable tensors whose first dimension is dynamic (-1 in
        ``shape_signature``) to this batch; LiteRT never resizes state tensors itself.
      xnnpack: apply the XNNPACK delegate, as the interpreter does by default. It takes
        FULLY_CONNECTED (not the recurrent ops) and quantizes hybrid inputs asymmetrically
        even when the op says symmetric; False runs TFLite's builtin kernels only.

    Returns:
      One list of outputs (subgraph order) per invocation.
    """
    if not isinstance(model, (bytes, bytearray)):
        with open(model, "rb") as f:
            model = f.read()
    model = bytes(model)
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
    details = interpreter.get_input_details()
    if len(details) != len(inputs):
        raise ValueError(f"the model takes {len(details)} inputs, got {len(inputs)}")
    for d, x in zip(details, inputs):
        if tuple(d["shape"]) != np.shape(x):
            interpreter.resize_tensor_input(d["index"], np.shape(x))
    if state_batch is not None:
        for index, signature in variable_tensors(model):
            if signature and signature[0] < 0:
                interpreter.resize_tensor_input(index, (state_batch,) + signature[1:])
    interpreter.allocate_tensors()  # also zeroes the variable tensors
    results = []
    for _ in range(invocations):
        if reset:
            interpreter.reset_all_variables()
        for d, x in zip(details, inputs):
            interpreter.set_tensor(d["index"], np.asarray(x, d["dtype"]))
        interpreter.invoke()
        results.append([interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()])
    return results


def run_tflite_micro(
    model: bytes | str | os.PathLike, inputs: list[np.ndarray], *, invocations: int = 1, arena_size: int = 64 << 20
) -> list[list[np.ndarray]]:
    """Invokes `model` `invocations` times on the same `inputs` in TensorFlow Lite Micro's
    interpreter (the ``tflite-micro`` package), the state carried from one invoke to the next.

    TFLite Micro runs static shapes only: each input must have its tensor's shape.

    Returns:
      One list of outputs (subgraph order) per invocation.

    Raises:
      ImportError: the ``tflite-micro`` package is not installed.
    """
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError as e:
        e.add_note("comparing against TFLite Micro needs its interpreter: pip install tflite-micro")
        raise
    if not isinstance(model, (bytes, bytearray)):
        with open(model, "rb") as f:
            model = f.read()
    model = bytes(model)
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    n_outputs = schema.Model.GetRootAs(model, 0).Subgraphs(0).OutputsLength()
    results = []
    for _ in range(invocations):
        for k, x in enumerate(inputs):
            interpreter.set_input(np.asarray(x, interpreter.get_input_details(k)["dtype"]), k)
        interpreter.invoke()
        results.append([interpreter.get_output(k).copy() for k in range(n_outputs)])
    return results
