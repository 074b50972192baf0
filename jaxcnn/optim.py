"""Optax optimisers and learning-rate schedules, built from an `OptimConfig`.

The chain is, in order: gradient clipping → coupled L2 (`l2 * w` added to the gradient, so it goes
through momentum, as PaddlePaddle's L2Regularization and TF's `tf.nn.l2_loss` terms do) → the
optimiser's direction (momentum / Nesterov / Adam) → decoupled weight decay (`wd * w` added after it,
as in AdamW and Loshchilov & Hutter's SGDW) → reduce-on-plateau → the learning-rate schedule.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import optax

from jaxcnn.config import OptimConfig

OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "discexp", "piecewise", "cosine", "linear", "plateau")
# Values that change no shape and no program structure: the members of a packed run may differ in
# them (`jaxcnn.packing`). l2, weight_decay, grad_clip_norm and an sgd momentum switch a part of
# the chain on at a non-zero value, so members agree on which of them are zero.
HYPERPARAMETERS = ("learning_rate", "momentum", "l2", "weight_decay", "grad_clip_norm",
                   "label_smoothing")
SWITCHES = ("l2", "weight_decay", "grad_clip_norm")


def hyperparameters(cfg: OptimConfig) -> dict[str, float]:
    """The packable values of `cfg`, by name."""
    return {name: getattr(cfg, name) for name in HYPERPARAMETERS}


def structure(cfg: OptimConfig) -> tuple:
    """What decides the chain's parts and the program: the optimizer, the schedule and every
    field but the hyperparameters' values, which only say whether a switch is on."""
    fixed = {k: v for k, v in vars(cfg).items() if k not in HYPERPARAMETERS}
    on = {name: getattr(cfg, name) > 0 for name in SWITCHES}
    if cfg.optimizer == "sgd":
        on["momentum"] = cfg.momentum > 0
    return tuple(sorted({**fixed, **on}.items()))


def kernel_mask(params: Any) -> Any:
    """True for conv / dense kernels: weight decay skips biases and batch-norm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


def learning_rate_schedule(cfg: OptimConfig, steps_per_epoch: int, global_batch: int,
                           total_steps: int, base: Any = None) -> optax.Schedule:
    """Learning rate as a function of the step, with optional linear warm-up in front; `base`
    (default cfg.learning_rate) is its peak, and may be a traced value."""
    base = cfg.learning_rate if base is None else base
    if cfg.schedule in ("constant", "plateau"):
        schedule = optax.constant_schedule(base)
    elif cfg.schedule == "discexp":
        # PaddlePaddle's discexp counts samples: lr = base * rate ** floor(step * batch / samples).
        schedule = optax.exponential_decay(base, cfg.discexp_samples / global_batch,
                                           cfg.discexp_rate, staircase=True)
    elif cfg.schedule == "piecewise":
        boundaries = {round(e * steps_per_epoch): 1.0 / cfg.decay_factor
                      for e in cfg.boundaries_epochs}
        schedule = optax.piecewise_constant_schedule(base, boundaries)
    elif cfg.schedule == "cosine":
        schedule = optax.cosine_decay_schedule(base, max(1, total_steps - cfg.warmup_steps))
    elif cfg.schedule == "linear":
        schedule = optax.linear_schedule(base, 0.0, max(1, total_steps - cfg.warmup_steps))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if cfg.warmup_steps > 0:
        warmup = optax.linear_schedule(0.0, base, cfg.warmup_steps)
        schedule = optax.join_schedules([warmup, schedule], [cfg.warmup_steps])
    return schedule


def _direction(cfg: OptimConfig, momentum: Any) -> optax.GradientTransformation:
    if cfg.optimizer == "sgd":
        return optax.trace(momentum) if cfg.momentum else optax.identity()
    if cfg.optimizer == "nesterov":
        return optax.trace(momentum, nesterov=True)
    if cfg.optimizer in ("adam", "adamw"):
        return optax.scale_by_adam()
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def create_optimizer(cfg: OptimConfig, schedule: optax.Schedule, steps_per_epoch: int,
                     values: dict[str, Any] | None = None) -> optax.GradientTransformationExtraArgs:
    """The optax chain described in the module docstring.

    Its parts follow `cfg`; their values are cfg's, or those of `values` (`HYPERPARAMETERS` by
    name, possibly traced: a packed run's member builds its chain inside the vmapped step).
    With schedule "plateau" the update needs `value=loss`; the loss is averaged over an epoch of
    steps and the learning rate divided by `decay_factor` after `plateau_patience` flat epochs.
    """
    v = {**hyperparameters(cfg), **(values or {})}
    parts = []
    if cfg.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(v["grad_clip_norm"]))
    if cfg.l2 > 0:
        parts.append(optax.add_decayed_weights(v["l2"], mask=kernel_mask))
    parts.append(_direction(cfg, v["momentum"]))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(v["weight_decay"], mask=kernel_mask))
    parts.append(optax.scale_by_learning_rate(schedule))
    if cfg.schedule == "plateau":
        parts.append(optax.contrib.reduce_on_plateau(
            factor=1.0 / cfg.decay_factor, patience=cfg.plateau_patience,
            accumulation_size=steps_per_epoch))
    return optax.chain(*parts)


def current_learning_rate(schedule: Callable, opt_state: Any, step: jax.Array) -> jax.Array:
    """The learning rate in effect at `step`, including any reduce-on-plateau scale."""
    is_plateau = lambda s: isinstance(s, optax.contrib.ReduceLROnPlateauState)
    scales = [s.scale for s in jax.tree.leaves(opt_state, is_leaf=is_plateau) if is_plateau(s)]
    return schedule(step) * (scales[0] if scales else 1.0)
