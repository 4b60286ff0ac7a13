"""Tests of `jaxlstm.ops` against the NumPy references and the LiteRT kernel tests' published vectors."""
