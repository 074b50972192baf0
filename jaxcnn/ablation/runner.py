"""Training a sweep's runs and recording how each ended: what `experiments.ablate`'s jobs run, and
what `run_sweep` runs from Python (a notebook, a script) in this process.

    sweep, summaries, table = ablation.run_sweep(
        "runs/lr_sweep", base_config, {"optim.learning_rate": [0.1, 0.05], "model.options.norm":
        ["batch", "lrn"]}, seeds=3, pack=6)

An axis is a field of the base `TrainConfig` by its dotted path (`optim.learning_rate`,
`data.augment`, `epochs`, or a model option, `model.options.norm`) and its values. The folder
keeps the sweep's definition (`definition.SWEEP_FILE`), each run's record and the report, exactly
as `experiments.ablate` writes them; calling again trains only what is pending (or, with
retry_failed, what failed), and may add seeds or values at the end of an axis.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
from absl import logging

from jaxcnn import checkpoint, models, packing, trainer
from jaxcnn.ablation import definition, records, report
from jaxcnn.ablation.result import write_result
from jaxcnn.ablation.spec import Run, Sweep
from jaxcnn.ablation.stats import ConfigSummary
from jaxcnn.config import TrainConfig

STOPPED = "stopped"     # an Outcome's status besides records.FINISHED and records.FAILED


@dataclasses.dataclass(frozen=True)
class Outcome:
    run: Run
    status: str             # records.FINISHED, records.FAILED or STOPPED (checkpointed)
    said: str               # "test top-1 74.31%", "failed: <reason>", "stopped at step 800"
    error: BaseException | None = None   # an exception that ended the whole job


def train_runs(sweep_dir: str, sweep: Sweep, runs: Sequence[Run], configs: Sequence[TrainConfig],
               should_stop: Callable[[], bool] = lambda: False, baseline: str | None = None
               ) -> list[Outcome]:
    """Trains `runs` (their `configs`; several: packed as one program, `jaxcnn.packing`) and
    records each one's result or failure; an exception in training is every run's failure (the
    Outcome carries it). Finished runs are skipped. When no run of the sweep is pending any more,
    the report is rewritten."""
    todo = [(run, cfg) for run, cfg in zip(runs, configs)
            if records.read(sweep_dir, run).status != records.FINISHED]
    if not todo:
        return []
    writes = jax.process_index() == 0
    for run, cfg in todo:
        if writes:
            records.clear_failure(sweep_dir, run)
        logging.info("run %d of %d: %s, seed %d, in %s", run.index, len(sweep.runs()), run.config,
                     run.seed, cfg.workdir)
    try:
        members = trainer.train_members([cfg for _, cfg in todo], should_stop)
    except Exception as e:   # whatever went wrong is these runs' failure; other jobs go on
        reason = one_line(e)
        notes = [record_failure(sweep_dir, run, reason) if writes else "" for run, _ in todo]
        return [Outcome(run, records.FAILED, f"failed: {reason}{note}", e)
                for (run, _), note in zip(todo, notes)]
    outcomes = []
    for (run, _), member in zip(todo, members):
        if member.result.get("preempted"):
            outcomes.append(Outcome(run, STOPPED, f"stopped at step {member.result['step']} "
                                                  f"with a checkpoint"))
        elif member.failure:
            note = record_failure(sweep_dir, run, member.failure) if writes else ""
            outcomes.append(Outcome(run, records.FAILED, f"failed: {member.failure}{note}"))
        else:
            others = tuple(other.index for other, _ in todo if other != run)
            result = (write_result(run, member.cfg, member.state, member.result, others)
                      if writes else member.result)
            outcomes.append(Outcome(run, records.FINISHED,
                                    f"test top-1 {100 * result['top1']:.2f}%"))
    if writes and all(r.status != records.PENDING
                      for r in records.read_records(sweep_dir, sweep)):
        report.write(sweep_dir, sweep, baseline)
    return outcomes


def one_line(error: BaseException) -> str:
    """A failure's reason: the message of an error the user can act on, else its type too."""
    text = str(error).strip().partition("\n")[0]
    return text if isinstance(error, trainer.USER_ERRORS) else f"{type(error).__name__}: {text}"


