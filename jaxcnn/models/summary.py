"""A model's size and cost: its parameter count, FLOPs per image, and flax's per-layer table."""
from __future__ import annotations

import math
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import benchmark


def parameter_count(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Trainable parameters (batch-norm statistics excluded), from shapes alone."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))


def flops_per_image(model: nn.Module, image_shape: tuple[int, int, int]) -> int:
    """Forward FLOPs of one image through the convolutions and dense layers (2 × MACs, the
    convention of `benchmark.analytic_macs`)."""
    return 2 * benchmark.analytic_macs(model, image_shape)


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
