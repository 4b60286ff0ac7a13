"""jaxlstm._text: error messages keep their cause and kind."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm._text import located, plain


@pytest.mark.parametrize("kind", [ValueError, TypeError, NotImplementedError], ids=lambda k: k.__name__)
def test_located_keeps_kind_and_message(kind):
    error = kind("bad shape")
    new = located("subgraph 0, operator 3 (FULLY_CONNECTED)", error)
    assert type(new) is kind
    assert str(new) == "subgraph 0, operator 3 (FULLY_CONNECTED): bad shape"


def test_located_rebuilds_subclasses_with_other_constructors():
    """JAX's ConcretizationTypeError takes a tracer, not a message: the built-in kind is used."""

    @jax.jit
    def f(x):
        return float(x)

    with pytest.raises(TypeError) as info:
        f(jnp.ones(()))
    assert type(info.value) is not TypeError  # a subclass with its own constructor
    new = located("here", info.value)
    assert type(new) is TypeError and str(new).startswith("here: ")


def test_operator_errors_chain_their_cause():
    from jaxlstm.model.builder import ModelBuilder

    b = ModelBuilder()
    x = b.add_input("x", (2, 3))
    y = b.add_fully_connected(x, np.ones((4, 5), np.float32), np.zeros(4, np.float32))
    model = b.build([y])
    with pytest.raises((ValueError, TypeError)) as info:
        model(jnp.ones((2, 3)))
    assert "FULLY_CONNECTED" in str(info.value)
    assert info.value.__cause__ is not None


def test_plain_removes_colour_codes():
    assert plain("\x1b[1mbold\x1b[0m text") == "bold text"
