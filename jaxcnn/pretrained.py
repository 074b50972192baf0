"""Pretrained weights in: Keras and torchvision VGG / AlexNet weights as jaxcnn variables.

    variables = pretrained.from_keras(keras.applications.VGG16())              # -> vgg16
    variables = pretrained.from_torchvision(pretrained.load_state_dict("vgg16_bn.npz"),
                                            models.create("vgg16_bn"))
    variables = pretrained.merge(model.init(key, x), variables, skip=("fc3",))  # new head

Loading never runs code from a file. State dicts are read from `.npz` (`allow_pickle=False`) or
`.safetensors`; PyTorch's pickled `.pth` files are refused: export one once, where torch is, with
`np.savez("vgg16.npz", **{k: v.numpy() for k, v in model.state_dict().items()})`. Keras files go
through Keras: `.keras` archives with `safe_mode=True`, `.h5` weight files (arrays only) into a
freshly built `keras.applications` model. TensorFlow / Keras are imported only by `load_keras`.

The converted models expect the inputs the originals were trained on: Keras VGG
`keras.applications.vgg16.preprocess_input` (BGR, ImageNet channel means subtracted, 0-255);
torchvision RGB in [0, 1] normalised by mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxcnn.models import layers
from jaxcnn.models.alexnet import AlexNet
from jaxcnn.models.vgg import VGG

Variables = dict[str, Any]

def from_keras(model) -> Variables:
    """jaxcnn VGG variables from a Keras VGG (e.g. `keras.applications.VGG16` / `VGG19`).

    The i-th Conv2D becomes `conv{i}`, the j-th Dense `fc{j}`. Keras flattens channels-last
    feature maps in (H, W, C) order, as jaxcnn does, so every kernel keeps its layout. A model
    built with `include_top=False` gives the conv parameters only (see `merge`).
    """
    params, convs, dense = {}, 0, 0
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kind = type(layer).__name__
        if kind == "Conv2D":
            if layer.data_format != "channels_last":
                raise ValueError(f"{layer.name}: only channels_last Keras models convert")
            convs += 1
            params[f"conv{convs}"] = {"conv": _kernel_and_bias(*weights)}
        elif kind == "Dense":
            dense += 1
            params[f"fc{dense}"] = _kernel_and_bias(*weights)
        else:
            raise ValueError(f"{layer.name}: no jaxcnn VGG counterpart for a Keras {kind} layer")
    return {"params": params}


def load_keras(path: str, architecture: str = "vgg16", include_top: bool = True) -> Variables:
    """`from_keras` of a Keras file: a `.keras` model archive (loaded in safe mode), or an `.h5`
    weights file of `keras.applications` `architecture` ("vgg16" / "vgg19", with or without top)."""
    import keras  # lazy: importing jaxcnn never imports TensorFlow

    if path.endswith(".keras"):
        return from_keras(keras.saving.load_model(path, compile=False, safe_mode=True))
    if not path.endswith(".h5"):
        raise ValueError(f"expected a .keras model or an .h5 weights file, got {path!r}")
    builders = {"vgg16": keras.applications.VGG16, "vgg19": keras.applications.VGG19}
    if architecture not in builders:
        raise ValueError(f"unknown Keras architecture {architecture!r}; "
                         f"valid: {', '.join(builders)}")
    return from_keras(builders[architecture](weights=path, include_top=include_top))


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict (name -> array) from `.npz` or `.safetensors`, without unpickling anything."""
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as arrays:
            return dict(arrays)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file
        return load_file(path)
    raise ValueError(f"expected a .npz or .safetensors state dict, got {path!r} (pickled .pth "
                     f"files are not loaded: see the jaxcnn.pretrained docstring)")


