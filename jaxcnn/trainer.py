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
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from jaxcnn import checkpoint, data, models, optim, packing, parallel, programs, train
from jaxcnn.cpu import record
from jaxcnn.models import vgg
from jaxcnn.config import DataConfig, TrainConfig
from jaxcnn.metric_writers import MetricWriter
from jaxcnn.plot import plot_curves

NAN_POLICIES = ("stop", "skip")


class NonFiniteLossError(RuntimeError):
    pass


# Failures the user can act on, reported by their message alone (a bad setting, missing or
# unreadable data, a full disk, an unusable checkpoint, a diverged run); others name their type.
USER_ERRORS = (ValueError, OSError, checkpoint.CheckpointError, NonFiniteLossError)


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
    """Mean loss and top-1/top-5 accuracy over every test example exactly once (numpy values,
    [K] for the members of a packed state)."""
    sums = None
    for batch in data.eval_batches(data_cfg, sharding):
        out = eval_step(state, batch)
        sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    count = np.asarray(sums.pop("count"), np.float64)
    return {**{k: np.asarray(v, np.float64) / count for k, v in sums.items()}, "count": count}


def member_values(values: dict, k: int, packed: bool) -> dict:
    """Member k's entries of host values ([K] arrays when packed) as Python numbers."""
    return {name: (value[k] if packed else value).item() for name, value in values.items()}


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
    Returns the final state and the last test metrics; a non-finite loss under nan_policy "stop"
    raises NonFiniteLossError.
    """
    (member,) = train_members([cfg], should_stop)
    if member.failure:
        raise NonFiniteLossError(member.failure)
    return member.state, member.result


@dataclasses.dataclass
class Member:
    """How one member of `train_members` ended: its final state and last test metrics (with
    "step", and "preempted" when stopped), or the reason it failed."""
    cfg: TrainConfig
    state: train.TrainState | None = None
    result: dict = dataclasses.field(default_factory=dict)
    failure: str | None = None


def train_members(configs: list[TrainConfig], should_stop: Callable[[], bool] = lambda: False
                  ) -> list[Member]:
    """Trains K configurations that differ only in seed, workdir and hyperparameter values
    (`jaxcnn.packing.check`) as one program: their states stacked on a leading member axis, the
    train step mapped over it. Each member resumes from, checkpoints to and writes its metrics and
    figure into its own workdir, exactly as its standalone run (K = 1: `train_and_evaluate`) does;
    members resume together from checkpoints of one step. A member whose loss becomes non-finite
    under nan_policy "stop" keeps its last good checkpoint and fails alone (`Member.failure`)
    while the others train on.
    """
    cfg, packed = configs[0], len(configs) > 1
    if packed and jax.default_backend() == "cpu":
        logging.info("packing %d members on a CPU: each trains at about 1/%d of the speed of one "
                     "run alone (no gain per step on a busy CPU, BENCHMARKS.md), but the job "
                     "starts and compiles once", len(configs), len(configs))
    if cfg.nan_policy not in NAN_POLICIES:
        raise ValueError(f"unknown nan_policy {cfg.nan_policy!r}; valid: {', '.join(NAN_POLICIES)}")
    packing.check(configs)
    for member_cfg in configs:
        try:
            os.makedirs(member_cfg.workdir, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise ValueError(f"workdir {member_cfg.workdir} is a file or inside one: name a "
                             f"directory (it is created when missing)") from None

    # --- Mesh: every device of every process on one "data" axis.
    mesh = parallel.data_mesh()
    parallel.check_batch_size(cfg.data.batch_size, mesh)
    check_grad_accum(cfg, mesh)
    parallel.check_batch_size(cfg.data.eval_batch_size, mesh, "eval_batch_size")
    data_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)

    # --- Input.
    info = data.dataset_info(cfg.data)
    sched = Schedule.create(cfg, data.steps_per_epoch(cfg.data, data_sharding))

    # --- Model and optimiser (a packed member builds its own from traced values in the step).
    model = models.create(cfg.model.name, info.num_classes, **cfg.model.options)
    eval_data, logits_fn = evaluation_setup(cfg, model)
    input_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    lr_fn = optim.learning_rate_schedule(cfg.optim, sched.steps_per_epoch, cfg.data.batch_size,
                                         sched.total_steps)
    tx = optim.create_optimizer(cfg.optim, lr_fn, sched.steps_per_epoch)

    kernel_record = record.record(model, input_shape, cfg.compute)   # into every checkpoint's meta
    # --- Shard: the state is created replicated on every device by one jitted init (mapped over
    # the members' seeds: each member's state is its standalone run's).
    init = functools.partial(train.create_train_state, model=model, input_shape=input_shape,
                             tx=tx, lr_fn=lr_fn)
    keys = jnp.stack([jax.random.key(c.seed) for c in configs]) if packed else jax.random.key(cfg.seed)
    state = programs.jit(jax.vmap(init) if packed else init, cfg.compute,
                         out_shardings=replicated)(keys)

    with contextlib.ExitStack() as stack:
        # --- Checkpoint: each member resumes from the latest checkpoint in its workdir.
        ckpts = [stack.enter_context(checkpoint.Checkpointer(
            os.path.join(c.workdir, "checkpoints"), c.keep_checkpoints,
            checkpoint_meta(c, info, input_shape, kernel_record))) for c in configs]
        writers = [stack.enter_context(contextlib.closing(
            MetricWriter(c.workdir, sched.total_steps, console=k == 0)))
            for k, c in enumerate(configs)]
        profiler = stack.enter_context(contextlib.closing(
            StepProfiler(os.path.join(cfg.workdir, "tensorboard"), cfg.profile_steps)))
        state = restore(ckpts, state, packed)
        start_step = int(jax.device_get(state.step if not packed else state.step[0]))

        # --- Update: one jitted, donated step over the mesh (and over the members).
        if packed:
            step_fn = functools.partial(packing.train_step, cfg=cfg,
                                        steps_per_epoch=sched.steps_per_epoch,
                                        total_steps=sched.total_steps)
            values = jax.device_put(packing.hyperparameter_values(configs), replicated)
            alive = jax.device_put(jnp.ones(len(configs), bool), replicated)
            batch_sharding = data.member_sharding(data_sharding)
            eval_fn = packing.eval_step
        else:
            step_fn = functools.partial(train.train_step, label_smoothing=cfg.optim.label_smoothing,
                                        grad_accum_steps=cfg.optim.grad_accum_steps)
            batch_sharding, eval_fn = data_sharding, train.eval_step
        train_step = programs.jit(step_fn, cfg.compute, in_shardings=(replicated, batch_sharding)
                                  + (replicated,) * (2 * packed),
                                  out_shardings=(replicated,) * (2 + packed), donate_argnums=0)
        eval_step = programs.jit(functools.partial(eval_fn, logits_fn=logits_fn), cfg.compute,
                                 in_shardings=(replicated, data_sharding),
                                 out_shardings=replicated)
        merge = jax.jit(merge_metrics, donate_argnums=0)

        batches = data.train_batches(cfg.data, data_sharding, start_step=start_step,
                                     seeds=[c.seed for c in configs] if packed else None)
        logging.info("%s on %s: %d steps (%d per epoch), global batch %d on %d devices%s",
                     cfg.model.name, cfg.data.dataset, sched.total_steps, sched.steps_per_epoch,
                     cfg.data.batch_size, mesh.devices.size,
                     f", {len(configs)} members packed" if packed else "")
        for writer in writers:
            writer.start(start_step)
        members = [Member(c) for c in configs]

        def running() -> list[int]:
            """The members that have not failed."""
            return [k for k, m in enumerate(members) if m.failure is None]

        def flush_train_metrics(acc, step, n_steps, tick):
            """Writes the interval's mean metrics. Its seconds are read after its metrics are
            fetched, that is, once its last step has run: JAX dispatches ahead of the device, so
            a clock read before would time the dispatch of the interval, not its computation."""
            acc = jax.device_get(acc)
            seconds = time.perf_counter() - tick
            for k in running():
                row = member_values(acc, k, packed)
                if row["nonfinite"] > 0:
                    first = int(row["first_nonfinite_step"])
                    if cfg.nan_policy == "stop":
                        members[k].failure = nonfinite_failure(first, ckpts[k])
                        logging.warning("%s: %s", configs[k].workdir, members[k].failure)
                        continue
                    logging.warning("%s: skipped %d non-finite updates (first at step %d)",
                                    configs[k].workdir, int(row["nonfinite"]), first)
                means = {name: row[name] / n_steps
                         for name in ("loss", "top1", "top5", "learning_rate")}
                means["images_per_s"] = n_steps * cfg.data.batch_size / seconds
                writers[k].write("train", step, step / sched.steps_per_epoch, means)

        acc, acc_steps, tick = None, 0, time.perf_counter()
        for step in range(start_step + 1, sched.total_steps + 1):
            if packed:
                state, metrics, alive = profiler.run(
                    step, lambda: train_step(state, next(batches), values, alive))
            else:
                state, metrics = profiler.run(step, lambda: train_step(state, next(batches)))
            acc = metrics if acc is None else merge(acc, metrics)
            acc_steps += 1
            last = step == sched.total_steps
            if step % cfg.log_every == 0 or last or step % sched.eval_every == 0:
                flush_train_metrics(acc, step, acc_steps, tick)
                acc, acc_steps = None, 0
                if not running():
                    break
            if step % sched.eval_every == 0 or last:
                result = evaluate(eval_step, state, eval_data, data_sharding)
                for k in running():
                    members[k].result = member_values(result, k, packed)
                    writers[k].write("test", step, step / sched.steps_per_epoch,
                                     {n: v for n, v in members[k].result.items() if n != "count"})
            if step % sched.checkpoint_every == 0 or step % sched.eval_every == 0 or last:
                save(ckpts, state, running(), packed)
            # Multi-process jobs: JAX's preemption service owns SIGTERM and names one step at which
            # every process stops (False in a single process).
            if should_stop() or multihost_utils.reached_preemption_sync_point(step):
                save(ckpts, state, running(), packed)
                logging.warning("stop requested: saved step %d to %s", step,
                                ", ".join(ckpts[k].directory for k in running()))
                for k in running():
                    members[k].result = {**members[k].result, "preempted": True, "step": step}
                break
            if acc_steps == 0:
                tick = time.perf_counter()
        else:   # the last step was reached (not stopped, not every member failed)
            if running() and not members[running()[0]].result:   # resumed a finished run
                result = evaluate(eval_step, state, eval_data, data_sharding)
                for k in running():
                    members[k].result = member_values(result, k, packed)
            for k in running():
                members[k].result = {**members[k].result, "step": sched.total_steps}
    for k, m in enumerate(members):
        m.state = packing.member(state, k) if packed else state
        draw_curves(m.cfg)
    return members


def checkpoint_meta(cfg: TrainConfig, info, input_shape: tuple[int, ...], kernel_record: dict
                    ) -> dict:
    """What a checkpoint says of its run besides the state: model, classes, data, config, and the
    kernels its program ran (`jaxcnn.cpu.record`)."""
    return {"model": cfg.model.name, "model_options": json_safe(cfg.model.options),
            "num_classes": info.num_classes, "class_names": list(info.class_names),
            "input_shape": list(input_shape), "dataset": cfg.data.dataset,
            "augment": cfg.data.augment, "config": json_safe(dataclasses.asdict(cfg)),
            "kernels": kernel_record}


def restore(ckpts: list[checkpoint.Checkpointer], state: train.TrainState, packed: bool
            ) -> train.TrainState:
    """The members' latest checkpoints (stacked when packed), or `state` where none has one."""
    if not packed:
        restored = ckpts[0].restore_latest(checkpoint.abstract_like(state))
        if restored is not None:
            logging.info("resumed from step %d of %s", int(restored.step), ckpts[0].directory)
        return state if restored is None else restored
    template = checkpoint.abstract_like(packing.member(state, 0))
    restored = [ckpt.restore_latest(template) for ckpt in ckpts]
    steps = [None if r is None else int(r.step) for r in restored]
    if all(s is None for s in steps):
        return state
    if len(set(steps)) > 1:
        raise ValueError("packed members resume together, from checkpoints of one step; these "
                         "are at steps " + ", ".join(f"{c.directory}: {s}" for c, s in
                                                     zip(ckpts, steps)))
    logging.info("resumed %d members from step %d", len(ckpts), steps[0])
    return jax.device_put(packing.stack(restored), jax.tree.map(lambda x: x.sharding, state))


def save(ckpts: list[checkpoint.Checkpointer], state: train.TrainState, members: list[int],
         packed: bool) -> None:
    """Checkpoints the given members of `state` (stacked when packed)."""
    for k in members:
        ckpts[k].save(packing.member(state, k) if packed else state)


def nonfinite_failure(step: int, ckpt: checkpoint.Checkpointer) -> str:
    kept = ckpt.latest_step()
    return (f"non-finite loss or gradient at step {step}; " +
            (f"stopped with the last good checkpoint (step {kept}) kept in {ckpt.directory}"
             if kept is not None else f"stopped with no last good checkpoint yet in "
             f"{ckpt.directory}"))


def draw_curves(cfg: TrainConfig) -> None:
    """The figure of the metrics so far (at the end of a run, and when a run is stopped)."""
    if cfg.plot and jax.process_index() == 0:
        logging.info("figure: %s", plot_curves(cfg.workdir))
