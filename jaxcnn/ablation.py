"""Ablation sweeps: named sets of trainings that differ in one model switch, and their results.

    results = ablation.run_sweep("conv_factorization", base_config, "runs/ablate")

Each run is a full `trainer.train_and_evaluate` of the base config with the run's model changes, in
`workdir/<run name>`. A run is finished once its `result.json` is written: running a sweep again
skips finished runs and resumes an unfinished one from its latest checkpoint. After every run the
sweep's results are rewritten from the finished runs: `results.csv`, `results.md` (a markdown
table) and `results.png` (test accuracy per epoch, final accuracy, time per epoch).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import statistics
from typing import Any, Callable, Mapping

import jax
from absl import logging

from jaxcnn import benchmark, input_pipeline, models, trainer
from jaxcnn.config import ModelConfig, TrainConfig
from jaxcnn.metric_writers import read_metrics
from jaxcnn.plot import plot_sweep


@dataclasses.dataclass(frozen=True)
class Run:
    """One training of a sweep: the base model (or `model`) with `options` merged over its options."""
    name: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model: str | None = None


@dataclasses.dataclass(frozen=True)
class Sweep:
    model: str              # the base model when the caller names none
    runs: tuple[Run, ...]


# The conv-tricks article factorises / branches the second conv of its CIFAR net: the first sees
# only the 3 input channels, where a k×1 conv to full width then 1×k costs more than the k×k conv.
SWEEPS: dict[str, Sweep] = {
    "conv_factorization": Sweep("convnet_cifar", (Run("full", {"factorize": "none"}),
                                                  Run("factorized", {"factorize": "2"}))),
    "multi_branch": Sweep("convnet_cifar", (Run("single_branch", {"multi_branch": "none"}),
                                            Run("multi_branch", {"multi_branch": "2"}))),
    "normalization": Sweep("convnet_cifar", (Run("none", {"norm": "none"}),
                                             Run("batch", {"norm": "batch"}),
                                             Run("lrn", {"norm": "lrn"}))),
    "vgg_depth": Sweep("vgg11", tuple(Run(name, model=name)
                                      for name in ("vgg11", "vgg13", "vgg16", "vgg19"))),
}
RESULT_FILE = "result.json"
COLUMNS = ("run", "model", "options", "top1", "top5", "loss", "params", "flops_per_image",
           "seconds_per_epoch", "epochs", "steps")


def sweep(name: str) -> Sweep:
    if name not in SWEEPS:
        raise ValueError(f"unknown sweep {name!r}; valid sweeps: {', '.join(SWEEPS)}")
    return SWEEPS[name]


def run_config(base: TrainConfig, run: Run, workdir: str) -> TrainConfig:
    model = ModelConfig(run.model or base.model.name, {**base.model.options, **run.options})
    return dataclasses.replace(base, model=model, workdir=os.path.join(workdir, run.name))


def run_sweep(name: str, base: TrainConfig, workdir: str,
              should_stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Trains every run of sweep `name` not yet finished in `workdir`; returns the finished runs'
    results in sweep order (fewer than the sweep's runs when `should_stop` ended it early)."""
    runs = sweep(name).runs
    for run in runs:
        cfg = run_config(base, run, workdir)
        result_path = os.path.join(cfg.workdir, RESULT_FILE)
        if os.path.exists(result_path):
            logging.info("skipping finished run %s (delete %s to train it again)", run.name,
                         result_path)
            continue
        if should_stop():
            break
        logging.info("run %s: %s %s", run.name, cfg.model.name, cfg.model.options)
        state, metrics = trainer.train_and_evaluate(cfg, should_stop)
        if metrics.get("preempted"):
            break
        if jax.process_index() == 0:
            with open(result_path, "w") as f:
                json.dump(run_result(run, cfg, state, metrics), f, indent=1)
            write_results(workdir, runs)
    return finished_results(workdir, runs)


def run_result(run: Run, cfg: TrainConfig, state, metrics: dict) -> dict:
    """One row of the results table: test metrics, size, cost and speed of a finished run."""
    num_classes = input_pipeline.dataset_info(cfg.data).num_classes
    model = models.create(cfg.model.name, num_classes, **cfg.model.options)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    rows = read_metrics(cfg.workdir)
    return {"run": run.name, "model": cfg.model.name,
            "options": json.dumps(trainer.json_safe(cfg.model.options)),
            "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
            "params": sum(p.size for p in jax.tree.leaves(state.params)),
            "flops_per_image": 2 * benchmark.analytic_macs(model, image_shape),
            "seconds_per_epoch": seconds_per_epoch(rows, cfg.data.batch_size),
            "epochs": max(r["epoch"] for r in rows if r["split"] == "test"),
            "steps": metrics["step"]}


def seconds_per_epoch(rows: list[dict], batch_size: int) -> float:
    """Training seconds per epoch at the median logged throughput: compilation, evaluation and
    checkpointing are left out, and a resumed run's rows count like the others."""
    train = [r for r in rows if r["split"] == "train"]
    steps_per_epoch = train[-1]["step"] / train[-1]["epoch"]
    return steps_per_epoch * batch_size / statistics.median(r["images_per_s"] for r in train)


def finished_results(workdir: str, runs: tuple[Run, ...]) -> list[dict]:
    results = []
    for run in runs:
        path = os.path.join(workdir, run.name, RESULT_FILE)
        if os.path.exists(path):
            with open(path) as f:
                results.append(json.load(f))
    return results


def write_results(workdir: str, runs: tuple[Run, ...]) -> None:
    """results.csv, results.md and results.png of the finished runs of a sweep."""
    results = finished_results(workdir, runs)
    with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(results)
    with open(os.path.join(workdir, "results.md"), "w") as f:
        f.write(markdown_table(results))
    plot_sweep(workdir, results)


def markdown_table(results: list[dict]) -> str:
    lines = ["| run | model | test top-1 | test top-5 | params | MFLOPs / image | s / epoch | epochs |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| {r['run']} | {r['model']} | {100 * r['top1']:.2f}% | {100 * r['top5']:.2f}% | "
              f"{r['params']:,} | {r['flops_per_image'] / 1e6:,.2f} | {r['seconds_per_epoch']:.1f} | "
              f"{r['epochs']:g} |" for r in results]
    return "\n".join(lines) + "\n"
