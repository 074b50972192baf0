"""Sweeps from Python (`jaxcnn.ablation.run_sweep`): axes over any field of a TrainConfig (an
optimizer value, a model option), packed jobs, the definition kept in the folder (only seeds and
values at the end of an axis may be added), records, report, and retrying failed runs only."""
import csv
import dataclasses
import json

import pytest

from jaxcnn import ablation, runs, trainer
from jaxcnn.ablation import definition, records
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig

BASE = TrainConfig(
    model=ModelConfig("lenet5"),
    data=DataConfig(dataset="digits", image_size=32, channels=1, batch_size=32),
    optim=OptimConfig(optimizer="sgd", learning_rate=0.05), steps=3, log_every=1, plot=False)
AXES = {"optim.learning_rate": [0.05, 0.1], "model.options.norm": ["none", "batch"]}


@pytest.fixture
def trained(monkeypatch):
    """The workdirs of every job `trainer.train_members` trains, one list per job."""
    jobs, train_members = [], trainer.train_members

    def spy(configs, *args):
        jobs.append([cfg.workdir for cfg in configs])
        return train_members(configs, *args)
    monkeypatch.setattr(trainer, "train_members", spy)
    return jobs


def test_a_sweep_over_an_optimizer_value_and_a_model_option_from_python(tmp_path, trained):
    sweep_dir = tmp_path / "sweep"
    _, summaries, table = ablation.run_sweep(str(sweep_dir), BASE, AXES, seeds=1, pack=2)
    names = ["optim.learning_rate=0.05,model.options.norm=none",
             "optim.learning_rate=0.05,model.options.norm=batch",
             "optim.learning_rate=0.1,model.options.norm=none",
             "optim.learning_rate=0.1,model.options.norm=batch"]
    assert [s.config for s in summaries] == names and all(name in table for name in names)
    # Learning rates pack, norms do not: two jobs of two runs each.
    assert sorted(map(sorted, trained)) == sorted(
        [str(sweep_dir / names[i] / "seed=0") for i in pair] for pair in ((0, 2), (1, 3)))
    for name in names:
        run = runs.load(str(sweep_dir / name / "seed=0"))
        lr, norm = (part.split("=")[1] for part in name.split(","))
        assert run.config.optim.learning_rate == float(lr)
        assert run.config.model.options == {"norm": norm} and run.config.seed == 0
        result = json.loads((sweep_dir / name / "seed=0" / records.RESULT_FILE).read_text())
        assert result["pack_size"] == 2 and result["steps"] == 3
    with open(sweep_dir / "summary.csv") as f:
        assert [row["config"] for row in csv.DictReader(f)] == names

    trained.clear()   # called again: nothing pending, nothing trained, the same report
    _, again, _ = ablation.run_sweep(str(sweep_dir), BASE, AXES, seeds=1, pack=2)
    assert trained == [] and [s.metrics["top1"].mean for s in again] == [
        s.metrics["top1"].mean for s in summaries]

    more = {**AXES, "optim.learning_rate": [0.05, 0.1, 0.2]}     # a value and a seed added
    sweep, summaries, _ = ablation.run_sweep(str(sweep_dir), BASE, more, seeds=2, pack=4)
    assert len(sweep.runs()) == 12
    new = sorted(w for job in trained for w in job)
    assert len(new) == 12 - 4 and not any(w.endswith("seed=0") and "0.2" not in w for w in new)
    assert [s.counts[records.FINISHED] for s in summaries] == [2] * 6


@pytest.mark.parametrize("change, expected", [
    (dict(base=dataclasses.replace(BASE, steps=4)), "another base configuration (differs in steps)"),
    (dict(axes={"optim.learning_rate": [0.1, 0.05], "model.options.norm": ["none", "batch"]}),
     "values can only be added after these"),
    (dict(axes={"optim.learning_rate": [0.05, 0.1]}), "axes ['optim.learning_rate'] (the sweep has"),
    (dict(seeds=1), "seeds can only be added"),
])
def test_a_folder_keeps_its_sweep(tmp_path, trained, change, expected):
    sweep_dir = str(tmp_path / "sweep")
    stored = dict(base=BASE, axes=AXES, seeds=2)
    definition.adopt(sweep_dir, stored["base"], stored["axes"], stored["seeds"])
    given = {**stored, **change}
    with pytest.raises(ValueError, match="holds another sweep") as error:
        ablation.run_sweep(sweep_dir, given["base"], given["axes"], given["seeds"])
    assert expected in str(error.value) and trained == []


def test_bad_axes_stop_before_anything_trains(tmp_path, trained):
    with pytest.raises(ValueError, match="axis optim.lr: OptimConfig has no field 'lr'"):
        ablation.run_sweep(str(tmp_path / "a"), BASE, {"optim.lr": [0.1]})
    with pytest.raises(ValueError, match="configuration model.options.norm=layer: unknown norm"):
        ablation.run_sweep(str(tmp_path / "b"), BASE, {"model.options.norm": ["none", "layer"]})
    assert trained == []


def test_a_failed_run_is_recorded_and_retried_alone(tmp_path, trained):
    sweep_dir = tmp_path / "sweep"
    axes = {"optim.learning_rate": [0.05, 1e30]}     # the second diverges: nan_policy "stop"
    _, summaries, _ = ablation.run_sweep(str(sweep_dir), BASE, axes)
    failed = sweep_dir / "optim.learning_rate=1e+30" / "seed=0"
    reason = json.loads((failed / records.FAILED_FILE).read_text())["reason"]
    assert "non-finite loss or gradient" in reason
    assert [s.counts[records.FAILED] for s in summaries] == [0, 1]
    trained.clear()
    ablation.run_sweep(str(sweep_dir), BASE, axes, retry_failed=True)
    assert trained == [[str(failed)]]
