"""The wing's `Conv` (`jaxcnn.cpu.layers`) is `nn.Conv`: the same parameters and initial values,
outputs and gradients (the bias gradient to float32 rounding: `jaxcnn.cpu.bias`'s matmul with ones
instead of XLA's tree reduction)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import models
from jaxcnn.cpu import bias as bias_forms
from jaxcnn.cpu import layers
from jaxcnn.models import summary


def test_conv_equals_flax_conv():
    kwargs = dict(features=6, kernel_size=(3, 3), strides=(2, 1), padding=[(1, 1), (0, 2)],
                  feature_group_count=2, dtype=jnp.float32)
    ours, theirs = layers.Conv(**kwargs), nn.Conv(**kwargs)
    x = jax.random.normal(jax.random.key(0), (3, 9, 8, 4))
    variables = theirs.init(jax.random.key(1), x)
    jax.tree.map(np.testing.assert_array_equal, ours.init(jax.random.key(1), x), variables)
    params = {**variables["params"], "bias": jax.random.normal(jax.random.key(2), (6,))}
    cotangent = jax.random.normal(jax.random.key(3), theirs.apply({"params": params}, x).shape)

    def value_and_grads(module):
        f = jax.jit(lambda p, x: module.apply({"params": p}, x))
        y, vjp = jax.vjp(f, params, x)
        return y, vjp(cotangent)

    for got, want in zip(jax.tree.leaves(value_and_grads(ours)),
                         jax.tree.leaves(value_and_grads(theirs))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bias_gradient_is_a_matmul_on_cpu_and_macs_are_counted():
    y, bias = jnp.ones((2, 3, 3, 4)), jnp.zeros(4)
    grad = lambda add: str(jax.make_jaxpr(jax.grad(lambda b: add(y, b).sum()))(bias))
    channel_reduction = "reduce_sum[axes=(0, 1, 2)"
    assert channel_reduction in grad(lambda y, b: y + b)
    assert channel_reduction not in grad(bias_forms.bias_add)
    model = models.create("convnet_cifar", 10, width=8)
    # conv1 on 8×8, conv2 on 4×4, the logits conv on 2×2 (SAME pools): the inner nn.Conv counts
    assert summary.analytic_macs(model, (8, 8, 3)) == 64 * 75 * 8 + 16 * 200 * 8 + 4 * 200 * 10
