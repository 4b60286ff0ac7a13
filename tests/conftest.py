"""Shared test configuration: deterministic RNG, float32 by default."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# `import tensorflow` imports Keras 3 and fixes its backend: whichever test imports TensorFlow
# first, Keras 3 runs on JAX, as the Keras 3 tests expect.
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(0)
