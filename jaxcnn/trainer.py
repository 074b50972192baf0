"""The training loop: mesh, input, model, shard, update, checkpoint, eval — one section each.

`train_and_evaluate(config)` is all a caller needs; `experiments/run.py` turns flags into the config.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from typing import Callable

import jax
import jax.numpy as jnp
from absl import logging
from jax.experimental import multihost_utils

from jaxcnn import checkpoint, data, models, optim, parallel, train, xla_options
from jaxcnn.models import vgg
from jaxcnn.config import DataConfig, TrainConfig
from jaxcnn.metric_writers import MetricWriter
from jaxcnn.plot import plot_curves

NAN_POLICIES = ("stop", "skip")


class NonFiniteLossError(RuntimeError):
    pass


def merge_metrics(total: dict, new: dict) -> dict:
    """Accumulates per-step metrics on the device (a min for the first bad step, sums otherwise)."""
    return {k: jnp.minimum(total[k], v) if k == "first_nonfinite_step" else total[k] + v
            for k, v in new.items()}


def json_safe(options: dict) -> dict:
    """Model options as JSON stores them (dtypes by name, tuples as lists), so that options saved
    in a checkpoint compare equal to the same options given again, and rebuild the model."""
    return json.loads(json.dumps(options, default=str, sort_keys=True))


@dataclasses.dataclass
class Schedule:
    """Step counts derived from the config and the dataset size."""
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    checkpoint_every: int

    @classmethod
    def create(cls, cfg: TrainConfig, steps_per_epoch: int) -> "Schedule":
        if steps_per_epoch < 1:
            raise ValueError(f"batch_size={cfg.data.batch_size} is larger than the training set")
        total = cfg.steps if cfg.steps > 0 else math.ceil(cfg.epochs * steps_per_epoch)
        eval_every = max(1, round(cfg.eval_every_epochs * steps_per_epoch))
        return cls(steps_per_epoch, total, eval_every, cfg.checkpoint_every or eval_every)


class StepProfiler:
    """A jax.profiler trace of training steps first..last (inclusive), written to `logdir`, where
    TensorBoard's Profile tab finds it (`logdir/plugins/profile/<time>/<host>.xplane.pb`).

    `run(step, fn)` runs one step; a run resumed after `first` starts tracing at its first step,
    and `close()` ends a trace that the run ended before `last`.
    """

    def __init__(self, logdir: str, steps: tuple[int, int] | None):
        self.logdir, self.steps, self.active = logdir, steps, False

    def run(self, step: int, fn: Callable):
        if self.steps is None or not self.steps[0] <= step <= self.steps[1]:
            return fn()
        if not self.active:
            jax.profiler.start_trace(self.logdir)
            self.active = True
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            out = fn()
        if step == self.steps[1]:
            jax.block_until_ready(out)   # the trace holds the whole of the last step
            self.close()
        return out

    def close(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False


def check_grad_accum(cfg: TrainConfig, mesh) -> None:
    """batch_size is the batch of one update: it must split into grad_accum_steps micro-batches,
    each a multiple of the device count."""
    steps, batch = cfg.optim.grad_accum_steps, cfg.data.batch_size
    if steps < 1 or batch % steps:
        raise ValueError(f"grad_accum_steps={steps} must be a positive divisor of "
                         f"batch_size={batch} (the batch of one update, split into micro-batches)")
    if steps > 1:
        parallel.check_batch_size(batch // steps, mesh, "batch_size / grad_accum_steps")


def evaluate(eval_step: Callable, state: train.TrainState, data_cfg: DataConfig, sharding) -> dict:
    """Mean loss and top-1/top-5 accuracy over every test example exactly once."""
    sums = None
    for batch in data.eval_batches(data_cfg, sharding):
        out = eval_step(state, batch)
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = float(sums.pop("count"))
    return {**{k: float(v) / count for k, v in sums.items()}, "count": count}


def evaluation_setup(cfg: TrainConfig, model) -> tuple[DataConfig, Callable | None]:
    """The test data and the logits function: the plain forward pass on the training geometry, or
    VGG dense evaluation (paper section 3.2) on whole dense_eval_size × dense_eval_size images."""
    if not cfg.dense_eval_size:
        return cfg.data, None
    if not isinstance(model, vgg.VGG) or model.pool_to is None:
        raise ValueError(f"dense evaluation needs a VGG with a 7x7 head grid, not {cfg.model.name}")
    if cfg.dense_eval_size < cfg.data.image_size:
        raise ValueError(f"dense_eval_size={cfg.dense_eval_size} is smaller than the training "
                         f"image size {cfg.data.image_size}")
    eval_data = dataclasses.replace(cfg.data, image_size=cfg.dense_eval_size, augment="none")
    return eval_data, functools.partial(vgg.dense_eval_logits, model, flip=cfg.eval_flip)


def train_and_evaluate(cfg: TrainConfig, should_stop: Callable[[], bool] = lambda: False
                       ) -> tuple[train.TrainState, dict]:
    """Trains `cfg.model` on `cfg.data`, resuming from the latest readable checkpoint in
    `cfg.workdir` (damaged ones are moved aside, see `checkpoint.Checkpointer.restore_latest`).

    should_stop: polled once per step (no device sync); when it returns True the current state is
    checkpointed and the function returns early with {"preempted": True, ...}. In a multi-process
    job it must answer the same on every process; SIGTERM there is handled by JAX's preemption
    sync point, with the same effect.
    Returns the final state and the last test metrics.
    """
    if cfg.nan_policy not in NAN_POLICIES:
        raise ValueError(f"unknown nan_policy {cfg.nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
    try:
        os.makedirs(cfg.workdir, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ValueError(f"workdir {cfg.workdir} is a file or inside one: name a directory "
                         f"(it is created when missing)") from None

    # --- Mesh: every device of every process on one "data" axis.
    mesh = parallel.data_mesh()
    parallel.check_batch_size(cfg.data.batch_size, mesh)
    check_grad_accum(cfg, mesh)
    parallel.check_batch_size(cfg.data.eval_batch_size, mesh, "eval_batch_size")
    data_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)

    # --- Input.
    info = data.dataset_info(cfg.data)
    sched = Schedule.create(cfg, data.steps_per_epoch(cfg.data, data_sharding))

    # --- Model and optimiser.
    model = models.create(cfg.model.name, info.num_classes, **cfg.model.options)
    eval_data, logits_fn = evaluation_setup(cfg, model)
    input_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    lr_fn = optim.learning_rate_schedule(cfg.optim, sched.steps_per_epoch, cfg.data.batch_size,
                                         sched.total_steps)
    tx = optim.create_optimizer(cfg.optim, lr_fn, sched.steps_per_epoch)

    # --- Shard: the state is created replicated on every device by one jitted init.
    init = functools.partial(train.create_train_state, model=model, input_shape=input_shape,
                             tx=tx, lr_fn=lr_fn)
    state = jax.jit(init, out_shardings=replicated)(jax.random.key(cfg.seed))

    # --- Checkpoint: resume from the latest one in the workdir.
    meta = {"model": cfg.model.name, "model_options": json_safe(cfg.model.options),
            "num_classes": info.num_classes, "class_names": list(info.class_names),
            "input_shape": list(input_shape), "dataset": cfg.data.dataset,
            "augment": cfg.data.augment, "config": json_safe(dataclasses.asdict(cfg))}
    ckpt_dir = os.path.join(cfg.workdir, "checkpoints")
    with (checkpoint.Checkpointer(ckpt_dir, cfg.keep_checkpoints, meta) as ckpt,
          contextlib.closing(MetricWriter(cfg.workdir, sched.total_steps)) as writer,
          contextlib.closing(StepProfiler(os.path.join(cfg.workdir, "tensorboard"),
                                          cfg.profile_steps)) as profiler):
        restored = ckpt.restore_latest(checkpoint.abstract_like(state))
        if restored is not None:
            state = restored
            logging.info("resumed from step %d of %s", int(state.step), ckpt.directory)
        start_step = int(jax.device_get(state.step))

        # --- Update: one jitted, donated step over the mesh.
        train_step = jax.jit(functools.partial(train.train_step,
                                               label_smoothing=cfg.optim.label_smoothing,
                                               grad_accum_steps=cfg.optim.grad_accum_steps),
                             in_shardings=(replicated, data_sharding),
                             out_shardings=(replicated, replicated), donate_argnums=0,
                             compiler_options=xla_options.compiler_options())
        eval_step = jax.jit(functools.partial(train.eval_step, logits_fn=logits_fn),
                            in_shardings=(replicated, data_sharding), out_shardings=replicated,
                            compiler_options=xla_options.compiler_options())
        merge = jax.jit(merge_metrics, donate_argnums=0)

        batches = data.train_batches(cfg.data, data_sharding, start_step=start_step)
        logging.info("%s on %s: %d steps (%d per epoch), global batch %d on %d devices",
                     cfg.model.name, cfg.data.dataset, sched.total_steps, sched.steps_per_epoch,
                     cfg.data.batch_size, mesh.devices.size)
        writer.start(start_step)

        def flush_train_metrics(acc, step, n_steps, seconds):
            acc = jax.device_get(acc)
            if acc["nonfinite"] > 0:
                first = int(acc["first_nonfinite_step"])
                if cfg.nan_policy == "stop":
                    kept = ckpt.latest_step()
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at step {first}; " +
                        (f"stopped with the last good checkpoint (step {kept}) kept in "
                         f"{ckpt.directory}" if kept is not None
                         else f"stopped with no last good checkpoint yet in {ckpt.directory}"))
                logging.warning("skipped %d non-finite updates (first at step %d)",
                                int(acc["nonfinite"]), first)
            means = {k: float(acc[k]) / n_steps for k in ("loss", "top1", "top5", "learning_rate")}
            means["images_per_s"] = n_steps * cfg.data.batch_size / seconds
            writer.write("train", step, step / sched.steps_per_epoch, means)

        result: dict = {}
        acc, acc_steps, tick = None, 0, time.perf_counter()
        for step in range(start_step + 1, sched.total_steps + 1):
            state, metrics = profiler.run(step, lambda: train_step(state, next(batches)))
            acc = metrics if acc is None else merge(acc, metrics)
            acc_steps += 1
            last = step == sched.total_steps
            if step % cfg.log_every == 0 or last or step % sched.eval_every == 0:
                flush_train_metrics(acc, step, acc_steps, time.perf_counter() - tick)
                acc, acc_steps = None, 0
            if step % sched.eval_every == 0 or last:
                result = evaluate(eval_step, state, eval_data, data_sharding)
                writer.write("test", step, step / sched.steps_per_epoch,
                             {k: v for k, v in result.items() if k != "count"})
            if step % sched.checkpoint_every == 0 or step % sched.eval_every == 0 or last:
                ckpt.save(state)
            # Multi-process jobs: JAX's preemption service owns SIGTERM and names one step at which
            # every process stops (False in a single process).
            if should_stop() or multihost_utils.reached_preemption_sync_point(step):
                ckpt.save(state)
                logging.warning("stop requested: saved step %d to %s", step, ckpt.directory)
                draw_curves(cfg)
                return state, {**result, "preempted": True, "step": step}
            if acc_steps == 0:
                tick = time.perf_counter()
    if not result:   # resumed a run that had already finished
        result = evaluate(eval_step, state, eval_data, data_sharding)
    draw_curves(cfg)
    return state, {**result, "step": sched.total_steps}


def draw_curves(cfg: TrainConfig) -> None:
    """The figure of the metrics so far (at the end of a run, and when a run is stopped)."""
    if cfg.plot and jax.process_index() == 0:
        logging.info("figure: %s", plot_curves(cfg.workdir))
