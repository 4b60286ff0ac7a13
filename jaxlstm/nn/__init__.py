"""Flax NNX layers over TFLite's fused recurrent ops: train in JAX, export the same model."""

from jaxlstm.nn.recurrent import GRU as GRU
from jaxlstm.nn.recurrent import LSTM as LSTM
from jaxlstm.nn.recurrent import BidirectionalGRU as BidirectionalGRU
from jaxlstm.nn.recurrent import BidirectionalLSTM as BidirectionalLSTM
from jaxlstm.nn.recurrent import BidirectionalRNN as BidirectionalRNN
from jaxlstm.nn.recurrent import SimpleRNN as SimpleRNN
from jaxlstm.nn.recurrent import flip_sequences as flip_sequences
from jaxlstm.nn.stack import LastTimeStep as LastTimeStep
from jaxlstm.nn.stack import Sequential as Sequential
from jaxlstm.nn.stack import Softmax as Softmax

__all__ = (
    "GRU",
    "LSTM",
    "BidirectionalGRU",
    "BidirectionalLSTM",
    "BidirectionalRNN",
    "LastTimeStep",
    "Sequential",
    "SimpleRNN",
    "Softmax",
    "flip_sequences",
)
