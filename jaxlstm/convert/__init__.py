"""Converters: Keras, tf_keras, TF1 cells, Lingvo, flax and PyTorch recurrent weights -> fused ops.

Each ``from_*`` returns a `jaxlstm.model.Model` (run it in JAX, or export it with
``jaxlstm.export_tflite``); the cell-level ``*_weights_from_*`` return the op weights and
options directly, for `jaxlstm.lstm` / `jaxlstm.unidirectional_sequence_lstm`.
"""

from jaxlstm.convert._flax import from_flax as from_flax
from jaxlstm.convert._flax import lstm_weights_from_flax as lstm_weights_from_flax
from jaxlstm.convert._flax import rnn_weights_from_flax as rnn_weights_from_flax
from jaxlstm.convert._keras import from_keras as from_keras
from jaxlstm.convert._lingvo import from_lingvo as from_lingvo
from jaxlstm.convert._lingvo import lstm_weights_from_lingvo as lstm_weights_from_lingvo
from jaxlstm.convert._tf1 import from_tf_v1_lstm_cell as from_tf_v1_lstm_cell
from jaxlstm.convert._tf1 import lstm_weights_from_tf_v1_cell as lstm_weights_from_tf_v1_cell
from jaxlstm.convert._torch import from_torch as from_torch

__all__ = (
    "from_flax",
    "from_keras",
    "from_lingvo",
    "from_tf_v1_lstm_cell",
    "from_torch",
    "lstm_weights_from_flax",
    "lstm_weights_from_lingvo",
    "lstm_weights_from_tf_v1_cell",
    "rnn_weights_from_flax",
)
