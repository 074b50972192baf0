"""The flags of a sweep and their translation into runs: which flags may be an axis, each run's
`TrainConfig` (the base flags with the run's values and seed parsed over them), the check of every
configuration before anything trains, and the resolved flagfile a job reads back.

A sweep file is a flagfile (`--sweep_file` is another name for `--flagfile`): base flags, a
`--flagfile=` of the base configuration, `--axis=`, `--combine=` and `--seeds=` lines.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from absl.testing import flagsaver

from experiments import cli, model_flags, train_flags
from jaxcnn.ablation import Axis, Run, Sweep, runner
from jaxcnn.config import TrainConfig

flags.DEFINE_multi_string("axis", [], "An axis of the sweep: FLAG=V1,V2,... (any training or model "
                          "flag; separate values by ';' when they contain commas). Repeatable.")
flags.DEFINE_enum("combine", "grid", ["grid", "zip"], "Axes as a grid (every combination) or zipped.")
flags.DEFINE_string("baseline", None, "The configuration others are tested against, e.g. "
                    "factorize=2 (default: the first value of every axis).")
FLAGS = flags.FLAGS

NOT_AXES = {"workdir": "each run gets its own directory",
            "seed": "use --seeds=N for seeds 0..N-1", "seeds": "it gives the seeds of every run"}
SWEEP_FLAGS = ("axis", "combine", "seeds", "baseline")


def axis_flags() -> set[str]:
    """Every training and model flag."""
    return {f.name for module in (train_flags, model_flags)
            for f in FLAGS.get_flags_for_module(module.__name__)} - set(NOT_AXES)


def sweep_from_flags() -> Sweep:
    if model_flags.was_set("seed"):
        raise ValueError("--seed does not apply to a sweep: --seeds=N trains seeds 0..N-1")
    axes = tuple(Axis.parse(text) for text in FLAGS.axis)
    for axis in axes:
        if axis.name in NOT_AXES:
            raise ValueError(f"--axis={axis.name}=...: {axis.name} cannot be an axis "
                             f"({NOT_AXES[axis.name]})")
        if axis.name not in axis_flags():
            raise ValueError(f"--axis={axis.name}=...: no training or model flag is called "
                             f"{axis.name!r} (--helpshort lists them)")
    return Sweep(axes, FLAGS.combine, FLAGS.seeds)


def run_config(run: Run, sweep_dir: str) -> TrainConfig:
    """The base flags with the run's values, seed and directory parsed over them."""
    values = {**dict(run.overrides), "seed": str(run.seed),
              "workdir": os.path.join(sweep_dir, run.directory)}
    try:
        with flagsaver.as_parsed(**values):
            return train_flags.config_from_flags()
    except (flags.Error, ValueError) as e:
        raise ValueError(f"configuration {run.config}: {e}") from None


def check_configs(sweep: Sweep, sweep_dir: str) -> None:
    """Every configuration's TrainConfig and model (shapes only): a bad value or contradicting
    flags stop the sweep with one line before anything trains."""
    first_seed = sweep.runs()[:len(sweep.configs())]    # seed-major
    runner.check_models((run.config, run_config(run, sweep_dir)) for run in first_seed)


def axis_text(axis: Axis) -> str:
    """The value of the --axis flag that gives `axis`."""
    return f"{axis.name}={(';' if any(',' in v for v in axis.values) else ',').join(axis.values)}"


def resolved_flagfile(sweep: Sweep, sweep_dir: str) -> str:
    """A flagfile that recreates this sweep without the files it was read from: every training,
    model and multi-host flag that was set, the axes, and the absolute sweep directory."""
    modules = (train_flags, model_flags, cli)
    lines = [f"# written by experiments.ablate from: {' '.join(sys.argv[1:])}"]
    for module in modules:
        for flag in FLAGS.get_flags_for_module(module.__name__):
            if not flag.using_default_value and flag.name not in ("workdir", "seed"):
                lines.append(flag.serialize())
    lines += [f"--axis={axis_text(a)}" for a in sweep.axes]
    lines += [f"--combine={sweep.mode}", f"--seeds={sweep.seeds}",
              f"--workdir={os.path.abspath(sweep_dir)}"]
    if FLAGS.baseline:
        lines.append(f"--baseline={FLAGS.baseline}")
    return "\n".join(lines) + "\n"
