"""Pictures of data and of what a network computes: image grids, first-layer filters, feature maps
and a confusion matrix."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


def _stretch(image: np.ndarray) -> np.ndarray:
    """To [0, 1] by the image's own minimum and maximum (inputs after normalisation, filters and
    activations have no fixed range); a constant image becomes 0."""
    image = np.asarray(image, np.float64)
    low, high = image.min(), image.max()
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def image_grid(images, titles: Sequence[str] | None = None, columns: int = 8,
               title: str | None = None, cmap: str = "gray", size: float = 1.3) -> Figure:
    """`images` ([n, H, W], [n, H, W, 1] or [n, H, W, 3]) in rows of `columns`, each stretched to
    its own range, one-channel ones with `cmap`; `titles`, when given, one per image."""
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] != 3) or not len(images):
        raise ValueError(f"image_grid takes [n, H, W], [n, H, W, 1] or [n, H, W, 3] images with "
                         f"n >= 1, got shape {images.shape}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(columns * size, rows * size + (0.4 if title else 0) +
                          (0.25 * rows if titles is not None else 0)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(images):
            ax.imshow(_stretch(images[i]), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            if titles is not None:
                ax.set_title(titles[i], fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def filters_figure(kernel, title: str | None = None, columns: int = 8) -> Figure:
    """A first conv layer's filters, one image per output channel: `kernel` is [kh, kw, in, out]
    with 1 (grey) or 3 (RGB) input channels."""
    kernel = np.asarray(kernel)
    if kernel.ndim != 4 or kernel.shape[2] not in (1, 3):
        raise ValueError(f"filters_figure takes a [kh, kw, in, out] kernel with 1 or 3 input "
                         f"channels (a first layer's), got shape {kernel.shape}")
    return image_grid(kernel.transpose(3, 0, 1, 2), [str(i) for i in range(kernel.shape[3])],
                      columns, title)


def feature_maps_figure(activation, title: str | None = None, columns: int = 8) -> Figure:
    """Every channel of one image's activation [H, W, C] as its own map."""
    activation = np.asarray(activation)
    if activation.ndim != 3:
        raise ValueError(f"feature_maps_figure takes one image's activation [H, W, C], got shape "
                         f"{activation.shape}")
    return image_grid(activation.transpose(2, 0, 1), [str(c) for c in range(activation.shape[2])],
                      columns, title, cmap="viridis")


def confusion_figure(matrix, class_names: Sequence[str], title: str | None = None) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted class, as
    `predict.confusion_matrix` counts it) with the count in every non-empty cell."""
    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"a confusion matrix of {k} classes is {k}x{k}, got shape {matrix.shape}")
    side = min(12.0, 2.5 + 0.45 * k)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(shown, ax=ax, shrink=0.8)
    for (true, predicted), count in np.ndenumerate(matrix):
        if count:
            ax.text(predicted, true, f"{count:g}", ha="center", va="center", fontsize="small",
                    color="white" if count > matrix.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=90 if k > 12 else 0)
    ax.set_yticks(range(k), class_names)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    return fig
