"""jaxlstm: TensorFlow Lite's fused LSTM/RNN operators as exact, differentiable JAX functions."""

from jaxlstm import ops as ops
from jaxlstm.ops import *  # noqa: F401,F403  (the op functions and weight types, see ops.__all__)
from jaxlstm.ops import __all__ as _ops_all

__version__ = "0.1.0"

__all__ = ("ops", "__version__") + _ops_all
