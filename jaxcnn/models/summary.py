"""A model's size and cost: its parameter count, FLOPs per image (the analytic count of every
convolution and dense layer), and flax's per-layer table."""
from __future__ import annotations

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp


def parameter_count(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Trainable parameters (batch-norm statistics excluded), from shapes alone."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


def flops_per_image(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs of one image through the convolutions and dense layers (2 × MACs, the
    convention of `analytic_macs`)."""
    return 2 * analytic_macs(model, image_shape)


def layer_calls(model: nn.Module, image_shape: tuple[int, ...], batch_size: int = 1
                ) -> list[tuple[nn.Module, tuple[int, ...], tuple[int, ...]]]:
    """(module, input shape, output shape) of every `nn.Conv` and `nn.Dense` call in one forward
    pass of `batch_size` images, in call order (shapes only: nothing is computed)."""
    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, (nn.Conv, nn.Dense)):
            calls.append((context.module, args[0].shape, out.shape))
        return out

    x = jax.ShapeDtypeStruct((batch_size, *image_shape), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    return calls


def analytic_macs(model: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one image's forward pass through every `nn.Conv` and `nn.Dense`,
    from the shapes the layers see (the convention behind VGG16's 15.47 G, AlexNet's 0.714 G)."""
    macs = 0
    for module, in_shape, out_shape in layer_calls(model, image_shape):
        fan_in = in_shape[-1]
        if isinstance(module, nn.Conv):
            fan_in = fan_in // module.feature_group_count * math.prod(module.kernel_size)
        macs += math.prod(out_shape) * fan_in
    return macs


def table(model: nn.Module, image_shape: tuple[int, int, int], depth: int = 1,
          width: int = 140) -> str:
    """flax's `nn.tabulate`: every layer's output shape, parameters and FLOPs (XLA's count of the
    layer's forward pass at batch 1); `depth` 2 shows the convolutions inside each block.

    flax's table tries `jnp.shape` on every argument of every call it records, modules included,
    and shows what fails as an object; JAX deprecates `jnp.shape` of non-arrays (an error in a
    later release, which flax's fallback catches), so that DeprecationWarning is not ours to show.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "shape requires ndarray or scalar arguments",
                                DeprecationWarning)
        return nn.tabulate(model, jax.random.key(0), depth=depth, compute_flops=True,
                           console_kwargs={"width": width, "force_terminal": False}
                           )(jnp.zeros((1, *image_shape), jnp.float32))
