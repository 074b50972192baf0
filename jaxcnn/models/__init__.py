"""The model zoo: every model is made by name.

    from jaxcnn import models
    model = models.create("vgg16", num_classes=10, norm="batch", factorize="all")
    variables = model.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    logits = model.apply(variables, images)                      # eval mode
    logits, updates = model.apply(variables, images, train=True,  # train mode: dropout + BN stats
                                  rngs={"dropout": key}, mutable=["batch_stats"])
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple

from jaxcnn.models import layers
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.base import ConvNet
from jaxcnn.models.convnet import ConvNetCifar
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models import vgg
from jaxcnn.models.vgg import CFGS, VGG, VGG_LRN, CifarVGG


class ModelSpec(NamedTuple):
    builder: Callable[..., ConvNet]
    input_shape: tuple[int, int, int]   # the (H, W, C) the model was designed for


_IMAGENET = (224, 224, 3)
_vgg = functools.partial(VGG)
_vgg_bn = functools.partial(VGG, norm="batch")

REGISTRY: dict[str, ModelSpec] = {
    "lenet5": ModelSpec(LeNet5, (32, 32, 1)),
    "alexnet": ModelSpec(AlexNet, _IMAGENET),
    "alexnet_lrn": ModelSpec(functools.partial(AlexNet, lrn_after=(1, 2), lrn_params=layers.TF_LRN),
                             _IMAGENET),
    "alexnet_v1": ModelSpec(functools.partial(AlexNet, widths=(96, 256, 384, 384, 256),
                                              groups=(1, 2, 1, 2, 2), lrn_after=(1, 2),
                                              lrn_params=layers.PAPER_LRN), _IMAGENET),
    "vgg11": ModelSpec(functools.partial(_vgg, cfg=CFGS["A"]), _IMAGENET),
    "vgg11_lrn": ModelSpec(functools.partial(_vgg, cfg=CFGS["A-LRN"], lrn_params=VGG_LRN), _IMAGENET),
    "vgg13": ModelSpec(functools.partial(_vgg, cfg=CFGS["B"]), _IMAGENET),
    "vgg16c": ModelSpec(functools.partial(_vgg, cfg=CFGS["C"]), _IMAGENET),
    "vgg16": ModelSpec(functools.partial(_vgg, cfg=CFGS["D"]), _IMAGENET),
    "vgg19": ModelSpec(functools.partial(_vgg, cfg=CFGS["E"]), _IMAGENET),
    "vgg11_bn": ModelSpec(functools.partial(_vgg_bn, cfg=CFGS["A"]), _IMAGENET),
    "vgg13_bn": ModelSpec(functools.partial(_vgg_bn, cfg=CFGS["B"]), _IMAGENET),
    "vgg16c_bn": ModelSpec(functools.partial(_vgg_bn, cfg=CFGS["C"]), _IMAGENET),
    "vgg16_bn": ModelSpec(functools.partial(_vgg_bn, cfg=CFGS["D"]), _IMAGENET),
    "vgg19_bn": ModelSpec(functools.partial(_vgg_bn, cfg=CFGS["E"]), _IMAGENET),
    "vgg_cifar": ModelSpec(CifarVGG, (32, 32, 3)),
    "vgg_mnist": ModelSpec(functools.partial(_vgg, cfg=CFGS["MNIST"], pool_to=None,
                                             pool_padding="SAME", lrn_params=vgg.MNIST_LRN),
                           (28, 28, 1)),
    "convnet_cifar": ModelSpec(ConvNetCifar, (24, 24, 3)),
}


def names() -> list[str]:
    return list(REGISTRY)


def spec(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def create(name: str, num_classes: int = 1000, **options) -> ConvNet:
    """Builds model `name` with `num_classes` outputs and any `ConvNet` / architecture options."""
    builder = spec(name).builder
    cls = builder.func if isinstance(builder, functools.partial) else builder
    valid = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    model = builder(num_classes=num_classes, **options)
    if model.norm not in layers.NORMS:
        raise ValueError(f"unknown norm {model.norm!r}; valid: {', '.join(layers.NORMS)}")
    return model


def input_shape(name: str) -> tuple[int, int, int]:
    return spec(name).input_shape
