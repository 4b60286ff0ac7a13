"""`jaxlstm.nn.Sequential`: stacking, heads, export, training and data-parallel sharding."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxlstm.nn import LSTM, BidirectionalLSTM, LastTimeStep, Sequential, SimpleRNN, Softmax
from jaxlstm.tflite import export_tflite

from ._layers import SAME_MATH_TOL, TOL, B, I, T, inputs, randomize


def classifier(seed=0):
    rngs = nnx.Rngs(seed)
    return randomize(
        Sequential(
            LSTM(I, 5, rngs=rngs),
            BidirectionalLSTM(5, 3, use_peephole=True, rngs=rngs),
            SimpleRNN(6, 4, rngs=rngs),
            LastTimeStep(),
            nnx.Linear(4, 3, rngs=rngs),
            Softmax(),
        ),
        seed,
    )


def test_sequential_is_its_layers_in_order():
    model = classifier()
    x = inputs()
    y = x
    for layer in model.layers:
        y = layer(y)
    np.testing.assert_array_equal(model(x), y)
    np.testing.assert_allclose(np.sum(y, axis=-1), 1.0, rtol=1e-6)


def test_sequential_export_matches_litert():
    litert = pytest.importorskip("jaxlstm.parity.litert")
    model = classifier()
    x = inputs()
    exported = model.to_model()
    assert exported.opcodes == [
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "BIDIRECTIONAL_SEQUENCE_LSTM",
        "CONCATENATION",
        "UNIDIRECTIONAL_SEQUENCE_RNN",
        "STRIDED_SLICE",
        "FULLY_CONNECTED",
        "SOFTMAX",
    ]
    assert "layers/0/input_to_forget_weights" in exported.params  # names follow the module paths
    assert "layers/1/fw/input_to_forget_weights" in exported.params
    # nnx.Linear's kernel [in, out] is written in FULLY_CONNECTED's [out, in] layout.
    np.testing.assert_array_equal(exported.params["layers/4/weights"], model.layers[4].kernel[...].T)
    np.testing.assert_allclose(exported(x)[0], model(x), atol=SAME_MATH_TOL, rtol=0)
    got = litert.run_litert(export_tflite(model), [x], state_batch=B)[0][0]
    np.testing.assert_allclose(got, model(x), atol=TOL, rtol=0)


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
def test_last_time_step(time_major):
    x = inputs(time_major)
    last = LastTimeStep(time_major=time_major)
    rows = np.swapaxes(x, 0, 1) if time_major else x
    np.testing.assert_array_equal(last(x), rows[:, -1])
    lengths = np.array([T, 1, 4])
    np.testing.assert_array_equal(last(x, seq_lengths=jnp.asarray(lengths)), rows[np.arange(B), lengths - 1])


def test_sequential_passes_seq_lengths():
    rngs = nnx.Rngs(0)
    lstm = LSTM(I, 5, rngs=rngs)
    model = Sequential(lstm, LastTimeStep(), nnx.Linear(5, 2, rngs=rngs))
    x, lengths = inputs(), jnp.array([T, 2, 4])
    expected = model.layers[2](lstm(x, seq_lengths=lengths)[jnp.arange(B), lengths - 1])
    np.testing.assert_allclose(model(x, seq_lengths=lengths), expected, atol=SAME_MATH_TOL, rtol=0)


def test_unexportable_layer():
    model = Sequential(LSTM(I, 5, rngs=nnx.Rngs(0)), jax.nn.relu)
    assert model(inputs()).shape == (B, T, 5)
    with pytest.raises(NotImplementedError, match=r"layer 1 \(relu\) has no TFLite export"):
        model.to_model()


def test_first_layer_must_be_recurrent():
    with pytest.raises(TypeError, match=r"first layer must be a jaxlstm\.nn recurrent layer, got Linear"):
        Sequential(nnx.Linear(I, 3, rngs=nnx.Rngs(0)))


def test_training_reduces_loss():
    """Adam on the fused ops learns to output the mean of a sequence's first feature."""
    rngs = nnx.Rngs(0)
    model = Sequential(LSTM(2, 8, rngs=rngs), LastTimeStep(), nnx.Linear(8, 1, rngs=rngs))
    x = np.random.default_rng(0).uniform(-1, 1, (64, 5, 2)).astype(np.float32)
    target = x[:, :, :1].mean(axis=1)
    graphdef, params = nnx.split(model, nnx.Param)
    optimizer = optax.adam(0.03)

    def loss_fn(params):
        return jnp.mean((nnx.merge(graphdef, params)(x) - target) ** 2)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    losses = []
    for _ in range(100):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.1 * losses[0]


_SHARDED_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding, PartitionSpec as P
    from jaxlstm.nn import LSTM, LastTimeStep, Sequential

    rngs = nnx.Rngs(0)
    model = Sequential(LSTM(3, 8, rngs=rngs), LastTimeStep(), nnx.Linear(8, 2, rngs=rngs))
    graphdef, params = nnx.split(model)
    x = np.random.default_rng(0).standard_normal((4, 6, 3)).astype(np.float32)
    lengths = np.array([6, 3, 5, 1], np.int32)

    @jax.jit
    def loss_and_grads(params, x, lengths):
        def loss(params):
            return jnp.mean(nnx.merge(graphdef, params)(x, seq_lengths=lengths) ** 2)
        return jax.value_and_grad(loss)(params)

    plain = loss_and_grads(params, x, lengths)
    mesh = jax.make_mesh((2,), ("data",))
    data = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    sharded = loss_and_grads(jax.device_put(params, replicated), jax.device_put(x, data),
                             jax.device_put(lengths, data))
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), plain, sharded))
    print(json.dumps({"devices": len(jax.devices()), "max_diff": max(diffs),
                      "input_devices": len(jax.device_put(x, data).sharding.device_set)}))
""")


@pytest.mark.slow  # a fresh interpreter with two host devices imports and compiles everything: ~12 s
def test_data_parallel_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 2 and result["input_devices"] == 2
    assert result["max_diff"] <= SAME_MATH_TOL  # same float32 math, split by batch rows
