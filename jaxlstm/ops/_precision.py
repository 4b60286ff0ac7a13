"""The precision of the float ops' matmuls.

With JAX's default precision a backend may compute a float32 dot from narrower products:
TF32 on NVIDIA GPUs since Ampere, one bfloat16 pass on TPU
(https://docs.jax.dev/en/latest/201/precision.html). TFLite's float kernels multiply in
float32, so every float matmul of the ops asks for `FLOAT32`: float32 products on every
backend, whatever ``jax.default_matmul_precision`` says. (XLA:CPU computes float32 dots in
float32 at any precision, so on the CPU this changes nothing.) Narrower, faster matmuls are
an explicit choice of the LSTM ops: ``matmul_dtype=jnp.bfloat16``.
"""

import jax

FLOAT32 = jax.lax.Precision.HIGHEST
