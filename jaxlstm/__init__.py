"""jaxlstm: TensorFlow Lite's fused LSTM/RNN operators as exact, differentiable JAX functions."""

from jaxlstm import ops as ops
from jaxlstm.ops import *  # noqa: F403  (the op functions and weight types, see ops.__all__)
from jaxlstm.ops import __all__ as _ops_all

__version__ = "0.1.0"


def __getattr__(name: str):
    # The flatbuffer IO (flatbuffers, ai_edge_litert's schema) loads on first use, so that
    # `import jaxlstm.ops` stays jax + numpy only.
    if name in ("export_tflite", "load_tflite"):
        from jaxlstm import tflite

        return getattr(tflite, name)
    raise AttributeError(f"module 'jaxlstm' has no attribute {name!r}")


__all__ = ("__version__", "export_tflite", "load_tflite", "ops", *_ops_all)  # noqa: F405, PLE0604
