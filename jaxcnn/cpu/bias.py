"""A bias add whose gradient XLA:CPU runs fast.

The bias gradient of a convolution is the output gradient summed over the batch and spatial
axes; XLA:CPU runs that reduction as a reduce-window (with VGG-16 at 224 they took ~0.15 s of a
~2.1 s forward-backward in a jax.profiler trace). Here it is `taps.channel_sum`, a matmul with
ones.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxcnn.cpu.taps import channel_sum


@jax.custom_vjp
def bias_add(y: jax.Array, bias: jax.Array) -> jax.Array:
    """y + bias (same dtype) over the last axis; the bias gradient is a float32 channel sum."""
    return y + bias


def _bias_add_fwd(y, bias):
    return y + bias, None


def _bias_add_bwd(_, dy):          # y and bias share a dtype: the layer casts the bias to y's
    return dy, channel_sum(dy.astype(jnp.float32)).astype(dy.dtype)


bias_add.defvjp(_bias_add_fwd, _bias_add_bwd)
