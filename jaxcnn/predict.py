"""Class probabilities for image files or the test split, from the latest checkpoint of a
training workdir (`jaxcnn.runs.load`).

    predictor = predict.load("runs/quickstart")
    images = np.stack([predict.read_image(path, predictor.run.input_shape,
                                          predictor.run.config.data.augment) for path in paths])
    probabilities = predictor.predict(images)        # [n, num_classes]
    predictor.run.class_names                        # from the training dataset

Images are brought to the model's input as the evaluation pipeline brings the test split (shorter
side resized to the evaluation scale of the training augmentation, centre crop, channels converted
to the model's) and normalised with
the training dataset's own statistics (`datasets.normalization`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageOps

from jaxcnn import input_pipeline, parallel, runs
from jaxcnn.datasets import EVAL_RESIZE, normalization
from jaxcnn.device_data import normalize


@dataclasses.dataclass(frozen=True)
class Predictor:
    run: runs.Run

    @functools.cached_property
    def _probabilities(self):
        mean, std = normalization(self.run.config.data)
        return jax.jit(lambda variables, images: jax.nn.softmax(
            self.run.model.apply(variables, normalize(images, mean, std))))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 [n, *input_shape] images -> float32 [n, num_classes] class probabilities."""
        return np.asarray(self._probabilities(self.run.variables, jnp.asarray(images)))


def load(workdir: str) -> Predictor:
    """The predictor of the latest checkpoint in `workdir` (see `runs.load`)."""
    return Predictor(runs.load(workdir))


class Predictions(NamedTuple):
    images: np.ndarray          # float32 [n, H, W, C], normalised as the model sees them
    labels: np.ndarray          # int32 [n]
    probabilities: np.ndarray   # float32 [n, num_classes]


def predict_test_split(run: runs.Run) -> Predictions:
    """The model's class probabilities for every test example, in the evaluation pipeline's
    order."""
    apply = jax.jit(lambda variables, images: jax.nn.softmax(run.model.apply(variables, images)))
    mesh = parallel.data_mesh()
    variables = jax.device_put(run.variables, parallel.replicated(mesh))
    parts = []
    for batch in input_pipeline.eval_batches(run.config.data, parallel.batch_sharding(mesh)):
        keep = np.asarray(batch["mask"]).astype(bool)
        parts.append((np.asarray(batch["image"])[keep], np.asarray(batch["label"])[keep],
                      np.asarray(apply(variables, batch["image"]))[keep]))
    return Predictions(*(np.concatenate(arrays) for arrays in zip(*parts)))


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """int64 [num_classes, num_classes]: row = true class, column = predicted class."""
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape:
        raise ValueError(f"{labels.shape} labels and {predicted.shape} predictions")
    for name, values in (("label", labels), ("prediction", predicted)):
        if values.size and not 0 <= values.min() <= values.max() < num_classes:
            raise ValueError(f"a {name} is outside 0..{num_classes - 1}")
    return np.bincount(labels * num_classes + predicted,
                       minlength=num_classes ** 2).reshape(num_classes, num_classes)


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
    """`tf_preprocess.eval_image` in PIL: the shorter side resized to the evaluation scale of the
    training augmentation (bilinear, antialiased), then the centre size x size crop."""
    width, height = image.size
    scale = round(size * EVAL_RESIZE[augment]) / min(width, height)
    new_size = (max(round(width * scale), size), max(round(height * scale), size))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))
