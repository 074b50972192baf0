"""The CPU wing behind one switch (`jaxcnn.cpu.policy`): a train step exported for CUDA on this CPU
host holds none of the wing's custom calls; compiled with `cpu_kernels="off"` a model is flax's own
layers (no custom VJP in its program); "auto" and "off" give the same outputs and gradients on CPU;
the compute options are where a program is compiled (`jaxcnn.programs.jit`), not in the model."""
import dataclasses
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import models, programs, train
from jaxcnn.cpu import layers as cpu_layers
from jaxcnn.cpu import onednn, policy
from jaxcnn.cpu.policy import Compute

from conftest import assert_equal_up_to_noise_floor

ONEDNN_CALLS = {"JaxcnnConvForward", "JaxcnnConvBackwardData", "JaxcnnConvBackwardWeights"}
SMALL = {  # model: (options, image shape); between them every op the wing replaces
    "lenet5": ({}, (32, 32, 1)),
    "convnet_cifar": ({"width": 8, "norm": "batch"}, (12, 12, 3)),
    "alexnet": ({"widths": (8, 16, 16, 16, 8)}, (67, 67, 3)),     # 4096-wide: blocked dense
}


@pytest.fixture
def one_device(monkeypatch):
    """"auto" takes oneDNN's convolutions on one device only (the suite has 8 fake ones)."""
    monkeypatch.setattr(jax, "device_count", lambda *backend: 1)


def _train_step_and_args(name, cpu_kernels, batch=2):
    options, shape = SMALL[name]
    model = models.create(name, 10, **options)
    state = train.create_train_state(jax.random.key(0), model, shape, optax.sgd(0.1, 0.9),
                                     lambda step: 0.1)
    images = jax.random.normal(jax.random.key(1), (batch, *shape))
    return (programs.jit(train.train_step, Compute(cpu_kernels)),
            (state, {"image": images, "label": jnp.arange(batch) % 10}))


def _custom_calls(stablehlo: str) -> set[str]:
    return set(re.findall(r"custom_call @(\w+)", stablehlo))


@pytest.mark.parametrize("name", SMALL)
def test_a_train_step_exported_for_cuda_holds_none_of_the_wings_kernels(name, one_device):
    step, args = _train_step_and_args(name, "auto")
    exported = jax.export.export(step, platforms=["cuda"])(*args)
    assert exported.platforms == ("cuda",)
    cuda = exported.mlir_module()
    assert not _custom_calls(cuda) & ONEDNN_CALLS
    assert "select_and_scatter" in cuda or name == "lenet5"      # XLA's own max-pool gradient
    cpu = step.trace(*args).lower(lowering_platforms=("cpu",)).as_text()
    assert "select_and_scatter" not in cpu                        # the wing's, where lowered for CPU
    if onednn.available():                                        # the same step on CPU runs them
        assert "JaxcnnConvForward" in _custom_calls(cpu)


def test_off_is_flaxs_own_layers_with_no_custom_gradient_in_the_program():
    step, args = _train_step_and_args("convnet_cifar", "off")
    jaxpr = str(step.trace(*args).jaxpr)
    assert "custom_vjp_call" not in jaxpr and "branches_platforms" not in jaxpr
    auto_step, auto_args = _train_step_and_args("convnet_cifar", "auto")
    auto = str(auto_step.trace(*auto_args).jaxpr)
    assert "custom_vjp_call" in auto and "branches_platforms=(('cpu',), None)" in auto

    def layer_types(cpu_kernels):
        seen = set()

        def note(next_fun, args, kwargs, context):
            seen.add(type(context.module))
            return next_fun(*args, **kwargs)

        model = models.create("convnet_cifar", 10, width=8, norm="batch")
        with policy.using(Compute(cpu_kernels)), nn.intercept_methods(note):
            jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 12, 12, 3)))
        return seen

    assert {nn.Conv, nn.BatchNorm} <= layer_types("off")
    assert not layer_types("off") & {cpu_layers.Conv, cpu_layers.BatchNorm}
    assert {cpu_layers.Conv, cpu_layers.BatchNorm} <= layer_types("auto")


