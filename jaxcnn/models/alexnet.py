"""AlexNet: torchvision's "one weird trick" widths, and the 2012 paper's grouped, LRN version."""
from __future__ import annotations

import flax.linen as nn

from jaxcnn.models import layers
from jaxcnn.models.base import ConvNet


class AlexNet(ConvNet):
    """Five conv blocks (11×11/4 stem), overlapping 3×3/2 max-pools after conv 1, 2 and 5,
    adaptive 6×6 average pool, FC 4096-4096-classes with dropout.

    groups: feature groups per conv (the paper's two-GPU split is (1, 2, 1, 2, 2)).
    lrn_after: conv numbers followed by LRN (before pooling), with `lrn_params`.
    """
    widths: tuple[int, ...] = (64, 192, 384, 256, 256)
    groups: tuple[int, ...] = (1, 1, 1, 1, 1)
    lrn_after: tuple[int, ...] = ()
    lrn_params: dict | None = None
    num_conv_layers = 5
    kernels = (11, 5, 3, 3, 3)
    strides = (4, 1, 1, 1, 1)
    paddings = (2, 2, 1, 1, 1)
    pool_after = (1, 2, 5)

    @property
    def min_input_size(self):
        ops = []
        for i, (k, s, p) in enumerate(zip(self.kernels, self.strides, self.paddings), start=1):
            ops.append((k, s, p))
            if i in self.pool_after:
                ops.append((3, 2, 0))
        return layers.min_size_for(ops)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_input(x)
        for i, (w, k, s, p, g) in enumerate(zip(self.widths, self.kernels, self.strides,
                                                self.paddings, self.groups), start=1):
            x = self.conv_block(i, w, k, stride=s, padding=p, groups=g,
                                lrn_params=self.lrn_params)(x, train)
            if i in self.lrn_after:
                x = layers.lrn(x, **(self.lrn_params or layers.TF_LRN))
            if i in self.pool_after:
                x = self.max_pool(x, 3, 2)
        x = layers.adaptive_avg_pool(x, (6, 6)).reshape(x.shape[0], -1)
        return self.classifier(x, (4096, 4096), train)
