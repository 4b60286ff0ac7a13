"""TFLite's fused recurrent operators as pure, jitted JAX functions (imports jax and numpy only)."""

from jaxlstm.ops._activations import ACTIVATIONS as ACTIVATIONS
from jaxlstm.ops._quant import QuantizedTensor as QuantizedTensor
from jaxlstm.ops._quant import quantize_symmetric as quantize_symmetric
from jaxlstm.ops.gru import GRU_GATES as GRU_GATES
from jaxlstm.ops.gru import GRUOptions as GRUOptions
from jaxlstm.ops.gru import GRUWeights as GRUWeights
from jaxlstm.ops.gru import gru as gru
from jaxlstm.ops.gru import gru_cell as gru_cell
from jaxlstm.ops.lstm import GATES as GATES
from jaxlstm.ops.lstm import GateVectors as GateVectors
from jaxlstm.ops.lstm import LSTMOptions as LSTMOptions
from jaxlstm.ops.lstm import LSTMState as LSTMState
from jaxlstm.ops.lstm import LSTMWeights as LSTMWeights
from jaxlstm.ops.lstm import basic_lstm_cell as basic_lstm_cell
from jaxlstm.ops.lstm import bidirectional_sequence_lstm as bidirectional_sequence_lstm
from jaxlstm.ops.lstm import lstm as lstm
from jaxlstm.ops.lstm import lstm_cell as lstm_cell
from jaxlstm.ops.lstm import lstm_cell_fused as lstm_cell_fused
from jaxlstm.ops.lstm import lstm_gate as lstm_gate
from jaxlstm.ops.lstm import lstm_output as lstm_output
from jaxlstm.ops.lstm import lstm_projection as lstm_projection
from jaxlstm.ops.lstm import unidirectional_sequence_lstm as unidirectional_sequence_lstm
from jaxlstm.ops.lstm import update_cell as update_cell
from jaxlstm.ops.lstm import zero_state as zero_state
from jaxlstm.ops.lstm_integer import LSTMQuantization as LSTMQuantization
from jaxlstm.ops.lstm_integer import QuantParams as QuantParams
from jaxlstm.ops.lstm_integer import lstm_integer as lstm_integer
from jaxlstm.ops.lstm_integer import unidirectional_sequence_lstm_integer as unidirectional_sequence_lstm_integer
from jaxlstm.ops.rnn import RNNOptions as RNNOptions
from jaxlstm.ops.rnn import RNNWeights as RNNWeights
from jaxlstm.ops.rnn import bidirectional_sequence_rnn as bidirectional_sequence_rnn
from jaxlstm.ops.rnn import rnn as rnn
from jaxlstm.ops.rnn import rnn_cell as rnn_cell
from jaxlstm.ops.rnn import unidirectional_sequence_rnn as unidirectional_sequence_rnn

__all__ = (
    "ACTIVATIONS",
    "GATES",
    "GRU_GATES",
    "GRUOptions",
    "GRUWeights",
    "GateVectors",
    "LSTMOptions",
    "LSTMQuantization",
    "LSTMState",
    "LSTMWeights",
    "QuantParams",
    "QuantizedTensor",
    "RNNOptions",
    "RNNWeights",
    "basic_lstm_cell",
    "bidirectional_sequence_lstm",
    "bidirectional_sequence_rnn",
    "gru",
    "gru_cell",
    "lstm",
    "lstm_cell",
    "lstm_cell_fused",
    "lstm_gate",
    "lstm_integer",
    "lstm_output",
    "lstm_projection",
    "quantize_symmetric",
    "rnn",
    "rnn_cell",
    "unidirectional_sequence_lstm",
    "unidirectional_sequence_lstm_integer",
    "unidirectional_sequence_rnn",
    "update_cell",
    "zero_state",
)