def _outputs_and_gradients(name, cpu_kernels, x, cotangent, float64=False):
    """One training-mode forward and backward of model `name`: its logits, updated batch
    statistics and the gradient of sum(logits * cotangent) (a linear loss: the cotangent reaches
    the logits exactly, in float32 and float64 alike). With float64, the same parameters and
    inputs computed in float64 (flax's layers only)."""
    options, _ = SMALL[name]
    model = models.create(name, 10, dropout=0.0, **options)
    kernels = Compute(cpu_kernels)
    variables = programs.jit(model.init, kernels)(jax.random.key(0), x[:1])

    def compute(model, variables, x):
        def loss(params):
            logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                          mutable=["batch_stats"])
            return jnp.sum(logits * cotangent), (logits, updates)

        grads, (logits, updates) = programs.jit(jax.grad(loss, has_aux=True), kernels)(
            variables["params"])
        return jax.device_get({"logits": logits, "batch_stats": updates, "grads": grads})

    if not float64:
        return variables, compute(model, variables, x)
    with jax.enable_x64(True):
        model = models.create(name, 10, dropout=0.0, dtype=jnp.float64, **options)
        as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
        return variables, compute(model, as64(variables), as64(x))


@pytest.mark.parametrize("name", SMALL)
def test_auto_and_off_give_the_same_outputs_and_gradients_on_cpu(name, one_device):
    """"auto" (the wing's forms) and "off" (flax's) are the same arithmetic in other float32
    orders, and "off" itself is what measures float32's noise here: both are compared with the
    same step in float64. "auto" may be off by twice what "off" is, leaf by leaf, plus 16 float32
    ulps of its group's largest value (logits, batch statistics, gradients; tests/conftest.py),
    and inputs off by 1e-4 (of values of about 1) exceed that: the comparison's power."""
    _, shape = SMALL[name]
    x = jax.random.normal(jax.random.key(1), (8, *shape))
    cotangent = jax.random.normal(jax.random.key(2), (8, 10))
    init, auto = _outputs_and_gradients(name, "auto", x, cotangent)
    off_init, off = _outputs_and_gradients(name, "off", x, cotangent)
    _, exact = _outputs_and_gradients(name, "off", x, cotangent, float64=True)
    assert jax.tree.structure(auto) == jax.tree.structure(off) == jax.tree.structure(exact)
    assert all(a.dtype == np.float64 for a in jax.tree.leaves(exact["grads"]))
    jax.tree.map(np.testing.assert_array_equal, init, off_init)   # same init
    noisy = x + 1e-4 * jax.random.normal(jax.random.key(3), x.shape)
    _, wrong = _outputs_and_gradients(name, "auto", noisy, cotangent)
    assert_equal_up_to_noise_floor(auto, exact, off, wrong)


def test_one_clear_error_for_an_unknown_or_contradictory_choice():
    with pytest.raises(ValueError, match="unknown cpu_kernels 'fast'; valid: auto, off"):
        Compute(cpu_kernels="fast")
    with pytest.raises(ValueError, match="unknown conv_impl 'winograd'"):
        Compute(conv_impl="winograd")
    with pytest.raises(ValueError, match="conv_impl=im2col is a CPU kernel form: it needs "
                                         "cpu_kernels=auto"):
        Compute(cpu_kernels="off", conv_impl="im2col")


def test_a_model_is_its_architecture_and_the_compute_options_are_where_it_is_compiled():
    """No model has compute options, and `programs.jit` applies both of them: the ops' forms
    while the program is traced (here: im2col's matmuls instead of XLA's convolutions) and the
    compiler options (no YNNPACK fusion of the FC head where the wing is offered)."""
    assert "cpu_kernels" not in {f.name for f in dataclasses.fields(models.ConvNet)}
    with pytest.raises(ValueError, match="lenet5 has no option cpu_kernels"):
        models.create("lenet5", 10, cpu_kernels="off")
    model = models.create("vgg11", 5, cfg=(4, "M", 8, "M"), head=(16,), pool_to=(2, 2))
    x = jnp.ones((2, 8, 8, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)

    def lowered(compute):
        return programs.jit(model.apply, compute).lower(variables, x)

    def count(text, pattern):
        return len(re.findall(pattern, text))

    off, im2col = lowered(Compute("off")), lowered(Compute(conv_impl="im2col"))
    assert count(off.as_text(), r"stablehlo\.convolution") == 2
    assert count(im2col.as_text(), r"stablehlo\.convolution") == 0
    assert policy.current() == Compute()                  # left as it was outside the program
    assert count(off.compile().as_text(), r"%ynn_fusion\S* = ") > 0     # XLA's defaults
    assert count(im2col.compile().as_text(), r"%ynn_fusion\S* = ") == 0
