"""Shared test configuration: deterministic RNG, float32 by default."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras 3 fixes its backend at first import, which may come through TensorFlow; the tests run
# it on JAX (the Keras-on-TensorFlow models are made in subprocesses).
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