def torchvision_layout(model) -> dict[str, tuple[str, ...]]:
    """torchvision module name -> jaxcnn module path, e.g. "features.3" -> ("conv2", "conv").

    torchvision numbers the modules of `features` (conv, [batch norm], ReLU, [max-pool]) and of
    `classifier` (VGG: Linear, ReLU, Dropout, ...; AlexNet: Dropout, Linear, ReLU, ...) in order.
    Only the layouts torchvision has convert: plain convs with or without batch norm, no LRN.
    """
    if layers.layer_set(model.factorize, model.num_conv_layers) or \
            layers.layer_set(model.multi_branch, model.num_conv_layers):
        raise ValueError("torchvision has no factorised or multi-branch convs")
    if model.norm not in ("none", "batch"):
        raise ValueError(f"torchvision has no norm={model.norm!r} models")
    if isinstance(model, VGG) and "LRN" not in model.cfg:
        ops = ["pool" if c == "M" else "conv" for c in model.cfg]
        fc_indices = [3 * i for i in range(len(model.head) + 1)]
    elif isinstance(model, AlexNet) and not model.lrn_after:
        ops = []
        for i in range(1, model.num_conv_layers + 1):
            ops += ["conv", "pool"] if i in model.pool_after else ["conv"]
        fc_indices = [1, 4, 6]
    else:
        raise ValueError(f"no torchvision layout for this {type(model).__name__}")
    layout, index, conv = {}, 0, 0
    for op in ops:
        if op == "pool":
            index += 1
            continue
        conv += 1
        layout[f"features.{index}"] = (f"conv{conv}", "conv")
        if model.norm == "batch":
            layout[f"features.{index + 1}"] = (f"conv{conv}", "bn")
        index += 3 if model.norm == "batch" else 2
    layout.update({f"classifier.{i}": (f"fc{n}",) for n, i in enumerate(fc_indices, start=1)})
    return layout


def from_torchvision(state_dict: Mapping[str, np.ndarray], model) -> Variables:
    """jaxcnn variables ({"params"}, plus {"batch_stats"} for batch norm) of `model` from a
    torchvision-layout VGG / AlexNet state dict (see `torchvision_layout`).

    Conv weights go OIHW -> HWIO, linear weights (out, in) -> (in, out). The first linear layer
    reads the feature map flattened in torch's (C, H, W) order; its rows are permuted to jaxcnn's
    (H, W, C) flatten order.
    """
    params, stats, used = {}, {}, set()

    def take(key):
        used.add(key)
        return np.asarray(state_dict[key], np.float32)

    channels = None
    for prefix, path in torchvision_layout(model).items():
        module = path[-1]
        if module == "conv":
            kernel = take(f"{prefix}.weight").transpose(2, 3, 1, 0)
            channels = kernel.shape[-1]
            params.setdefault(path[0], {})["conv"] = {"kernel": kernel,
                                                      "bias": take(f"{prefix}.bias")}
        elif module == "bn":
            params[path[0]]["bn"] = {"scale": take(f"{prefix}.weight"),
                                     "bias": take(f"{prefix}.bias")}
            stats[path[0]] = {"bn": {"mean": take(f"{prefix}.running_mean"),
                                     "var": take(f"{prefix}.running_var")}}
            used.add(f"{prefix}.num_batches_tracked")
        else:
            kernel = take(f"{prefix}.weight").T
            if module == "fc1":     # reads the flattened feature map
                kernel = chw_to_hwc_rows(kernel, channels)
            params[module] = {"kernel": kernel, "bias": take(f"{prefix}.bias")}
    unused = sorted(set(state_dict) - used)
    if unused:
        raise ValueError(f"state dict entries with no place in {type(model).__name__}: "
                         f"{', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


def chw_to_hwc_rows(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Reorders the rows of a (C·H·W, out) dense kernel, fed by an NCHW flatten, for an NHWC flatten
    of the same (square, H = W) feature map."""
    size = math.isqrt(kernel.shape[0] // channels)
    if channels * size * size != kernel.shape[0]:
        raise ValueError(f"a first FC layer with {kernel.shape[0]} inputs does not read a square "
                         f"map of {channels} channels")
    return (kernel.reshape(channels, size, size, -1).transpose(1, 2, 0, 3)
            .reshape(kernel.shape[0], -1))


def merge(variables: Variables, pretrained: Variables, skip: Sequence[str] = ()) -> Variables:
    """`variables` (e.g. a fresh `model.init`) with every array of `pretrained` in its place, except
    in the top-level modules named in `skip` (e.g. ("fc3",) to fine-tune on other classes).

    A pretrained array the model lacks, or of another shape, is an error.
    """
    flat = traverse_util.flatten_dict(variables)
    for path, value in traverse_util.flatten_dict(pretrained).items():
        if path[1] in skip:
            continue
        if path not in flat:
            raise ValueError(f"the model has no variable {'/'.join(path)}")
        if flat[path].shape != value.shape:
            raise ValueError(f"{'/'.join(path)}: the model has shape {flat[path].shape}, the "
                             f"pretrained weights {value.shape}")
        flat[path] = jnp.asarray(value, flat[path].dtype)
    return traverse_util.unflatten_dict(flat)


def _kernel_and_bias(kernel, bias) -> dict[str, np.ndarray]:
    return {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)}
