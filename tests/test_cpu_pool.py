"""`jaxcnn.cpu.pool.max_pool` equals `nn.max_pool`: values exactly, gradients exactly for windows that do
not overlap (ties included: the first maximum of a window gets the gradient, as in XLA's
select-and-scatter) and to float32 rounding where overlapping windows sum into one input."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.cpu import policy, pool
from jaxcnn.models import layers

CASES = {  # x shape, window, stride, padding, overlapping
    "vgg_2x2": ((2, 8, 8, 3), 2, 2, "VALID", False),
    "odd_size_valid": ((2, 9, 7, 3), 2, 2, "VALID", False),
    "same_padding": ((2, 7, 7, 3), 2, 2, "SAME", False),
    "alexnet_3x3_2": ((2, 13, 13, 4), 3, 2, "VALID", True),
    "stride_1_same": ((1, 6, 6, 2), 3, 1, "SAME", True),
}


def _vjp(pool, x, window, stride, padding, cotangent):
    y, vjp = jax.vjp(lambda x: pool(x, (window, window), (stride, stride), padding), x)
    return y, vjp(cotangent)[0]


@pytest.mark.parametrize("name", CASES)
def test_max_pool_equals_flax_with_gradients_and_ties(name):
    shape, window, stride, padding, overlapping = CASES[name]
    kx, kz, kc = jax.random.split(jax.random.key(0), 3)
    x = jnp.round(jax.random.normal(kx, shape))                      # many equal values...
    x = jnp.where(jax.random.uniform(kz, shape) < 0.5, 0.0, x)        # ...and windows of zeros
    cotangent = jax.random.normal(kc, nn.max_pool(x, (window,) * 2, (stride,) * 2, padding).shape)
    y_ref, dx_ref = _vjp(nn.max_pool, x, window, stride, padding, cotangent)
    y, dx = _vjp(pool.max_pool, x, window, stride, padding, cotangent)
    np.testing.assert_array_equal(y, y_ref)
    assert int(jnp.sum(dx != 0)) == int(jnp.sum(dx_ref != 0))        # same receivers
    if overlapping:
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(dx, dx_ref)


def test_a_tied_window_sends_its_gradient_to_its_first_maximum_only():
    x = jnp.zeros((1, 2, 2, 1))
    _, dx = _vjp(pool.max_pool, x, 2, 2, "VALID", jnp.full((1, 1, 1, 1), 3.0))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[3.0, 0.0], [0.0, 0.0]])


def test_layers_max_pool_runs_it_where_lowered_for_cpu_and_flaxs_elsewhere_or_when_off():
    x = jnp.zeros((1, 4, 4, 1))
    grad = lambda pool: jax.jit(jax.grad(lambda x: pool(x).sum()))

    def select_and_scatter(pool, platform):
        lowered = grad(pool).trace(x).lower(lowering_platforms=(platform,)).as_text()
        return "select_and_scatter" in lowered

    assert not select_and_scatter(layers.max_pool, "cpu")
    assert select_and_scatter(layers.max_pool, "cuda")
    def off(x):
        with policy.using(policy.Compute(cpu_kernels="off")):
            return layers.max_pool(x)

    assert select_and_scatter(off, "cpu")
    assert str(grad(off).trace(x).jaxpr) == str(
        grad(lambda x: nn.max_pool(x, (2, 2), (2, 2))).trace(x).jaxpr)