def record_failure(sweep_dir: str, run: Run, reason: str) -> str:
    """Writes the run's failed.json. Returns "", or where it cannot be written (a full disk, an
    unwritable folder) a note saying so, to follow the run's reason in the line that reports it:
    the OSError alone would hide why the run failed."""
    try:
        records.write_failure(sweep_dir, run, reason)
    except OSError as e:
        return f" (and its {records.FAILED_FILE} could not be written: {e})"
    return ""


def jobs(runs: Iterable[Run], configs: dict[int, TrainConfig], size: int
         ) -> list[tuple[Run, ...]]:
    """The runs as jobs of at most `size` runs each: runs that `jaxcnn.packing` can train as one
    program and whose checkpoints (if any) are at one step share a job (configs: by run index)."""
    groups: dict = {}
    for run in runs:
        cfg = configs[run.index]
        key = (packing.key(cfg), checkpoint.saved_steps(os.path.join(cfg.workdir, "checkpoints")))
        groups.setdefault(key, []).append(run)
    return [tuple(group[i:i + size]) for group in groups.values()
            for i in range(0, len(group), size)]


def check_models(configs: Iterable[tuple[str, TrainConfig]]) -> None:
    """Builds every (name, config)'s model (shapes only), so that a bad value stops a sweep with
    one line naming its configuration before anything trains."""
    for name, cfg in configs:
        try:
            model = models.create(cfg.model.name, 10, **cfg.model.options)
            image = jnp.zeros((1, cfg.data.image_size, cfg.data.image_size, cfg.data.channels))
            jax.eval_shape(model.init, jax.random.key(0), image)
        except (ValueError, TypeError, IndexError) as e:
            raise ValueError(f"configuration {name}: {e}") from None


def with_values(cfg: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """`cfg` with fields set by dotted path: {"optim.learning_rate": 0.05, "model.options.norm":
    "lrn"}."""
    for path, value in values.items():
        cfg = _set(cfg, path.split("."), value, path)
    return cfg


def _set(obj, names: list[str], value, path: str):
    name, *rest = names
    if isinstance(obj, dict) and not rest:
        return {**obj, name: value}
    fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
    if name not in fields:
        raise ValueError(f"axis {path}: {type(obj).__name__} has no field {name!r}; its fields: "
                         f"{', '.join(sorted(fields)) or 'none'}")
    return dataclasses.replace(obj, **{name: _set(getattr(obj, name), rest, value, path)
                                       if rest else value})


def run_config(base: TrainConfig, run: Run, values: dict[str, dict[str, Any]],
               sweep_dir: str) -> TrainConfig:
    """The run's configuration: the base with its axis values (`values`: per axis, each value's
    name to the value), its seed (initialisation and data) and its folder."""
    cfg = with_values(base, {name: values[name][text] for name, text in run.overrides})
    return dataclasses.replace(cfg, seed=run.seed, data=dataclasses.replace(cfg.data, seed=run.seed),
                               workdir=os.path.join(sweep_dir, run.directory))


def run_sweep(sweep_dir: str, base: TrainConfig, axes: dict[str, Sequence[Any]], seeds: int = 1,
              *, combine: str = "grid", pack: int = 1, baseline: str | None = None,
              retry_failed: bool = False, should_stop: Callable[[], bool] = lambda: False
              ) -> tuple[Sweep, list[ConfigSummary], str]:
    """Runs the sweep in this process, one job after another (`pack` > 1: up to `pack` packable
    runs per job, as one program), writes its report and returns the sweep, the configurations'
    summaries and summary.md's text. See the module's docstring."""
    sweep_dir = os.path.abspath(sweep_dir)
    sweep, values = definition.adopt(sweep_dir, base, axes, seeds, combine)
    sweep.baseline(baseline)
    configs = {run.index: run_config(base, run, values, sweep_dir) for run in sweep.runs()}
    check_models((run.config, configs[run.index]) for run in sweep.runs()[:len(sweep.configs())])
    wanted = records.FAILED if retry_failed else records.PENDING
    todo = [r.run for r in records.read_records(sweep_dir, sweep) if r.status == wanted]
    for job in jobs(todo, configs, pack):
        outcomes = train_runs(sweep_dir, sweep, job, [configs[r.index] for r in job], should_stop,
                              baseline)
        for outcome in outcomes:
            logging.info("run %d (%s): %s", outcome.run.index, outcome.run.directory, outcome.said)
        if any(o.status == STOPPED for o in outcomes):
            break
    return (sweep, *report.write(sweep_dir, sweep, baseline))
