"""Parity harness: run models in the LiteRT interpreter to compare against jaxlstm.

`jaxlstm.parity.litert.run_litert` is imported from its module (it loads the LiteRT
interpreter); this package itself imports nothing heavy.
"""

from jaxlstm.parity.compare import ParityReport as ParityReport
from jaxlstm.parity.compare import compare as compare

__all__ = ("ParityReport", "compare")
