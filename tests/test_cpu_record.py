"""The kernels a program runs, recorded (`jaxcnn.cpu.record`): the `cpu_kernels` policy, per
convolution and dense layer the form "auto" resolves to, oneDNN's status, and the record in every
checkpoint's metadata and sweep result."""
import dataclasses
import os

import orbax.checkpoint as ocp

from jaxcnn import checkpoint, models, trainer
from jaxcnn.config import DataConfig, TrainConfig
from jaxcnn.cpu import record
from jaxcnn.cpu.policy import Compute


def test_each_convolution_layer_is_recorded_with_the_form_it_runs():
    # The suite's 8 fake devices keep "auto" off oneDNN: the forms of several devices.
    rec = record.record(models.create("lenet5", 10), (32, 32, 1))
    assert rec["platform"] == "cpu" and rec["devices"] == 8
    assert rec["cpu_kernels"] == "auto" and rec["cpu_forms"] is True
    assert rec["convolutions"] == {"conv1/conv": "single_channel", "conv2/conv": "col2im_grad",
                                   "conv3/conv": "im2col"}
    forced = record.record(models.create("lenet5", 10), (32, 32, 1), Compute(conv_impl="xla"))
    assert forced["conv_impl"] == "xla" and set(forced["convolutions"].values()) == {"xla"}
    assert rec["onednn"] == record.onednn_status()
    assert rec["onednn"].startswith(("built (float32", "unavailable ("))
    off = record.record(models.create("lenet5", 10), (32, 32, 1), Compute(cpu_kernels="off"))
    assert off["cpu_kernels"] == "off" and off["cpu_forms"] is False
    assert off["onednn"] == "not used (cpu_kernels=off)"
    assert set(off["convolutions"].values()) == {"xla"} and len(off["convolutions"]) == 3


def test_each_dense_layer_is_recorded_with_the_form_it_runs():
    # The blocked input gradient from 2048 kernel rows in whole blocks of 256: AlexNet's three
    # classifier layers (9216, 4096, 4096 rows), neither of LeNet-5's (120 and 84 rows).
    assert record.record(models.create("lenet5", 10), (32, 32, 1))["dense"] == {
        "fc1": "xla", "fc2": "xla"}
    assert record.record(models.create("alexnet", 10), (224, 224, 3))["dense"] == {
        "fc1": "blocked", "fc2": "blocked", "fc3": "blocked"}
    off = record.record(models.create("alexnet", 10), (224, 224, 3), Compute(cpu_kernels="off"))
    assert set(off["dense"].values()) == {"xla"} and len(off["dense"]) == 3


def test_every_checkpoint_says_which_kernels_its_run_used(tmp_path):
    cfg = TrainConfig(data=DataConfig(batch_size=32), steps=2, log_every=1, plot=False,
                      workdir=str(tmp_path))
    trainer.train_and_evaluate(cfg)
    manager = ocp.CheckpointManager(os.path.join(tmp_path, "checkpoints"))
    meta = checkpoint.read_meta(manager, 2)
    manager.close()
    assert meta["kernels"] == record.record(models.create("lenet5", 10), (32, 32, 1))
    # The kernels are how the model is computed, not what: the run resumes with others.
    off = Compute(cpu_kernels="off", conv_impl="xla")
    _, result = trainer.train_and_evaluate(dataclasses.replace(cfg, steps=3, compute=off))
    assert result["step"] == 3
    manager = ocp.CheckpointManager(os.path.join(tmp_path, "checkpoints"))
    meta = checkpoint.read_meta(manager, 3)
    manager.close()
    assert meta["kernels"]["cpu_kernels"] == "off" and meta["config"]["compute"] == {
        "cpu_kernels": "off", "conv_impl": "xla"}


def test_a_sweep_result_says_which_kernels_it_ran(tmp_path):
    from jaxcnn.ablation import result as result_lib
    from jaxcnn.ablation.spec import Run
    cfg = TrainConfig(data=DataConfig(batch_size=32), steps=2, log_every=1, plot=False,
                      workdir=str(tmp_path / "base/seed=0"))
    state, metrics = trainer.train_and_evaluate(cfg)
    result = result_lib.write_result(Run(0, "base", 0, ()), cfg, state, metrics)
    assert result["kernels"]["convolutions"]["conv1/conv"] == "single_channel"
