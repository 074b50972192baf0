"""The wing's `BatchNorm` (`jaxcnn.cpu.layers`) equals `nn.BatchNorm`: the same variables, outputs,
gradients and running averages (to float32 rounding: `jaxcnn.cpu.norm`'s channel sums are matmuls,
XLA's reductions are trees); what it computes where lowered for GPU / TPU is `nn.BatchNorm`'s own
arithmetic, bit for bit."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.cpu import layers, norm, taps


@pytest.mark.parametrize("shape", [(4, 6, 5, 3), (7, 8)])
def test_batch_norm_equals_flax(shape):
    kx, ks, kb, kc = jax.random.split(jax.random.key(0), 4)
    x = 3.0 * jax.random.normal(kx, shape) + 1.0
    cotangent = jax.random.normal(kc, shape)
    kwargs = dict(momentum=0.9, epsilon=1e-5)
    flax_bn = nn.BatchNorm(use_running_average=False, **kwargs)
    ours = layers.BatchNorm(use_running_average=False, **kwargs)
    variables = flax_bn.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x)) == jax.tree.map(
        jnp.shape, variables)
    params = {"scale": jax.random.normal(ks, shape[-1:]), "bias": jax.random.normal(kb, shape[-1:])}

    def train(module):
        def loss(params, x):
            y, updates = module.apply({"params": params, **{
                "batch_stats": variables["batch_stats"]}}, x, mutable=["batch_stats"])
            return jnp.vdot(y, cotangent), (y, updates)
        grads, (y, updates) = jax.jit(jax.grad(loss, (0, 1), has_aux=True))(params, x)
        return y, grads, updates

    for got, want in zip(jax.tree.leaves(train(ours)), jax.tree.leaves(train(flax_bn))):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    evaluate = lambda m: m.clone(use_running_average=True).apply(
        {"params": params, "batch_stats": {"mean": x.mean(range(x.ndim - 1)),
                                           "var": x.var(range(x.ndim - 1))}}, x)
    np.testing.assert_allclose(evaluate(ours), evaluate(flax_bn), rtol=1e-5, atol=1e-5)


def test_channel_sum_and_bfloat16_output():
    x = jax.random.normal(jax.random.key(0), (3, 4, 5))
    np.testing.assert_allclose(taps.channel_sum(x), x.sum((0, 1)), rtol=1e-5, atol=1e-5)
    bn = layers.BatchNorm(dtype=jnp.bfloat16)
    y, _ = bn.apply(bn.init(jax.random.key(0), x), x, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_arithmetic_off_cpu_is_flax_batch_norms_bit_for_bit(dtype):
    x = (3.0 * jax.random.normal(jax.random.key(0), (4, 6, 5, 3)) + 1.0).astype(dtype)
    flax_bn = nn.BatchNorm(use_running_average=False, momentum=0.9, epsilon=1e-5, dtype=dtype)
    variables = flax_bn.init(jax.random.key(1), x)
    params = {"scale": jax.random.normal(jax.random.key(2), (3,)),
              "bias": jax.random.normal(jax.random.key(3), (3,))}
    y, updates = jax.jit(lambda p, x: flax_bn.apply({"params": p, **{
        "batch_stats": variables["batch_stats"]}}, x, mutable=["batch_stats"]))(params, x)
    ours, mean, var = jax.jit(norm.flax_batch_norm_train, static_argnums=3)(
        x.astype(jnp.float32), params["scale"], params["bias"], 1e-5)
    np.testing.assert_array_equal(ours.astype(dtype), y)
    stats = {"mean": (1 - 0.9) * mean, "var": 0.9 + (1 - 0.9) * var}
    jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-6),
                 stats, updates["batch_stats"])
