"""`nn.Conv` and `nn.BatchNorm` as the wing stages them: the same variables, initial values and,
where the program is lowered for GPU / TPU, the same arithmetic; where it is lowered for CPU the
ops take `policy`'s forms. `jaxcnn.models.layers` builds these where `policy.offered`, flax's own
layers elsewhere.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.cpu import policy


class Conv(nn.Module):
    """`nn.Conv(features, kernel_size, strides, padding, feature_group_count, kernel_init, dtype)`
    (kernel and a zero-initialised float32 bias) whose convolution takes the form of
    `policy.conv_general_dilated` and whose bias add `policy.bias_add`'s where lowered for CPU."""
    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] | int = 1
    padding: Any = "SAME"
    feature_group_count: int = 1
    kernel_init: Callable = nn.initializers.lecun_normal()
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        conv = nn.Conv(self.features, self.kernel_size, self.strides, padding=self.padding,
                       feature_group_count=self.feature_group_count, use_bias=False,
                       kernel_init=self.kernel_init, dtype=self.dtype,
                       conv_general_dilated=policy.conv_general_dilated)
        nn.share_scope(self, conv)
        y = conv(x)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return policy.bias_add(y, bias.astype(y.dtype))


class BatchNorm(nn.Module):
    """`nn.BatchNorm(use_running_average, momentum, epsilon, dtype)` over all axes but the last
    (scale, bias; batch statistics mean, var), its training-mode statistics and normalisation
    computed by `policy.batch_norm_train`, in float32; output in `dtype` (default: the input's)."""
    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        features = (x.shape[-1],)
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                                features)
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), features)
        scale = self.param("scale", nn.initializers.ones, features, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, features, jnp.float32)
        dtype = self.dtype or x.dtype
        x32 = x.astype(jnp.float32)
        if self.use_running_average:
            y = (x32 - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
            return y.astype(dtype)
        y, mean, var = policy.batch_norm_train(x32, scale, bias, self.epsilon)
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y.astype(dtype)
