"""Building blocks shared by every model: the conv block with its ablation switches, LRN, pooling.

Every convolution in the zoo goes through `ConvBlock`, so the three tricks of the conv-tricks
article (factorised k×k → k×1·1×k, multi-branch 1/3/5/7 convs, batch norm vs LRN) are switches on
one module rather than copies of each model.

`conv`, `batch_norm`, `dense` and `max_pool` are flax's `nn.Conv`, `nn.BatchNorm`, `nn.Dense` and
`nn.max_pool`; where the CPU wing is offered (`jaxcnn.cpu.policy.offered`: the compute option
cpu_kernels="auto" in a process computing on CPU) they are its drop-ins, with the same variables,
which take faster forms where the program is lowered for CPU.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn.cpu import layers as cpu_layers
from jaxcnn.cpu import policy

Dtype = Any
NORMS = ("none", "batch", "lrn")
BRANCH_KERNELS = (1, 3, 5, 7)

# He et al. 2015: N(0, 2 / fan_in) for ReLU convs (plain normal: the truncated one costs seconds of
# compilation per kernel shape on CPU).
conv_init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
dense_init = nn.initializers.xavier_uniform()       # Glorot, for the classifier layers


def lrn(x: jax.Array, radius: int = 5, bias: float = 1.0, alpha: float = 0.001 / 9,
        beta: float = 0.75) -> jax.Array:
    """Local response normalisation across channels with `tf.nn.lrn` semantics (NHWC).

    out = x / (bias + alpha * sum_{|d'-d| <= radius} x[..., d']**2) ** beta.
    The 2012 paper's form (k=2, n=5, alpha=1e-4) is radius=2, bias=2, alpha=1e-4.
    """
    sq = jnp.square(x.astype(jnp.float32))
    window = (1,) * (x.ndim - 1) + (2 * radius + 1,)
    pad = ((0, 0),) * (x.ndim - 1) + ((radius, radius),)
    sq_sum = jax.lax.reduce_window(sq, 0.0, jax.lax.add, window, (1,) * x.ndim, pad)
    return (x * (bias + alpha * sq_sum) ** -beta).astype(x.dtype)


PAPER_LRN = dict(radius=2, bias=2.0, alpha=1e-4, beta=0.75)   # Krizhevsky et al. 2012, section 3.3
TF_LRN = dict(radius=5, bias=1.0, alpha=0.001 / 9, beta=0.75)  # the TF AlexNet benchmark


def layer_set(spec: str | Iterable[int] | None, num_layers: int) -> frozenset[int]:
    """Turns an ablation layer selection into 1-based conv layer indices.

    `spec` is "all", "none"/None/"", a comma list like "2,3", or an iterable of ints.
    """
    if spec is None or spec == "" or spec == "none":
        return frozenset()
    if spec == "all":
        return frozenset(range(1, num_layers + 1))
    if isinstance(spec, str):
        try:
            spec = [int(s) for s in spec.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"layer selection must be 'all', 'none' or a comma list of conv layer "
                             f"numbers, got {spec!r}") from None
    layers = frozenset(int(i) for i in spec)
    bad = sorted(i for i in layers if not 1 <= i <= num_layers)
    if bad:
        raise ValueError(f"conv layer numbers {bad} out of range: this model has conv layers "
                         f"1..{num_layers}")
    return layers


def check_min_size(x: jax.Array, min_size: int, model: str) -> None:
    """Raises a clear error when the spatial size is below what the model's pooling needs."""
    h, w = x.shape[-3], x.shape[-2]
    if h < min_size or w < min_size:
        raise ValueError(f"{model} needs inputs of at least {min_size}x{min_size} pixels, "
                         f"got {h}x{w}")


def min_size_for(ops: Sequence[tuple[int, int, int]]) -> int:
    """Smallest input side for which a chain of (kernel, stride, padding) ops yields >= 1 output."""
    size = 1
    for k, s, p in reversed(ops):
        size = max(1, (size - 1) * s + k - 2 * p)
    return size


def conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] | int = 1,
         padding: Any = "SAME", *, groups: int = 1, kernel_init: Callable = conv_init,
         dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Module:
    """`nn.Conv` with a bias."""
    if policy.offered():
        return cpu_layers.Conv(features, kernel_size, strides, padding, feature_group_count=groups,
                               kernel_init=kernel_init, dtype=dtype, name=name)
    return nn.Conv(features, kernel_size, strides, padding, feature_group_count=groups,
                   kernel_init=kernel_init, dtype=dtype, name=name)


def batch_norm(train: bool, momentum: float, dtype: Dtype, name: str | None = None) -> nn.Module:
    """`nn.BatchNorm` over the channels (epsilon 1e-5, as PyTorch and TF's Keras layers)."""
    layer = cpu_layers.BatchNorm if policy.offered() else nn.BatchNorm
    return layer(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype,
                 name=name)


