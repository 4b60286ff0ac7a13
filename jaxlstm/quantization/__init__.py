"""Fully integer models: calibration, the TensorFlow Lite converter's quantization conventions,
and quantization-aware training.

* `quantize` (also ``jaxlstm.quantize``): a float `Model` -> a fully integer `Model`
  (int8 or int16 activations), calibrated on representative inputs.
* `calibrate`: the float ranges `quantize` reads.
* `quantize_lstm`: one LSTM's integer weights and quantization from given ranges.
* `fake_quantized`: quantization-aware training, float weights fine-tuned through the
  integer model's forward pass (`FakeQuantized`).
"""

from jaxlstm.quantization._calibrate import Calibration as Calibration
from jaxlstm.quantization._calibrate import calibrate as calibrate
from jaxlstm.quantization._lstm import LSTMRanges as LSTMRanges
from jaxlstm.quantization._lstm import quantize_lstm as quantize_lstm
from jaxlstm.quantization._model import quantize as quantize
from jaxlstm.quantization._qat import FakeQuantized as FakeQuantized
from jaxlstm.quantization._qat import fake_quantized as fake_quantized

__all__ = ("Calibration", "FakeQuantized", "LSTMRanges", "calibrate", "fake_quantized", "quantize", "quantize_lstm")
