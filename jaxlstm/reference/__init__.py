"""Readable NumPy loops of the recurrent ops: the semantics the `jaxlstm.ops` functions are checked against.

Each function walks one batch row and one time step at a time, as the TFLite kernels do, with
no JAX (importing this package does not import it): `np_lstm` for the LSTM family, `np_rnn` for
the basic RNN family, `np_gru` for `jaxlstm.ops.gru`, and `np_common` for the pieces they share
(activations, TFLite's hybrid int8 arithmetic). Float weights run in float64; int8 weights run
TFLite's hybrid path in float32. Weights are read by TFLite tensor name from any object or dict,
e.g. `jaxlstm.ops.LSTMWeights`::

    from jaxlstm.reference import np_lstm

    y, h_T, c_T = np_lstm.unidirectional_sequence_lstm(x, weights)
"""