def dense(features: int, *, kernel_init: Callable = dense_init, dtype: Dtype = jnp.float32,
          name: str | None = None) -> nn.Dense:
    """`nn.Dense`, with the wing's `dot_general` where it is offered."""
    return nn.Dense(features, kernel_init=kernel_init, dtype=dtype, name=name,
                    dot_general=policy.dot_general if policy.offered() else None)


def max_pool(x, window=2, stride=2, padding="VALID"):
    """`nn.max_pool` with a square window and stride."""
    pool = policy.max_pool if policy.offered() else nn.max_pool
    return pool(x, (window, window), (stride, stride), padding)


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """torch.nn.AdaptiveAvgPool2d for NHWC: cell i averages rows floor(i*H/o) .. ceil((i+1)*H/o)."""
    h, w = x.shape[-3], x.shape[-2]
    oh, ow = output_size
    if (h, w) == (oh, ow):
        return x
    if h % oh == 0 and w % ow == 0:
        return nn.avg_pool(x, (h // oh, w // ow), (h // oh, w // ow))

    def bounds(n, o):
        return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]

    rows = [jnp.mean(x[..., a:b, :, :], axis=-3, keepdims=True) for a, b in bounds(h, oh)]
    x = jnp.concatenate(rows, axis=-3)
    cols = [jnp.mean(x[..., a:b, :], axis=-2, keepdims=True) for a, b in bounds(w, ow)]
    return jnp.concatenate(cols, axis=-2)


class ConvBlock(nn.Module):
    """conv → [batch norm] → ReLU → [LRN], with the factorise and multi-branch switches.

    padding is the symmetric number of pixels on each side (VGG/AlexNet style); None means
    kernel // 2 ("SAME" for odd kernels at stride 1).
    - factorize: a k×k conv (k > 1) becomes a k×1 conv (+bias, ReLU) followed by a 1×k conv, both
      `features` wide (the conv-tricks article: same receptive field, 2k instead of k² taps).
    - multi_branch: parallel 1×1, 3×3, 5×5, 7×7 convs of `features` each, concatenated on
      channels (4×features out); each branch is padded so that all keep this layer's output size.
    - norm: "batch" puts BN between conv and ReLU; "lrn" applies LRN after the ReLU.
    """
    features: int
    kernel_size: int
    stride: int = 1
    padding: int | None = None
    groups: int = 1
    norm: str = "none"
    factorize: bool = False
    multi_branch: bool = False
    bn_momentum: float = 0.9
    lrn_params: dict | None = None
    dtype: Dtype = jnp.float32

    def _conv(self, features, kernel, strides, padding, name):
        return conv(features, kernel, strides, padding, groups=self.groups, dtype=self.dtype,
                    name=name)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; valid: {', '.join(NORMS)}")
        k, s = self.kernel_size, self.stride
        p = k // 2 if self.padding is None else self.padding
        if self.multi_branch:
            branches = []
            for b in BRANCH_KERNELS:
                pb = p + (b - k) // 2        # same output size as the k×k conv it replaces
                xb = x
                if pb < 0:                   # narrower than VALID: crop instead of padding
                    xb = x[..., -pb:x.shape[-3] + pb, -pb:x.shape[-2] + pb, :]
                    pb = 0
                branches.append(self._conv(self.features, (b, b), (s, s), [(pb, pb)] * 2,
                                           f"branch{b}x{b}")(xb))
            y = jnp.concatenate(branches, axis=-1)
        elif self.factorize and k > 1:
            y = self._conv(self.features, (k, 1), (s, 1), [(p, p), (0, 0)], f"conv{k}x1")(x)
            y = nn.relu(y)
            y = self._conv(self.features, (1, k), (1, s), [(0, 0), (p, p)], f"conv1x{k}")(y)
        else:
            y = self._conv(self.features, (k, k), (s, s), [(p, p)] * 2, "conv")(x)
        if self.norm == "batch":
            y = batch_norm(train, self.bn_momentum, self.dtype, name="bn")(y)
        y = nn.relu(y)
        if self.norm == "lrn":
            y = lrn(y, **(self.lrn_params or TF_LRN))
        return y


def classifier(x, widths: Sequence[int], num_classes: int, dropout: float, train: bool,
               dtype: Dtype):
    """The FC head: Dense → ReLU → Dropout for each width, then the logits layer (float32 out)."""
    layer = functools.partial(dense, dtype=dtype)
    for i, width in enumerate(widths, start=1):
        x = nn.Dropout(dropout, deterministic=not train)(nn.relu(layer(width, name=f"fc{i}")(x)))
    return layer(num_classes, name=f"fc{len(widths) + 1}")(x).astype(jnp.float32)
