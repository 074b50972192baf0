"""Ablation sweeps: a tiny conv_factorization sweep of LeNet-5 on the digits, its results files,
resuming an unfinished run and skipping finished ones."""
import csv
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp

from jaxcnn import ablation, models, trainer
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 8


def base_config(steps=STEPS):
    return TrainConfig(
        model=ModelConfig("lenet5"),
        data=DataConfig(dataset="digits", image_size=32, channels=1, batch_size=32,
                        eval_batch_size=64),
        optim=OptimConfig(optimizer="adam", learning_rate=1e-3), steps=steps, log_every=2,
        eval_every_epochs=0.1, plot=False)


def test_sweep_resumes_an_unfinished_run_writes_results_and_skips_finished_runs(tmp_path):
    sweep = ablation.sweep("conv_factorization")
    # An interrupted sweep: the second run stopped after 4 of its 8 steps, no result recorded.
    factorized = ablation.run_config(base_config(steps=4), sweep.runs[1], str(tmp_path))
    trainer.train_and_evaluate(factorized)

    results = ablation.run_sweep("conv_factorization", base_config(), str(tmp_path))

    train_steps = [json.loads(line)["step"] for line in open(tmp_path / "factorized/metrics.jsonl")
                   if json.loads(line)["split"] == "train"]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == STEPS   # not restarted
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == [r["run"] for r in results] == ["full", "factorized"]
    assert list(rows[0]) == list(ablation.COLUMNS)
    full, fact = results
    assert fact["options"] == '{"factorize": "2"}' and full["steps"] == fact["steps"] == STEPS
    # conv2 (5x5, 6->16) factorised as 5x1 (6->16) then 1x5 (16->16): 1,760 weights and 32 biases
    # instead of 2,400 and 16.
    assert full["params"] - fact["params"] == (2400 + 16) - (1760 + 32)
    assert fact["flops_per_image"] < full["flops_per_image"]
    assert all(0 <= r["top1"] <= r["top5"] <= 1 and r["seconds_per_epoch"] > 0 for r in results)
    table = (tmp_path / "results.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| full | lenet5 |")
    assert (tmp_path / "results.png").stat().st_size > 10_000

    # The same sweep from the command line: both runs are finished, nothing is trained or rewritten.
    written = {p: os.stat(tmp_path / p).st_mtime_ns for p in
               ("results.csv", "full/result.json", "factorized/checkpoints")}
    out = subprocess.run(
        [sys.executable, "-m", "experiments.ablate", "--sweep=conv_factorization", "--model=lenet5",
         "--batch_size=32", "--eval_batch_size=64", f"--steps={STEPS}", "--log_every=2",
         "--eval_every_epochs=0.1", f"--workdir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, check=True, timeout=300)
    assert out.stderr.count("skipping finished run") == 2 and "run full:" not in out.stderr
    assert "| factorized | lenet5 |" in out.stdout
    assert {p: os.stat(tmp_path / p).st_mtime_ns for p in written} == written


def test_every_run_of_every_sweep_builds_its_model():
    for sweep in ablation.SWEEPS.values():
        for run in sweep.runs:
            cfg = ablation.run_config(TrainConfig(model=ModelConfig(sweep.model)), run, "w")
            model = models.create(cfg.model.name, 10, **cfg.model.options)
            image = jnp.zeros((1, *models.input_shape(cfg.model.name)))
            jax.eval_shape(model.init, jax.random.key(0), image)   # checks the layer selections
            assert cfg.workdir == os.path.join("w", run.name)
