"""`Sequential`: a stack of recurrent layers and a head that trains in JAX and exports as one model.

    model = Sequential(
        LSTM(8, 64, rngs=rngs), LSTM(64, 64, rngs=rngs), LastTimeStep(), nnx.Linear(64, 10, rngs=rngs)
    )
    logits = model(x)                                       # [B, T, 8] -> [B, 10]
    Sequential(*model.layers, Softmax()).to_model()         # ... -> STRIDED_SLICE -> FULLY_CONNECTED -> SOFTMAX

Exported tensor names follow the module paths: ``layers/0/input_to_forget_weights``,
``layers/3/weights`` (an `nnx.Linear` kernel [in, out] is written transposed, in TFLite's
FULLY_CONNECTED layout [out, in]).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxlstm.model import ModelBuilder, Ref
from jaxlstm.nn.recurrent import RECURRENT_LAYERS, _check_lengths, _Exportable


class LastTimeStep(nnx.Module):
    """The last time step: ``[B, T, F] -> [B, F]`` (exports as STRIDED_SLICE).

    With ``seq_lengths`` it takes each row's last valid step, ``x[b, seq_lengths[b] - 1]``;
    the exported slice always takes step T - 1 (see `jaxlstm.nn.recurrent` on padding).

    Args:
      time_major: the input is [T, B, F].
    """

    def __init__(self, *, time_major: bool = False):
        self.time_major = time_major

    def __call__(self, x: jax.Array, *, seq_lengths: jax.Array | None = None) -> jax.Array:
        """x: [B, T, F] (or [T, B, F]) -> [B, F]."""
        if x.ndim != 3:
            raise ValueError(f"LastTimeStep: input has shape {tuple(x.shape)}, expected rank 3 [B, T, F]")
        if not self.time_major:
            x = jnp.swapaxes(x, 0, 1)
        seq_lengths = _check_lengths("LastTimeStep", seq_lengths, x.shape[1])
        if seq_lengths is None:
            return x[-1]
        return jnp.take_along_axis(x, jnp.maximum(seq_lengths - 1, 0)[None, :, None], axis=0)[0]

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "last_time_step") -> Ref:
        return builder.add_last_time_step(x, time_major=self.time_major, name=name)


class Softmax(nnx.Module):
    """Softmax over the last axis (exports as SOFTMAX)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(x, axis=-1)

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "softmax") -> Ref:
        return builder.add_softmax(x, name=name)


def _add_linear(builder: ModelBuilder, layer: nnx.Linear, x: Ref, name: str) -> Ref:
    """`nnx.Linear` as FULLY_CONNECTED: its kernel [in, out] becomes weights [out, in]."""
    bias = None if layer.bias is None else layer.bias[...]
    return builder.add_fully_connected(x, layer.kernel[...].T, bias, name=name)


_EXPORTABLE = (
    "LSTM, BidirectionalLSTM, SimpleRNN, BidirectionalRNN, GRU, BidirectionalGRU, nnx.Linear, LastTimeStep, Softmax"
)


class Sequential(nnx.Module, _Exportable):
    """Applies `layers` in order; passes ``seq_lengths`` to the layers that take it.

    Args:
      *layers: the first one a `jaxlstm.nn` recurrent layer (it fixes the input size and
        layout); then recurrent layers, `LastTimeStep`, `nnx.Linear`, `Softmax` (the ones
        that export) or any callable (JAX only).

    Example usage::

      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxlstm.nn import LSTM
      >>> rngs = nnx.Rngs(0)
      >>> model = Sequential(LSTM(3, 4, rngs=rngs), LastTimeStep(), nnx.Linear(4, 2, rngs=rngs))
      >>> model(jnp.ones((5, 7, 3))).shape
      (5, 2)
      >>> model.to_model().opcodes
      ['UNIDIRECTIONAL_SEQUENCE_LSTM', 'STRIDED_SLICE', 'FULLY_CONNECTED']
    """

    _export_name = "layers"

    def __init__(self, *layers):
        if not layers or not isinstance(layers[0], RECURRENT_LAYERS):
            first = type(layers[0]).__name__ if layers else "nothing"
            raise TypeError(f"Sequential: the first layer must be a jaxlstm.nn recurrent layer, got {first}")
        self.layers = nnx.List(layers)
        self.in_features = layers[0].in_features
        self.time_major = layers[0].time_major

    def __call__(self, x: jax.Array, *, seq_lengths: jax.Array | None = None) -> jax.Array:
        """Runs the stack; `seq_lengths` [B] reaches recurrent layers and `LastTimeStep`."""
        for layer in self.layers:
            if seq_lengths is not None and isinstance(layer, (*RECURRENT_LAYERS, LastTimeStep)):
                x = layer(x, seq_lengths=seq_lengths)
            else:
                x = layer(x)
        return x

    def add_to(self, builder: ModelBuilder, x: Ref, name: str = "layers") -> Ref:
        """Adds every layer's operators to `builder`; layer i is named ``{name}/{i}``."""
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nnx.Linear):
                x = _add_linear(builder, layer, x, f"{name}/{i}")
            elif hasattr(layer, "add_to"):
                x = layer.add_to(builder, x, f"{name}/{i}")
            else:
                what = getattr(layer, "__name__", type(layer).__name__)
                raise NotImplementedError(
                    f"Sequential: layer {i} ({what}) has no TFLite export; "
                    f"exportable layers: {_EXPORTABLE}. Apply it outside the exported model."
                )
        return x
