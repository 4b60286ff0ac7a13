"""Tests of the Flax NNX layers `jaxlstm.nn` against the NumPy references, PyTorch and LiteRT."""
