"""runs.load: a workdir opened in one call, finished or still training, old checkpoints included,
a damaged newest checkpoint skipped."""
import dataclasses
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from jaxcnn import checkpoint, predict, runs, trainer
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from jaxcnn.cpu.policy import Compute
from jaxcnn.metrics_file import read_metrics
from jaxcnn.models.lenet import LeNet5

# A skipped damaged checkpoint leaves no "Event loop is closed" traceback behind (checkpoint.reading).
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(config, final state) of 8 steps of LeNet-5 with batch norm on the digits."""
    cfg = TrainConfig(model=ModelConfig("lenet5", {"norm": "batch", "dropout": 0.25}),
                      data=DataConfig(dataset="digits", batch_size=32, eval_batch_size=64),
                      optim=OptimConfig(optimizer="nesterov", learning_rate=0.05,
                                        boundaries_epochs=(0.1, 0.2), schedule="piecewise"),
                      workdir=str(tmp_path_factory.mktemp("run")), steps=8, log_every=4,
                      eval_every_epochs=0.1, plot=False)
    state, _ = trainer.train_and_evaluate(cfg)
    return cfg, state


def test_a_finished_run_comes_back_with_its_model_variables_config_and_rows(trained):
    cfg, state = trained
    run = runs.load(cfg.workdir)
    assert run.step == 8 and run.workdir == cfg.workdir
    assert isinstance(run.model, LeNet5) and (run.model.norm, run.model.dropout) == ("batch", 0.25)
    assert run.config == cfg                       # every field, tuples included
    assert run.input_shape == (32, 32, 1) and run.class_names == [str(d) for d in range(10)]
    assert run.rows == read_metrics(cfg.workdir)
    # 46 steps per epoch: train rows every 4 steps and before each evaluation (step 5, the last).
    assert [(r["split"], r["step"]) for r in run.rows] == [
        ("train", 4), ("train", 5), ("test", 5), ("train", 8), ("test", 8)]
    jax.tree.map(np.testing.assert_array_equal, run.variables,
                 {"params": state.params, "batch_stats": state.batch_stats})


def test_a_run_still_training_shows_its_rows_so_far(trained, tmp_path):
    """A row being written (no newline yet) is left out; a run without a checkpoint yet says so."""
    cfg, _ = trained
    shutil.copytree(cfg.workdir, tmp_path / "copy")
    with open(tmp_path / "copy/metrics.jsonl", "a") as f:
        f.write('{"split": "train", "step": 1')
    assert runs.load(str(tmp_path / "copy")).rows == read_metrics(cfg.workdir)
    (tmp_path / "starting").mkdir()
    shutil.copy(tmp_path / "copy/metrics.jsonl", tmp_path / "starting")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in '.*starting/checkpoints' yet"):
        runs.load(str(tmp_path / "starting"))
    with pytest.raises(FileNotFoundError, match="no workdir"):
        runs.load(str(tmp_path / "missing"))


def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before_and_left_in_place(
        trained, tmp_path, caplog):
    cfg, _ = trained
    for copy in ("damaged", "without_8"):
        shutil.copytree(cfg.workdir, tmp_path / copy)
    checkpoints = tmp_path / "damaged/checkpoints"
    assert sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit()) == [5, 8]
    (checkpoints / "8/state/manifest.ocdbt").write_bytes(b"not a manifest")
    shutil.rmtree(tmp_path / "without_8/checkpoints/8")
    with caplog.at_level(logging.WARNING):
        run = runs.load(str(tmp_path / "damaged"))
    assert run.step == 5
    jax.tree.map(np.testing.assert_array_equal, run.variables,
                 runs.load(str(tmp_path / "without_8")).variables)
    assert (f"checkpoint step 8 is unreadable (state: " in caplog.text
            and f"): left in {checkpoints / '8'}; trying the one before" in caplog.text)
    assert (checkpoints / "8/state/manifest.ocdbt").read_bytes() == b"not a manifest"   # as found
    (checkpoints / "5/state/manifest.ocdbt").write_bytes(b"not a manifest")
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"no readable checkpoint in .*damaged/checkpoints \(steps 8, 5 are"):
        runs.load(str(tmp_path / "damaged"))


def test_a_checkpoint_without_a_stored_config_gets_its_model_and_data_from_the_meta(trained,
                                                                                     tmp_path):
    cfg, _ = trained
    old = tmp_path / "old"
    shutil.copytree(cfg.workdir, old)
    path = old / "checkpoints/8/meta/metadata"
    meta = json.loads(path.read_text())
    del meta["config"]
    path.write_text(json.dumps(meta))
    run = runs.load(str(old))
    assert run.config == TrainConfig(model=cfg.model, workdir=str(old), data=DataConfig(
        dataset="digits", image_size=32, channels=1, augment="none"))


def test_a_checkpoint_with_compute_options_among_its_model_options_loads_predicts_and_resumes(
        trained, tmp_path):
    """Written before 2026-12, a checkpoint's meta lists the compute options among the model
    options, its config's too (and has no `compute`): they move to the config's `compute`."""
    cfg, _ = trained
    old = tmp_path / "old"
    shutil.copytree(cfg.workdir, old)
    path = old / "checkpoints/8/meta/metadata"
    meta = json.loads(path.read_text())
    compute = {"cpu_kernels": "off", "conv_impl": "xla"}
    meta["model_options"].update(compute)
    meta["config"]["model"]["options"].update(compute)
    del meta["config"]["compute"]
    path.write_text(json.dumps(meta))
    run, new = runs.load(str(old)), runs.load(cfg.workdir)
    assert run.model == new.model and run.step == 8
    assert run.config == dataclasses.replace(cfg, workdir=str(old), compute=Compute(**compute))
    jax.tree.map(np.testing.assert_array_equal, run.variables, new.variables)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1), np.uint8)
    same_compute = dataclasses.replace(new, config=dataclasses.replace(new.config,
                                                                       compute=run.config.compute))
    np.testing.assert_array_equal(predict.Predictor(run).predict(images),    # one program
                                  predict.Predictor(same_compute).predict(images))
    _, result = trainer.train_and_evaluate(dataclasses.replace(cfg, workdir=str(old)))
    assert result["step"] == 8          # resumed from it (the model compares equal) and evaluated


def test_configs_round_trip_through_json():
    cfg = TrainConfig(model=ModelConfig("vgg16", {"factorize": [2, 3], "norm": "batch"}),
                      data=DataConfig(dataset="folder:/data", image_size=224, channels=3),
                      optim=OptimConfig(schedule="piecewise", boundaries_epochs=(30.0, 60.0)),
                      epochs=90, dense_eval_size=256)
    back = runs.from_dict(TrainConfig, json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and back.optim.boundaries_epochs == (30.0, 60.0)
    assert back.model.options == {"factorize": [2, 3], "norm": "batch"}   # options as given
    assert runs.from_dict(DataConfig, {"image_size": 64}) == DataConfig(image_size=64)
