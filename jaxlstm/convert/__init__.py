"""Converters: Keras, tf_keras, TF1 cells, Lingvo, flax and PyTorch recurrent weights -> fused ops.

Every framework -> weights mapping lives here. Each ``from_*`` returns a `jaxlstm.model.Model`
(run it in JAX, or export it with ``jaxlstm.export_tflite``). The cell-level
``{lstm,rnn,gru}_weights_from_{source}`` return the op weights of one direction, for
`jaxlstm.ops` (`unidirectional_sequence_lstm`, `gru`, ...): from a cell or its variables
(flax, Lingvo, TF1) with the options the cell implies, as ``(weights, options)``; from
arrays (Keras ``layer.get_weights()``, one PyTorch layer and direction, packed matrices in
any gate order) as the weights alone.
"""

from jaxlstm.convert._flax import from_flax as from_flax
from jaxlstm.convert._flax import gru_weights_from_flax as gru_weights_from_flax
from jaxlstm.convert._flax import lstm_weights_from_flax as lstm_weights_from_flax
from jaxlstm.convert._flax import rnn_weights_from_flax as rnn_weights_from_flax
from jaxlstm.convert._gates import gru_weights_from_fused as gru_weights_from_fused
from jaxlstm.convert._gates import lstm_weights_from_fused as lstm_weights_from_fused
from jaxlstm.convert._keras import from_keras as from_keras
from jaxlstm.convert._keras import gru_weights_from_keras as gru_weights_from_keras
from jaxlstm.convert._lingvo import from_lingvo as from_lingvo
from jaxlstm.convert._lingvo import lstm_weights_from_lingvo as lstm_weights_from_lingvo
from jaxlstm.convert._tf1 import from_tf_v1_lstm_cell as from_tf_v1_lstm_cell
from jaxlstm.convert._tf1 import lstm_weights_from_tf_v1_cell as lstm_weights_from_tf_v1_cell
from jaxlstm.convert._torch import from_torch as from_torch
from jaxlstm.convert._torch import gru_weights_from_torch as gru_weights_from_torch
from jaxlstm.convert._torch import lstm_weights_from_torch as lstm_weights_from_torch
from jaxlstm.convert._torch import rnn_weights_from_torch as rnn_weights_from_torch

__all__ = (
    "from_flax",
    "from_keras",
    "from_lingvo",
    "from_tf_v1_lstm_cell",
    "from_torch",
    "gru_weights_from_flax",
    "gru_weights_from_fused",
    "gru_weights_from_keras",
    "gru_weights_from_torch",
    "lstm_weights_from_flax",
    "lstm_weights_from_fused",
    "lstm_weights_from_lingvo",
    "lstm_weights_from_tf_v1_cell",
    "lstm_weights_from_torch",
    "rnn_weights_from_flax",
    "rnn_weights_from_torch",
)
