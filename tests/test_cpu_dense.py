"""The wing's dense `dot_general` (`jaxcnn.cpu.policy.dot_general`) equals `lax.dot_general`
(values and both gradients) and is what the zoo's classifier layers use; the blocked form
(`jaxcnn.cpu.dense`) only where `prefers_blocked` says so."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxcnn import models
from jaxcnn.cpu import dense, policy

STANDARD = (((1,), (0,)), ((), ()))


@pytest.mark.parametrize("rows", [2048, 4096 + 512])
def test_blocked_dense_equals_xla_with_gradients(rows):
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x, kernel = jax.random.normal(kx, (3, rows)), jax.random.normal(kw, (rows, 5))
    cotangent = jax.random.normal(kc, (3, 5))
    assert dense.prefers_blocked(x, kernel, STANDARD)

    def value_and_grads(dot_general):
        f = lambda x, k: dot_general(x, k, STANDARD, precision=None)
        y, vjp = jax.vjp(jax.jit(f), x, kernel)
        return (y, *vjp(cotangent))

    blocked = jax.jit(lambda x, k: policy.dot_general(x, k, STANDARD))
    assert "name=blocked_matmul" in str(jax.make_jaxpr(blocked)(x, kernel))
    exact = lambda x, k, dims, precision: lax.dot_general(x, k, dims,
                                                          precision=lax.Precision.HIGHEST)
    for ours, ref in zip(value_and_grads(policy.dot_general), value_and_grads(exact)):
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-4)


def test_only_large_2d_kernels_in_whole_blocks_are_blocked():
    blocked = lambda x_shape, kernel_shape, **options: dense.prefers_blocked(
        jax.ShapeDtypeStruct(x_shape, jnp.float32), jax.ShapeDtypeStruct(kernel_shape, jnp.float32),
        (((len(x_shape) - 1,), (0,)), ((), ())), **options)
    assert blocked((4, 25088), (25088, 4096))
    assert not blocked((4, 25088), (25088, 4096), precision=jax.lax.Precision.HIGHEST)
    assert not blocked((4, 512), (512, 512))                           # small
    assert not blocked((4, 2100), (2100, 10))                          # 2100 % 256
    assert not blocked((4, 7, 2048), (2048, 10))                       # 3-D input


def test_zoo_classifiers_use_it():
    model = models.create("alexnet", num_classes=10)
    x = jnp.zeros((1, 64, 64, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    jaxpr = str(jax.make_jaxpr(model.apply)(variables, x))
    assert jaxpr.count("name=blocked_matmul") == 3    # fc1 (9216 kernel rows), fc2, fc3 (4096)
