"""Loop-based NumPy references (no JAX) for TFLite's recurrent ops: the oracle of the test suite.

Tests import these as ``reference.np_lstm`` and ``reference.np_rnn`` (``tests/`` is on
``sys.path`` through the root ``conftest.py``).
"""
