"""TFLite operator input tables, declared once: input position <-> tensor name.

The names are the `LSTMWeights` / `RNNWeights` field names, so the importer, the exporter
and the model runtime all map positions to weights through these tuples
(tflite/kernels/lstm_shared.h, bidirectional_sequence_lstm.cc, basic_rnn.cc,
bidirectional_sequence_rnn.cc).
"""

from __future__ import annotations

from jaxlstm.ops.lstm import GATES

# LSTM (FULL kernel) and UNIDIRECTIONAL_SEQUENCE_LSTM: 24 inputs (the legacy 20 omit layer norm).
_LSTM_DIRECTION = (
    *(f"input_to_{g}_weights" for g in GATES),  # 1-4
    *(f"recurrent_to_{g}_weights" for g in GATES),  # 5-8
    *(f"cell_to_{g}_weights" for g in ("input", "forget", "output")),  # 9-11
    *(f"{g}_gate_bias" for g in GATES),  # 12-15
    "projection_weights",  # 16
    "projection_bias",  # 17
)
LSTM_INPUTS = (
    "input",
    *_LSTM_DIRECTION,
    "output_state",  # 18, variable
    "cell_state",  # 19, variable
    *(f"{g}_layer_norm_coefficients" for g in GATES),  # 20-23
)
LSTM_STATE_INPUTS = {"output_state": 18, "cell_state": 19}

# LSTM with kernel_type=BASIC: 5 inputs, 4 outputs (lstm.cc).
BASIC_LSTM_INPUTS = ("input", "prev_activation", "weights", "bias", "prev_state")

# BIDIRECTIONAL_SEQUENCE_LSTM: 48 inputs.
BIDIRECTIONAL_LSTM_INPUTS = (
    "input",
    *(f"fw_{n}" for n in _LSTM_DIRECTION),  # 1-17
    *(f"bw_{n}" for n in _LSTM_DIRECTION),  # 18-34
    "fw_output_state",  # 35, variable
    "fw_cell_state",  # 36, variable
    "bw_output_state",  # 37, variable
    "bw_cell_state",  # 38, variable
    "aux_input",  # 39
    *(f"fw_aux_input_to_{g}_weights" for g in GATES),  # 40-43
    *(f"bw_aux_input_to_{g}_weights" for g in GATES),  # 44-47
)

# RNN and UNIDIRECTIONAL_SEQUENCE_RNN: 5 inputs.
RNN_INPUTS = ("input", "input_weights", "recurrent_weights", "bias", "hidden_state")

# BIDIRECTIONAL_SEQUENCE_RNN: 12 inputs.
BIDIRECTIONAL_RNN_INPUTS = (
    "input",
    "fw_input_weights",
    "fw_recurrent_weights",
    "fw_bias",
    "fw_hidden_state",  # 4, variable
    "bw_input_weights",
    "bw_recurrent_weights",
    "bw_bias",
    "bw_hidden_state",  # 8, variable
    "aux_input",
    "fw_aux_input_weights",
    "bw_aux_input_weights",
)

# Input names of each recurrent operator, by operator name.
INPUTS_BY_OPERATOR = {
    "LSTM": LSTM_INPUTS,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": LSTM_INPUTS,
    "BIDIRECTIONAL_SEQUENCE_LSTM": BIDIRECTIONAL_LSTM_INPUTS,
    "RNN": RNN_INPUTS,
    "UNIDIRECTIONAL_SEQUENCE_RNN": RNN_INPUTS,
    "BIDIRECTIONAL_SEQUENCE_RNN": BIDIRECTIONAL_RNN_INPUTS,
}

# Inputs that are variable tensors (the op writes them back), per operator.
VARIABLE_INPUTS = {
    "LSTM": ("output_state", "cell_state"),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": ("output_state", "cell_state"),
    "BIDIRECTIONAL_SEQUENCE_LSTM": (
        "fw_output_state",
        "fw_cell_state",
        "bw_output_state",
        "bw_cell_state",
    ),
    "RNN": ("hidden_state",),
    "UNIDIRECTIONAL_SEQUENCE_RNN": ("hidden_state",),
    "BIDIRECTIONAL_SEQUENCE_RNN": ("fw_hidden_state", "bw_hidden_state"),
}
