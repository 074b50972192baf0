"""VGG (Simonyan & Zisserman 2014) as a table of configurations fed to one builder, like torchvision.

In a configuration an int is a 3×3 conv of that width, (width, k) a k×k conv (config C's 1×1),
"M" a 2×2/2 max-pool and "LRN" local response normalisation.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.models import layers
from jaxcnn.models.base import ConvNet

CFGS = {  # Table 1 of the paper
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "A-LRN": (64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "C": (64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"),
    # The MNIST article: 16 convs on 28×28, pooling (SAME, +LRN) only after convs 2, 4 and 12.
    "MNIST": (64, 64, "M", "LRN", 128, 128, "M", "LRN", 256, 256, 256, 256, 512, 512, 512, 512,
              "M", "LRN", 512, 512, 512, 256),
}
VGG_LRN = dict(radius=2, bias=2.0, alpha=1e-4, beta=0.75)   # config A-LRN uses the AlexNet paper's LRN
MNIST_LRN = dict(radius=4, bias=1.0, alpha=0.001 / 9, beta=0.75)


def conv_layers(cfg: Sequence) -> list[tuple[int, int]]:
    """(width, kernel) of every conv in a configuration."""
    return [(c, 3) if isinstance(c, int) else c for c in cfg if c not in ("M", "LRN")]


class VGG(ConvNet):
    """Conv stack from `cfg`, then the head: adaptive average pool to `pool_to` (torchvision's
    7×7; None flattens whatever is left) and FC `head`-classes with ReLU and dropout."""
    cfg: tuple = CFGS["D"]
    head: tuple[int, ...] = (4096, 4096)
    pool_to: tuple[int, int] | None = (7, 7)
    pool_padding: str = "VALID"
    lrn_params: dict | None = None

    @property
    def num_conv_layers(self):
        return len(conv_layers(self.cfg))

    @property
    def min_input_size(self):
        if self.pool_padding == "SAME":
            return 1
        return 2 ** sum(c == "M" for c in self.cfg)

    def features(self, x, train: bool):
        self.check_input(x)
        index = 0
        for c in self.cfg:
            if c == "M":
                x = self.max_pool(x, 2, 2, padding=self.pool_padding)
            elif c == "LRN":
                x = layers.lrn(x, **(self.lrn_params or layers.TF_LRN))
            else:
                width, k = (c, 3) if isinstance(c, int) else c
                index += 1
                x = self.conv_block(index, width, k, lrn_params=self.lrn_params)(x, train)
        return x

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = self.features(x, train)
        if self.pool_to is not None:
            x = layers.adaptive_avg_pool(x, self.pool_to)
        x = x.reshape(x.shape[0], -1)
        return self.classifier(x, self.head, train)

    @nn.compact
    def dense_scores(self, x, flip: bool = False):
        """Dense evaluation (paper section 3.2) of test images at least as large as the training size.

        The head slides over the whole feature map, with the same parameters as `__call__`: fc1 as a
        `pool_to` convolution, the other FC layers as 1×1 convolutions; the class score map (logits)
        is averaged spatially. With `flip`, the softmax posteriors of the image and of its mirror
        image are averaged, as in the paper, and returned as log posteriors: softmax, argmax, top-k
        and cross-entropy read them as they read logits. Eval mode: no dropout, BN running averages.
        """
        if self.pool_to is None:
            raise ValueError("dense evaluation needs the FC head's window (pool_to); this VGG "
                             "flattens whatever its features leave")
        batch = x.shape[0]
        if flip:
            x = jnp.concatenate([x, x[:, :, ::-1]])
        x = self.features(x, train=False)
        (h, w), (wh, ww) = x.shape[1:3], self.pool_to
        if h < wh or w < ww:
            raise ValueError(f"dense evaluation needs a feature map of at least {wh}x{ww}, got "
                             f"{h}x{w}: test images must be at least the training size")
        widths = (*self.head, self.num_classes)
        x = SlidingDense(widths[0], self.pool_to, dtype=self.dtype, name="fc1")(x)
        for i, width in enumerate(widths[1:], start=2):
            x = nn.Dense(width, kernel_init=layers.dense_init, dtype=self.dtype,
                         name=f"fc{i}")(nn.relu(x))
        scores = x.astype(jnp.float32).mean(axis=(1, 2))
        if not flip:
            return scores
        log_probs = jax.nn.log_softmax(scores)
        pair = jnp.stack([log_probs[:batch], log_probs[batch:]])
        return jax.nn.logsumexp(pair, axis=0) - jnp.log(2.0)   # log of the mean posterior


class SlidingDense(nn.Module):
    """An `nn.Dense` over a flattened NHWC `window` (kernel (h·w·C, features)) applied as a VALID
    h×w convolution: the same parameters as the FC layer, slid over a larger feature map."""
    features: int
    window: tuple[int, int]
    dtype: layers.Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        (h, w), c = self.window, x.shape[-1]
        kernel = self.param("kernel", layers.dense_init, (h * w * c, self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.conv_general_dilated(x, kernel.reshape(h, w, c, self.features), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + bias


def dense_eval_logits(model: VGG, variables, images: jax.Array, flip: bool = False) -> jax.Array:
    """(batch, classes) scores of `images` (NHWC, any size >= the training size) by dense evaluation,
    see `VGG.dense_scores`; a drop-in for `model.apply(variables, images)` at evaluation time.
    Jit it with `model` and `flip` static: `jax.jit(dense_eval_logits, static_argnums=(0, 3))`."""
    if not isinstance(model, VGG):
        raise ValueError(f"dense evaluation is defined for VGG models, not {type(model).__name__}")
    return model.apply(variables, images, flip, method=VGG.dense_scores)


class CifarVGG(ConvNet):
    """The PaddlePaddle CIFAR-10 VGG: five groups of 3×3 conv + BN + ReLU (+ dropout), each ending
    in a 2×2 max-pool; then dropout, FC-512 (linear), BN, ReLU, dropout, FC-512 (linear), FC-classes."""
    norm: str = "batch"
    groups: tuple = ((64, (0.3, 0.0)), (128, (0.4, 0.0)), (256, (0.4, 0.4, 0.0)),
                     (512, (0.4, 0.4, 0.0)), (512, (0.4, 0.4, 0.0)))

    @property
    def num_conv_layers(self):
        return sum(len(rates) for _, rates in self.groups)

    @property
    def min_input_size(self):
        return 2 ** len(self.groups)

    @nn.compact
    def __call__(self, x, train: bool = False):
        self.check_input(x)
        index = 0
        for width, rates in self.groups:
            for rate in rates:
                index += 1
                x = self.conv_block(index, width, 3)(x, train)
                x = nn.Dropout(rate, deterministic=not train)(x)
            x = self.max_pool(x, 2, 2)
        x = x.reshape(x.shape[0], -1)
        dense = functools.partial(layers.dense, dtype=self.dtype)
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        x = dense(512, name="fc1")(x)
        x = layers.batch_norm(train, self.bn_momentum, self.dtype, name="fc1_bn")(x)
        x = nn.Dropout(self.dropout, deterministic=not train)(nn.relu(x))
        x = dense(512, name="fc2")(x)
        return dense(self.num_classes, name="fc3")(x).astype(jnp.float32)
