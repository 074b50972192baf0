"""The per-program XLA options (`jaxcnn.cpu.xla_options`): no YNNPACK fusion on CPU unless
`cpu_kernels` is off, same results."""
import re

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import benchmark, models
from jaxcnn.cpu import xla_options
from jaxcnn.cpu.policy import Compute

TINY_VGG = dict(cfg=(4, "M", 8, "M"), head=(16,), pool_to=(2, 2))


def test_options_per_policy(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert xla_options.compiler_options() == {"xla_cpu_experimental_ynn_fusion_type": ""}
    assert xla_options.compiler_options(Compute(cpu_kernels="off")) == {}
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    assert xla_options.compiler_options() == {}     # an explicit XLA_FLAGS setting wins


def test_option_is_accepted_and_removes_the_ynn_fusion():
    def head(x, w1, w2):
        return jax.nn.relu(x @ w1) @ w2

    args = (jnp.ones((4, 64)), jnp.ones((64, 32)), jnp.ones((32, 10)))
    def ynn_fusions(options):    # HLO instructions like `%ynn_fusion.1 = f32[4,32] fusion(...)`
        text = jax.jit(head, compiler_options=options).lower(*args).compile().as_text()
        return re.findall(r"%ynn_fusion\S* = ", text)

    assert ynn_fusions({})      # jax 0.10.2's XLA:CPU default
    assert not ynn_fusions(xla_options.compiler_options())


def test_results_are_the_same_with_and_without_it():
    model = models.create("vgg11", 5, **TINY_VGG)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    for fn in (benchmark.forward(model), benchmark.forward_backward(model)):
        outs = [jax.jit(fn, compiler_options=options)(variables, x)
                for options in ({}, xla_options.compiler_options())]
        for got, want in zip(jax.tree.leaves(outs[1]), jax.tree.leaves(outs[0])):
            # float32, other kernels and summation orders: equal to rounding
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
