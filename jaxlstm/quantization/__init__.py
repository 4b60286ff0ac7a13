"""Quantization for TFLite's integer kernels, following the TensorFlow Lite converter's conventions."""

from jaxlstm.quantization._lstm import LSTMRanges as LSTMRanges
from jaxlstm.quantization._lstm import quantize_lstm as quantize_lstm

__all__ = ("LSTMRanges", "quantize_lstm")
