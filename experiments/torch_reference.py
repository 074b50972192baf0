"""Plain-PyTorch twins of some zoo models (channels_last), to time jaxcnn against oneDNN (CPU) and
cuDNN (GPU).

Optional: importing this module needs torch (not a jaxcnn requirement). Only the architectures
are reproduced (same layers, shapes and parameter counts as `jaxcnn.models` for the same (H, W, C)
input), not the init. Feature maps are flattened in torch's (C, H, W) order, jaxcnn's is (H, W, C):
the same layers, but a copied first FC kernel needs its rows permuted unless the map is 1×1.
The timing protocol mirrors `jaxcnn.benchmark`: eval-mode forward under `torch.inference_mode`,
train-mode forward-backward to the gradients of `sum(logits**2) / 2`, SGD-momentum train step.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import nn

from jaxcnn.models.vgg import CFGS, CifarVGG, conv_layers

Shape = tuple[int, int, int]   # (H, W, C), as jaxcnn's inputs


def _conv_bn_relu(cin: int, cout: int, k: int, batch_norm: bool, **kwargs) -> list[nn.Module]:
    conv = nn.Conv2d(cin, cout, k, padding=kwargs.pop("padding", k // 2), **kwargs)
    return [conv, *([nn.BatchNorm2d(cout, momentum=0.1)] if batch_norm else []), nn.ReLU()]


def _classifier(fan_in: int, num_classes: int, dropout: float = 0.5) -> nn.Sequential:
    return nn.Sequential(nn.Linear(fan_in, 4096), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
                         nn.Linear(4096, num_classes))


def vgg(cfg: str, num_classes: int, image_shape: Shape, batch_norm: bool = False
        ) -> nn.Sequential:
    """`jaxcnn.models.VGG` for a Table-1 configuration without LRN ("A", "B", "C", "D", "E")."""
    layers, cin = [], image_shape[-1]
    for c in CFGS[cfg]:
        if c == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            (width, k), = conv_layers([c])
            layers += _conv_bn_relu(cin, width, k, batch_norm)
            cin = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(7), nn.Flatten(),
                         _classifier(cin * 49, num_classes))


def alexnet(num_classes: int, image_shape: Shape) -> nn.Sequential:
    """`jaxcnn.models.AlexNet` (torchvision widths, no LRN, no groups)."""
    return nn.Sequential(
        nn.Conv2d(image_shape[-1], 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.AdaptiveAvgPool2d(6), nn.Flatten(), _classifier(256 * 36, num_classes))


def vgg_cifar(num_classes: int, image_shape: Shape) -> nn.Sequential:
    """`jaxcnn.models.CifarVGG`, the PaddlePaddle CIFAR-10 VGG (32×32 input)."""
    (h, w, cin), layers = image_shape, []
    for width, rates in CifarVGG.groups:
        for rate in rates:
            layers += [*_conv_bn_relu(cin, width, 3, batch_norm=True), nn.Dropout(rate)]
            cin = width
        layers.append(nn.MaxPool2d(2, 2))
    side = 2 ** len(CifarVGG.groups)
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.5),
                         nn.Linear(cin * (h // side) * (w // side), 512),
                         nn.BatchNorm1d(512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 512),
                         nn.Linear(512, num_classes))


class _SpatialMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


def convnet_cifar(num_classes: int, image_shape: Shape, width: int = 64) -> nn.Sequential:
    """`jaxcnn.models.ConvNetCifar` (24×24 input; sides divisible by 4: torch's 2×2 pool equals
    SAME there)."""
    return nn.Sequential(*_conv_bn_relu(image_shape[-1], width, 5, False), nn.MaxPool2d(2, 2),
                         *_conv_bn_relu(width, width, 5, False), nn.MaxPool2d(2, 2),
                         nn.Conv2d(width, num_classes, 5, padding=2), _SpatialMean())


def lenet5(num_classes: int, image_shape: Shape) -> nn.Sequential:
    """`jaxcnn.models.LeNet5` as built by default (no norm, dropout 0): VALID 5×5 convs, 2×2/2
    average pools, FC-84, FC-classes."""
    h, w, c = image_shape
    side = lambda n: ((n - 4) // 2 - 4) // 2 - 4      # conv3's output side
    return nn.Sequential(nn.Conv2d(c, 6, 5), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(16, 120, 5), nn.ReLU(), nn.Flatten(),
                         nn.Linear(120 * side(h) * side(w), 84), nn.ReLU(),
                         nn.Linear(84, num_classes))


BUILDERS = {  # name -> (num_classes, image_shape) -> model
    "lenet5": lenet5,
    "alexnet": alexnet,
    "vgg_cifar": vgg_cifar,
    "convnet_cifar": convnet_cifar,
    **{name: (lambda n, shape, cfg=cfg: vgg(cfg, n, shape)) for name, cfg in
       (("vgg11", "A"), ("vgg13", "B"), ("vgg16c", "C"), ("vgg16", "D"), ("vgg19", "E"))},
    **{f"{name}_bn": (lambda n, shape, cfg=cfg: vgg(cfg, n, shape, batch_norm=True))
       for name, cfg in
       (("vgg11", "A"), ("vgg13", "B"), ("vgg16c", "C"), ("vgg16", "D"), ("vgg19", "E"))},
}


def create(name: str, num_classes: int, image_shape: Shape) -> nn.Module:
    """The twin of jaxcnn's `name` for (H, W, C) inputs `image_shape`, stored channels_last."""
    if name not in BUILDERS:
        raise ValueError(f"no PyTorch reference for {name!r}; have: {', '.join(BUILDERS)}")
    return BUILDERS[name](num_classes, image_shape).to(memory_format=torch.channels_last)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_step(model: nn.Module, num_classes: int, image_shape: tuple[int, int, int],
              batch_size: int, mode: str, dtype=torch.float32, device: str = "cpu"
              ) -> Callable[[], None]:
    """One blocking call of `mode` on random images stored channels_last on `device` ("cpu" or
    "cuda"; the model is moved there); bfloat16 runs under autocast (float32 parameters, bfloat16
    compute, like jaxcnn's `dtype`). On CUDA float32 matmuls may use TF32, as XLA's default
    precision does on these GPUs (torch's cuDNN convs already do), and cuDNN picks its fastest
    algorithms, as XLA's autotuner does."""
    h, w, c = image_shape
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    model.to(device)
    images = (0.1 * torch.randn(batch_size, c, h, w, device=device)
              ).to(memory_format=torch.channels_last)
    autocast = functools.partial(torch.autocast, device, dtype=dtype,
                                 enabled=dtype != torch.float32)
    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)
    wait = torch.cuda.synchronize if device == "cuda" else lambda: None

    def forward():
        model.eval()
        with torch.inference_mode(), autocast():
            model(images)

    def forward_backward():
        model.train()
        with autocast():
            loss = 0.5 * model(images).float().square().sum()
        torch.autograd.grad(loss, params)

    def train_step():
        model.train()
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = nn.functional.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    step = {"forward": forward, "forward_backward": forward_backward, "train_step": train_step}[mode]

    def blocking_step():
        step()
        wait()

    return blocking_step
