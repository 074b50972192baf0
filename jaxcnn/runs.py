"""A training workdir, finished or still training, opened in one call:

    run = runs.load("runs/quickstart")
    run.model.apply(run.variables, images)     # the model of the latest checkpoint
    run.config                                 # the TrainConfig it was trained with
    run.class_names, run.rows                  # class names; metrics.jsonl's rows so far

Only the model's variables are read from the checkpoint (not the optimiser state), and nothing is
written, so a run that is still training can be looked at while it goes on. A damaged newest
checkpoint (unreadable, or whose model arrays fail the checksums stored with it) is skipped for the
one before it, with the warning training gives, and left where it is.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging

from jaxcnn import checkpoint, models
from jaxcnn.config import DataConfig, ModelConfig, TrainConfig
from jaxcnn.metrics_file import read_metrics


@dataclasses.dataclass(frozen=True)
class Run:
    workdir: str
    step: int                         # of the checkpoint loaded
    model: models.ConvNet
    variables: dict                   # {"params", "batch_stats"}
    config: TrainConfig
    class_names: list[str]
    rows: list[dict]                  # see metrics_file.read_metrics

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.config.data.image_size, self.config.data.image_size, self.config.data.channels


def from_dict(cls: type, data: dict) -> Any:
    """A (nested) config dataclass from its `dataclasses.asdict` read back from JSON: JSON's lists
    become tuples again; fields the dict lacks keep their defaults."""
    values = {}
    for field in dataclasses.fields(cls):
        if field.name not in data:
            continue
        value = data[field.name]
        default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else field.default)
        if dataclasses.is_dataclass(default):
            value = from_dict(type(default), value)
        elif isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)


def _config(meta: dict, workdir: str) -> TrainConfig:
    if "config" in meta:
        return dataclasses.replace(from_dict(TrainConfig, meta["config"]), workdir=workdir)
    # Checkpoints written before 2026-11 name only the model and the data.
    size, _, channels = meta["input_shape"]
    return TrainConfig(model=ModelConfig(meta["model"], meta["model_options"]),
                       data=DataConfig(dataset=meta["dataset"], image_size=size, channels=channels,
                                       augment=meta["augment"]), workdir=workdir)


def _restore(manager: ocp.CheckpointManager, step: int) -> tuple[dict, models.ConvNet, dict]:
    """(meta, model, {"params", "batch_stats"}) of checkpoint `step`."""
    meta = checkpoint.read_meta(manager, step)
    model = models.create(meta["model"], meta["num_classes"], **meta["model_options"])
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *meta["input_shape"])))
    # Only the model's variables of the saved train state: the optimiser state is not needed.
    target = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          target)
    with checkpoint.reading("state"):
        variables = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            target, ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
    _check(meta, variables["state"])
    return meta, model, variables["state"]


def _check(meta: dict, variables: dict) -> None:
    """Compares the restored variables with the checksums the meta stores for the train state's
    arrays (`checkpoint._checksums`; checkpoints written before 2026-11 have none): Orbax stores
    floats without a checksum of its own, so flipped bits would load as other numbers."""
    if "arrays" not in meta or "checksums" not in meta:
        return
    saved = dict(zip(meta["arrays"], meta["checksums"]))
    # The state's path of ['params']['conv1']... is .params['conv1']...
    paths = [f".{path[0].key}{jax.tree_util.keystr(path[1:])}"
             for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]]
    for path, now in zip(paths, jax.device_get(checkpoint._checksums(variables))):
        if path in saved and int(now) != saved[path]:
            raise checkpoint.Unreadable(f"the array data of {path} does not match its checksum")


def load(workdir: str) -> Run:
    """The newest readable checkpoint of `workdir`, its model rebuilt from the meta, and the metric
    rows. A damaged checkpoint is skipped with the warning training gives, but left where it is
    (loading writes nothing; the training job moves it aside when it next starts)."""
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"no workdir {workdir!r}")
    directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {directory!r} yet: train first with "
                                    f"`python -m experiments.run --workdir={workdir}`")
        for step in steps:
            try:
                meta, model, variables = _restore(manager, step)
                break
            except checkpoint.Unreadable as e:
                logging.warning("checkpoint step %d is unreadable (%s): left in %s; trying the "
                                "one before", step, e, os.path.join(directory, str(step)))
        else:
            raise checkpoint.CheckpointError(f"no readable checkpoint in {directory} (steps "
                                             f"{', '.join(map(str, steps))} are damaged)")
    finally:
        manager.close()
    return Run(workdir, step, model, variables, _config(meta, workdir),
               list(meta["class_names"]), read_metrics(workdir))
