"""`ConvNet`: the fields every model shares (the ablation switches) and the one way to make a conv block."""
from __future__ import annotations

from typing import Any, Iterable

import flax.linen as nn
import jax.numpy as jnp

from jaxcnn.models import layers


class ConvNet(nn.Module):
    """Base of every model in the zoo.

    norm: "none" | "batch" | "lrn" for every conv block (on top of any LRN the architecture has).
    factorize / multi_branch: "all", "none" or conv layer numbers (1-based), see `layers.layer_set`.
    dropout: rate of the classifier's dropout layers.
    dtype: computation dtype (parameters stay float32; logits come out float32).
    How the ops are computed (on CPU, the faster forms of `jaxcnn.cpu`) is no field: it is chosen
    where a program is compiled (`jaxcnn.programs.jit`).
    """
    num_classes: int = 1000
    norm: str = "none"
    factorize: str | Iterable[int] | None = None
    multi_branch: str | Iterable[int] | None = None
    dropout: float = 0.5
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    num_conv_layers = 0  # set by each architecture: how many conv blocks `factorize` etc. can pick

    def conv_block(self, index: int, features: int, kernel_size: int, **kwargs) -> layers.ConvBlock:
        """Conv block number `index` (1-based) with this model's ablation switches applied."""
        n = self.num_conv_layers
        return layers.ConvBlock(
            features, kernel_size, norm=kwargs.pop("norm", self.norm),
            factorize=index in layers.layer_set(self.factorize, n),
            multi_branch=index in layers.layer_set(self.multi_branch, n),
            bn_momentum=self.bn_momentum, dtype=self.dtype, name=f"conv{index}", **kwargs)

    def max_pool(self, x, window: int = 2, stride: int = 2, padding: str = "VALID"):
        return layers.max_pool(x, window, stride, padding)

    def classifier(self, x, widths, train: bool):
        """The FC head with this model's classes, dropout and dtype."""
        return layers.classifier(x, widths, self.num_classes, self.dropout, train, self.dtype)

    def check_input(self, x) -> None:
        layers.check_min_size(x, self.min_input_size, type(self).__name__)
        layers.layer_set(self.factorize, self.num_conv_layers)       # validate eagerly
        layers.layer_set(self.multi_branch, self.num_conv_layers)

    @property
    def min_input_size(self) -> int:
        return 1
