"""jaxlstm: TensorFlow Lite's fused LSTM/RNN operators as exact, differentiable JAX functions."""

from jaxlstm import ops as ops
from jaxlstm.ops import *  # noqa: F401,F403  (the op functions and weight types, see ops.__all__)
from jaxlstm.ops import __all__ as _ops_all
from jaxlstm.tflite import export_tflite as export_tflite
from jaxlstm.tflite import load_tflite as load_tflite

__version__ = "0.1.0"

__all__ = ("ops", "__version__", "export_tflite", "load_tflite") + _ops_all
