"""jaxlstm: TensorFlow Lite's fused LSTM/RNN operators as exact, differentiable JAX functions."""

import importlib as _importlib

__version__ = "0.1.0"

# The names load on first use: `import jaxlstm.reference` (the NumPy loops) needs no JAX, and
# `import jaxlstm.ops` stays jax + numpy only (the flatbuffer IO loads with export/load_tflite).
_TFLITE = ("export_tflite", "load_tflite")
_QUANTIZATION = ("quantize",)


def __getattr__(name: str):
    if name in _TFLITE:
        return getattr(_importlib.import_module("jaxlstm.tflite"), name)
    if name in _QUANTIZATION:
        return getattr(_importlib.import_module("jaxlstm.quantization"), name)
    if name == "__all__" or not name.startswith("__"):
        ops = _importlib.import_module("jaxlstm.ops")  # also sets jaxlstm.ops
        if name == "__all__":
            return ("__version__", *_TFLITE, *_QUANTIZATION, "ops", *ops.__all__)
        if name == "ops":
            return ops
        if name in ops.__all__:
            return getattr(ops, name)
    raise AttributeError(f"module 'jaxlstm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
