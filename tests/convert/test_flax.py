"""flax linen / nnx recurrent modules -> fused ops: outputs match flax's own forward pass in
JAX and in LiteRT after export; the cell-level weights match one flax cell step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlstm.convert import from_flax, lstm_weights_from_flax, rnn_weights_from_flax
from jaxlstm.ops import LSTMState, lstm, rnn

from ._helpers import assert_converted_matches, assert_outputs_close

nn = pytest.importorskip("flax.linen")
from flax import nnx  # noqa: E402

BATCH, TIME, N_INPUT, HIDDEN = 2, 5, 3, 4


def _x(time_major: bool = False) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(BATCH, TIME, N_INPUT)).astype(np.float32)
    return np.ascontiguousarray(np.swapaxes(x, 0, 1)) if time_major else x


def _randomized(params):
    """Seeded normal(0, 0.5) values for every parameter, so zero-initialized biases are exercised."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(4)
    return jax.tree_util.tree_unflatten(
        tree, [rng.normal(scale=0.5, size=np.shape(v)).astype(np.float32) for v in leaves]
    )


LINEN_CASES = [
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN)), False, id="rnn_lstm_cell"),
    pytest.param(lambda: nn.RNN(nn.OptimizedLSTMCell(HIDDEN, activation_fn=nn.relu)), False, id="rnn_optimized_relu"),
    pytest.param(lambda: nn.RNN(nn.SimpleCell(HIDDEN)), False, id="rnn_simple_cell"),
    pytest.param(
        lambda: nn.RNN(nn.SimpleCell(HIDDEN, residual=True, activation_fn=jax.nn.relu6)),
        False,
        id="rnn_simple_cell_residual_relu6",
    ),
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN), reverse=True), False, id="rnn_reverse"),
    pytest.param(
        lambda: nn.RNN(nn.LSTMCell(HIDDEN), reverse=True, keep_order=True), False, id="rnn_reverse_keep_order"
    ),
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN), time_major=True), True, id="rnn_time_major"),
    pytest.param(
        lambda: nn.Bidirectional(nn.RNN(nn.LSTMCell(HIDDEN)), nn.RNN(nn.OptimizedLSTMCell(3))),
        False,
        id="bidirectional_lstm",
    ),
    pytest.param(
        lambda: nn.Bidirectional(nn.RNN(nn.SimpleCell(HIDDEN)), nn.RNN(nn.SimpleCell(2)), time_major=True),
        True,
        id="bidirectional_simple_time_major",
    ),
    pytest.param(lambda: nn.LSTMCell(HIDDEN), False, id="bare_lstm_cell"),
]


@pytest.mark.parametrize("make,time_major", LINEN_CASES)
def test_linen_module_matches_flax(make, time_major):
    module = make()
    x = _x(time_major)
    if isinstance(module, nn.RNNCellBase):  # a bare cell converts as nn.RNN(cell)
        wrapper = nn.RNN(module)
        variables = _randomized(wrapper.init(jax.random.key(0), x))
        expected = wrapper.apply(variables, x)
        variables = {"params": variables["params"]["cell"]}
    else:
        variables = _randomized(module.init(jax.random.key(0), x))
        expected = module.apply(variables, x)
    assert_converted_matches(from_flax(module, variables, batch_size=BATCH), [x], [expected])


def _nnx_cases():
    rngs = nnx.Rngs(0)
    yield pytest.param(lambda: nnx.RNN(nnx.LSTMCell(N_INPUT, HIDDEN, rngs=rngs)), id="rnn_lstm_cell")
    yield pytest.param(
        lambda: nnx.RNN(nnx.OptimizedLSTMCell(N_INPUT, HIDDEN, rngs=rngs), reverse=True), id="rnn_optimized_reverse"
    )
    yield pytest.param(
        lambda: nnx.RNN(nnx.SimpleCell(N_INPUT, HIDDEN, activation_fn=jax.nn.relu, rngs=rngs)), id="rnn_simple_relu"
    )
    yield pytest.param(
        lambda: nnx.Bidirectional(
            nnx.RNN(nnx.LSTMCell(N_INPUT, HIDDEN, rngs=rngs)),
            nnx.RNN(nnx.OptimizedLSTMCell(N_INPUT, 3, rngs=rngs)),
            rngs=rngs,
        ),
        id="bidirectional_lstm",
    )


