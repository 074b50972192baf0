"""Class probabilities for image files, from the latest checkpoint of a training workdir.

    predictor = predict.load("runs/quickstart")
    images = np.stack([predict.read_image(path, predictor.input_shape, predictor.augment)
                       for path in paths])
    probabilities = predictor.predict(images)        # [n, num_classes]
    predictor.class_names                            # from the training dataset

Images are brought to the model's input as the evaluation pipeline brings the test split (shorter
side resized to the evaluation scale of the training augmentation, centre crop, channels converted
to the model's) and normalised with
the training dataset's own statistics (`jaxcnn.data.sources.normalization`).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxcnn import models
from jaxcnn.config import DataConfig
from jaxcnn.data.device import normalize
from jaxcnn.data.pil_ops import read_image  # noqa: F401  (part of this module's API)
from jaxcnn.data.sources import normalization


@dataclasses.dataclass(frozen=True)
class Predictor:
    model: Any                        # a jaxcnn.models ConvNet
    variables: dict                   # {"params", "batch_stats"}
    class_names: list[str]
    input_shape: tuple[int, int, int]
    dataset: str                      # the training dataset, whose normalisation applies
    augment: str                      # the training augmentation, whose evaluation view applies
    step: int

    @functools.cached_property
    def _probabilities(self):
        mean, std = normalization(DataConfig(dataset=self.dataset, image_size=self.input_shape[0],
                                             channels=self.input_shape[2]))
        return jax.jit(lambda variables, images: jax.nn.softmax(
            self.model.apply(variables, normalize(images, mean, std))))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 [n, *input_shape] images -> float32 [n, num_classes] class probabilities."""
        return np.asarray(self._probabilities(self.variables, jnp.asarray(images)))


def load(workdir: str) -> Predictor:
    """The model and variables of the latest checkpoint in `workdir`, rebuilt from its meta."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no workdir {workdir!r}")
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory!r}: train first with "
                                f"`python -m experiments.run --workdir={workdir}`")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    model = models.create(meta["model"], meta["num_classes"], **meta["model_options"])
    input_shape = tuple(meta["input_shape"])
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *input_shape)))
    # Only the model's variables of the saved train state: the optimiser state is not needed.
    target = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        target, ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
    manager.close()
    return Predictor(model, restored["state"], list(meta["class_names"]), input_shape,
                     meta["dataset"], meta["augment"], step)
