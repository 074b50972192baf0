"""Packed runs: K members of one configuration trained as one program, so that a sweep of small
nets fills an accelerator instead of using a few percent of K of them.

The members' train states are stacked on a leading member axis and the train step is mapped over
it (`jax.vmap`): one dispatch per step for all K. Members differ in their seed (initialisation,
dropout, data order) and in the values of `optim.HYPERPARAMETERS` (the schedule's peak learning
rate, momentum, L2, weight decay, gradient-clipping norm, label smoothing), which each member's
step reads as traced values. Everything else, the dropout rate included (flax's `nn.Dropout`
branches on its rate in Python), shapes the program, and members must agree on it.

Each member computes what its standalone run computes: the same initial state, the same batches,
the same updates (to float32 rounding), tested against standalone runs in tests/test_packing.py.
A member whose loss or gradient becomes non-finite under nan_policy "stop" is frozen at its last
good state inside the step (no host sync) while the others go on.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxcnn import optim, train
from jaxcnn.config import TrainConfig

# Fields that only say where a member's files go or which seed it has.
PER_MEMBER = ("seed", "workdir")


def key(cfg: TrainConfig) -> tuple:
    """What members of one pack share: `cfg` without its seed, workdir and hyperparameter values,
    and which switches of its optimizer are on (`optim.structure`)."""
    values = {name: None for name in optim.HYPERPARAMETERS}
    shared = dataclasses.replace(cfg, seed=0, workdir="", data=dataclasses.replace(cfg.data, seed=0),
                                 optim=dataclasses.replace(cfg.optim, **values))
    return json.dumps(dataclasses.asdict(shared), sort_keys=True, default=str), optim.structure(cfg.optim)


def check(configs: Sequence[TrainConfig]) -> None:
    """Raises ValueError naming the first setting in which a member differs from member 0 in a
    way that would change the program."""
    if not configs:
        raise ValueError("a packed run needs at least one member")
    first = key(configs[0])
    for k, cfg in enumerate(configs[1:], 1):
        if key(cfg) != first:
            raise ValueError(f"members 0 and {k} cannot be packed: {_difference(configs[0], cfg)}")
        if cfg.data.seed != cfg.seed:
            raise ValueError(f"member {k}: its data seed {cfg.data.seed} differs from its seed "
                             f"{cfg.seed}")
    workdirs = [cfg.workdir for cfg in configs]
    if len(set(workdirs)) != len(workdirs):
        raise ValueError(f"packed members need a workdir each, got {workdirs}")


def _difference(a: TrainConfig, b: TrainConfig) -> str:
    flat_a, flat_b = flat_fields(dataclasses.asdict(a)), flat_fields(dataclasses.asdict(b))
    switches = dict(optim.structure(a.optim)), dict(optim.structure(b.optim))
    for name in flat_a:
        field = name.rpartition(".")[2]
        if flat_a[name] == flat_b[name] or field in PER_MEMBER:
            continue
        if field in optim.HYPERPARAMETERS:
            if switches[0].get(field) != switches[1].get(field):
                return (f"{name} is {flat_a[name]!r} and {flat_b[name]!r} (zero and non-zero "
                        f"values make different optimizers)")
            continue
        return f"{name} is {flat_a[name]!r} and {flat_b[name]!r} (it changes the program)"
    return "they differ"


def flat_fields(tree: dict, prefix: str = "") -> dict:
    """A config's asdict() as {dotted field name: value} (model options kept whole)."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "options":
            out.update(flat_fields(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def hyperparameter_values(configs: Sequence[TrainConfig]) -> dict[str, jax.Array]:
    """Each of `optim.HYPERPARAMETERS` as a float32 [K] array, member by member."""
    return {name: jnp.asarray([getattr(cfg.optim, name) for cfg in configs], jnp.float32)
            for name in optim.HYPERPARAMETERS}


def stack(trees: Sequence[Any]) -> Any:
    """Member trees stacked on a new leading axis."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree: Any, k: int) -> Any:
    """Member k of a stacked tree."""
    return jax.tree.map(lambda x: x[k], tree)


def train_step(state: train.TrainState, batch: dict, values: dict, alive: jax.Array, *,
               cfg: TrainConfig, steps_per_epoch: int, total_steps: int
               ) -> tuple[train.TrainState, dict, jax.Array]:
    """`train.train_step` of every member: state and batch [K, ...], `values` the members'
    hyperparameters ([K] each), `alive` [K] bool. A member that is not alive keeps its state; one
    whose update is non-finite under nan_policy "stop" keeps its state from then on. Returns the
    states, the metrics ([K] each) and which members are alive after the step."""
    skip_nonfinite = cfg.nan_policy == "skip"

    def step(state, batch, values, alive):
        lr_fn = optim.learning_rate_schedule(cfg.optim, steps_per_epoch, cfg.data.batch_size,
                                             total_steps, base=values["learning_rate"])
        tx = optim.create_optimizer(cfg.optim, lr_fn, steps_per_epoch, values)
        new, metrics = train.train_step(state, batch, values["label_smoothing"],
                                        cfg.optim.grad_accum_steps, tx=tx, lr_fn=lr_fn)
        alive = alive & ((metrics["nonfinite"] == 0) | skip_nonfinite)
        new = jax.tree.map(lambda n, o: jnp.where(alive, n, o), new, state)
        return new, metrics, alive

    return jax.vmap(step)(state, batch, values, alive)


def eval_step(state: train.TrainState, batch: dict, **kwargs) -> dict:
    """`train.eval_step` of every member on one shared batch: sums [K]."""
    return jax.vmap(lambda s: train.eval_step(s, batch, **kwargs))(state)