@pytest.mark.parametrize("make", _nnx_cases())
def test_nnx_module_matches_flax(make):
    module = make()
    nnx.update(module, _randomized(nnx.state(module, nnx.Param)))
    x = _x()
    assert_converted_matches(from_flax(module, batch_size=BATCH), [x], [module(x)])


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: (nn.LSTMCell(HIDDEN), None), id="linen_lstm_cell"),
        pytest.param(lambda: (nn.OptimizedLSTMCell(HIDDEN), None), id="linen_optimized"),
        pytest.param(lambda: (nnx.LSTMCell(N_INPUT, HIDDEN, rngs=nnx.Rngs(0)), "nnx"), id="nnx_lstm_cell"),
        pytest.param(lambda: (nnx.OptimizedLSTMCell(N_INPUT, HIDDEN, rngs=nnx.Rngs(0)), "nnx"), id="nnx_optimized"),
    ],
)
def test_lstm_weights_step_matches_cell_with_carry(make):
    """One `jaxlstm.lstm` step from a nonzero state equals the cell's step: flax's carry is
    (c, h), `LSTMState` is (h, c)."""
    cell, flavour = make()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(BATCH, N_INPUT)).astype(np.float32)
    c, h = (rng.normal(size=(BATCH, HIDDEN)).astype(np.float32) for _ in range(2))
    if flavour == "nnx":
        nnx.update(cell, _randomized(nnx.state(cell, nnx.Param)))
        (c_new, h_new), _ = cell((c, h), x)
        weights, options = lstm_weights_from_flax(cell)
    else:
        params = _randomized(cell.init(jax.random.key(0), (c, h), x))
        (c_new, h_new), _ = cell.apply(params, (c, h), x)
        weights, options = lstm_weights_from_flax(cell, params)
    y, state = lstm(x, weights, LSTMState(h, c), options=options)
    assert_outputs_close([y, state.output_state, state.cell_state], [h_new, h_new, c_new])


def test_rnn_weights_step_matches_simple_cell():
    cell = nnx.SimpleCell(N_INPUT, HIDDEN, residual=True, rngs=nnx.Rngs(0))
    nnx.update(cell, _randomized(nnx.state(cell, nnx.Param)))
    rng = np.random.default_rng(6)
    x, h = rng.normal(size=(BATCH, N_INPUT)).astype(np.float32), rng.normal(size=(BATCH, HIDDEN)).astype(np.float32)
    h_new, _ = cell(h, x)
    weights, options = rnn_weights_from_flax(cell)
    y, _ = rnn(x, weights, h, options=options)
    assert_outputs_close([y], [h_new])


UNSUPPORTED = [
    pytest.param(lambda: nn.RNN(nn.MGUCell(HIDDEN)), "MGUCell", id="mgu_cell"),
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN, gate_fn=jax.nn.hard_sigmoid)), "gate_fn", id="hard_sigmoid_gates"),
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN, activation_fn=jax.nn.gelu)), "activation", id="gelu"),
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN), return_carry=True), "return_carry", id="return_carry"),
    pytest.param(lambda: nn.RNN(nn.LSTMCell(HIDDEN, carry_init=nn.initializers.ones)), "carry_init", id="carry_init"),
    pytest.param(
        lambda: nn.Bidirectional(nn.RNN(nn.LSTMCell(HIDDEN)), nn.RNN(nn.LSTMCell(HIDDEN)), merge_fn=lambda a, b: a + b),
        "merge_fn",
        id="custom_merge_fn",
    ),
]


@pytest.mark.parametrize("make,feature", UNSUPPORTED)
def test_unsupported_flax_feature_raises_not_implemented(make, feature):
    module = make()
    variables = module.init(jax.random.key(0), _x())
    with pytest.raises(NotImplementedError, match="Workaround") as error:
        from_flax(module, variables)
    assert feature in str(error.value)


def test_nnx_rejects_params_and_linen_needs_them():
    with pytest.raises(TypeError, match="params=None"):
        from_flax(nnx.LSTMCell(N_INPUT, HIDDEN, rngs=nnx.Rngs(0)), {"params": {}})
    with pytest.raises(TypeError, match="variables"):
        from_flax(nn.RNN(nn.LSTMCell(HIDDEN)))


def test_bfloat16_params_become_float32():
    cell = nn.LSTMCell(HIDDEN)
    params = cell.init(jax.random.key(0), cell.initialize_carry(jax.random.key(1), (BATCH, N_INPUT)), _x()[:, 0])
    weights, _ = lstm_weights_from_flax(cell, jax.tree_util.tree_map(lambda v: v.astype(jnp.bfloat16), params))
    assert weights.input_to_forget_weights.dtype == np.float32
