"""Pillow image ops: decode an image file and bring it to the evaluation geometry, as
jaxcnn.data.tf_ops does in TensorFlow (bilinear antialiased resizes of the two libraries differ by a
few levels on resized images; images already at the size are equal)."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from jaxcnn.data.sources import EVAL_RESIZE


def read_image(path: str, input_shape: tuple[int, int, int], augment: str = "none") -> np.ndarray:
    """uint8 [H, W, C] image of any size and mode, fitted to `input_shape` (square H = W)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):   # 16-bit grayscale: to 8 bits, as TF decoding does
                image = Image.fromarray((np.asarray(image).clip(0, 65535) >> 8).astype(np.uint8))
            image = image.convert("L" if input_shape[2] == 1 else "RGB")
    except OSError as e:   # missing, unreadable or not an image (PIL's UnidentifiedImageError)
        raise ValueError(f"cannot read image {path!r}: {e}") from None
    return np.asarray(fit(image, input_shape[0], augment)).reshape(input_shape)


def fit(image: Image.Image, size: int, augment: str = "none") -> Image.Image:
    """`tf_ops.eval_image` in Pillow: the shorter side resized to the evaluation scale of the
    training augmentation (bilinear, antialiased), then the centre size x size crop."""
    width, height = image.size
    scale = round(size * EVAL_RESIZE[augment]) / min(width, height)
    new_size = (max(round(width * scale), size), max(round(height * scale), size))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))
