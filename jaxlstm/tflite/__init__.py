"""TFLite flatbuffer import and export: .tflite bytes <-> `jaxlstm.model.Model`.

m = load_tflite("model.tflite")              # -> Model, runs in JAX
data = export_tflite(m, "out.tflite")        # -> bytes, fused recurrent ops
"""

from jaxlstm.tflite._reader import load_tflite as load_tflite
from jaxlstm.tflite._writer import export_tflite as export_tflite

__all__ = ("export_tflite", "load_tflite")
