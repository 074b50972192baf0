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
the training dataset's own statistics (`jaxcnn.data.sources.normalization`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcnn import data, parallel, programs, runs
from jaxcnn.data.device import normalize
from jaxcnn.data.pil_ops import read_image  # noqa: F401  (part of this module's API)
from jaxcnn.data.sources import normalization


@dataclasses.dataclass(frozen=True)
class Predictor:
    run: runs.Run

    @functools.cached_property
    def _probabilities(self):
        mean, std = normalization(self.run.config.data)
        return programs.jit(lambda variables, images: jax.nn.softmax(
            self.run.model.apply(variables, normalize(images, mean, std))),
            self.run.config.compute)

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
    apply = programs.jit(lambda variables, images: jax.nn.softmax(
        run.model.apply(variables, images)), run.config.compute)
    mesh = parallel.data_mesh()
    variables = jax.device_put(run.variables, parallel.replicated(mesh))
    parts = []
    for batch in data.eval_batches(run.config.data, parallel.batch_sharding(mesh)):
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
