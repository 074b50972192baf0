"""The PyTorch twins: the parameter count of jaxcnn's model for every model of issue #11, and for
lenet5 and convnet_cifar the same logits when given jaxcnn's weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxcnn import models

torch = pytest.importorskip("torch", reason="PyTorch is optional (not in requirements.txt)")
from experiments import torch_reference  # noqa: E402  (needs torch)

ISSUE_11 = [("lenet5", 32), ("convnet_cifar", 24), ("vgg_cifar", 32), ("alexnet", 224),
            ("vgg16", 224), ("lenet5", 150)]


def _shape(name, size):
    return (size, size, models.input_shape(name)[-1])


@pytest.mark.parametrize("name, size", ISSUE_11)
def test_twin_has_the_parameter_count_of_jaxcnn(name, size):
    x = jax.ShapeDtypeStruct((1, *_shape(name, size)), jnp.float32)
    params = jax.eval_shape(models.create(name, 10).init, jax.random.key(0), x)["params"]
    with torch.device("meta"):           # shapes only: no memory, no init
        twin = torch_reference.create(name, 10, _shape(name, size))
    assert torch_reference.num_params(twin) == sum(p.size for p in jax.tree.leaves(params))


def copy_weights(params, twin):
    """jaxcnn's conv / dense kernels and biases, layer by layer in order, into the twin's Conv2d /
    Linear layers (HWIO -> OIHW, (in, out) -> (out, in))."""
    layers = {}
    for path, value in traverse_util.flatten_dict(params).items():
        layers.setdefault(path[:-1], {})[path[-1]] = np.array(value)   # writable copies
    targets = [m for m in twin.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(targets) == len(layers)
    with torch.no_grad():
        for layer, module in zip(layers.values(), targets):
            kernel = layer["kernel"]
            kernel = kernel.transpose(3, 2, 0, 1) if kernel.ndim == 4 else kernel.T
            module.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel)))
            module.bias.copy_(torch.from_numpy(layer["bias"]))


@pytest.mark.parametrize("name, size", [("lenet5", 32), ("convnet_cifar", 24)])
def test_twin_computes_jaxcnn_logits_with_its_weights(name, size):
    x = np.array(jax.random.normal(jax.random.key(1), (3, *_shape(name, size))))   # writable
    model = models.create(name, 10)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    want = jax.jit(model.apply)(variables, x)
    twin = torch_reference.create(name, 10, _shape(name, size)).eval()
    copy_weights(variables["params"], twin)
    with torch.no_grad():
        got = twin(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    # float32 through three conv layers, both frameworks' own summation order
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
