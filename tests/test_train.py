"""The train step, data parallelism over 8 fake CPU devices, and whole runs of the training loop."""
import dataclasses
import functools
import glob
import gzip
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.experimental import io_callback
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxcnn import models, parallel, programs, train, trainer
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from jaxcnn.cpu.policy import Compute
from jaxcnn.metrics_file import read_metrics

from conftest import assert_equal_up_to_noise_floor, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_state(model, shape=(8, 8, 3), lr=0.1):
    tx = optax.sgd(lr, momentum=0.9)
    init = functools.partial(train.create_train_state, model=model, input_shape=shape, tx=tx,
                             lr_fn=optax.constant_schedule(lr))
    return jax.jit(init)(jax.random.key(0))


def test_loss_falls_on_a_fixed_batch():
    model = models.create("convnet_cifar", 4, width=8, norm="batch")
    state = small_state(model, lr=0.05)
    batch = {"image": jax.random.normal(jax.random.key(1), (16, 8, 8, 3)),
             "label": jnp.arange(16) % 4}
    step = jax.jit(train.train_step)
    losses = []
    for _ in range(15):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0]
    assert int(state.step) == 15 and float(metrics["learning_rate"]) == pytest.approx(0.05)


def test_topk_accuracy_and_masked_eval_against_numpy():
    logits = jnp.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    labels = jnp.array([2, 0, 0])
    np.testing.assert_array_equal(train.correct_topk(logits, labels, 1), [0, 1, 0])
    np.testing.assert_array_equal(train.correct_topk(logits, labels, 2), [1, 1, 0])
    model = models.create("convnet_cifar", 3, width=4)
    state = small_state(model)
    images = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    batch = {"image": images, "label": jnp.array([0, 1, 2, 0]), "mask": jnp.array([1, 1, 1, 0])}
    sums = train.eval_step(state, batch)
    logits = model.apply({"params": state.params}, images[:3])
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"][:3]).sum()
    assert float(sums["count"]) == 3
    np.testing.assert_allclose(sums["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(sums["top1"], np.sum(np.argmax(logits, -1) == np.arange(3)))


def test_nonfinite_update_is_dropped_and_reported():
    model = models.create("convnet_cifar", 2, width=4, norm="batch")
    state = small_state(model)
    batch = {"image": jnp.full((2, 8, 8, 3), jnp.nan), "label": jnp.array([0, 1])}
    new_state, metrics = jax.jit(train.train_step)(state, batch)
    assert int(metrics["nonfinite"]) == 1 and int(metrics["first_nonfinite_step"]) == 0
    for new, old in ((new_state.params, state.params), (new_state.opt_state, state.opt_state),
                     (new_state.batch_stats, state.batch_stats)):
        jax.tree.map(np.testing.assert_array_equal, new, old)
    assert int(new_state.step) == 1


def test_all_finite_is_exact_where_a_global_norm_overflows():
    huge = {"a": jnp.full((3,), 1e30), "b": jnp.ones((2, 2))}
    assert bool(train.all_finite(huge)) and not np.isfinite(float(optax.tree.norm(huge)))
    for bad in (jnp.inf, -jnp.inf, jnp.nan):
        assert not bool(train.all_finite({**huge, "b": jnp.ones((2, 2)).at[1, 0].set(bad)}))


# Data parallelism and gradient accumulation are the same float32 arithmetic in other orders:
# compared up to the noise floor measured by the 1-device step with cpu_kernels="off" (flax's
# layers, XLA's forms), and a step with a learning rate 1% off exceeds it (tests/conftest.py).

def sharded_steps(model, batch, devices, lr, grad_accum_steps=1, steps=3, compute=Compute()):
    """`steps` train steps of `model` on `batch`, its batch split over `devices`, compiled under
    `compute`: the parameters, batch statistics, optimizer state and last metrics, on the host."""
    mesh = Mesh(np.array(devices), ("data",))
    replicated, data = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    step = programs.jit(functools.partial(train.train_step, grad_accum_steps=grad_accum_steps),
                        compute, in_shardings=(replicated, data),
                        out_shardings=(replicated, replicated))
    state = jax.device_put(small_state(model, lr=lr), replicated)
    for _ in range(steps):
        state, metrics = step(state, jax.device_put(batch, data))
    assert int(state.step) == steps
    assert len(state.params["conv1"]["conv"]["kernel"].sharding.device_set) == len(devices)
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats,
                           "opt_state": state.opt_state, "metrics": metrics})


def test_step_on_8_devices_equals_step_on_1_device():
    assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
    model = models.create("convnet_cifar", 4, width=8, norm="batch", dropout=0.0)
    batch = {"image": jax.random.normal(jax.random.key(1), (16, 8, 8, 3)),
             "label": jnp.arange(16) % 4}
    one = sharded_steps(model, batch, jax.devices()[:1], lr=0.1)
    eight = sharded_steps(model, batch, jax.devices(), lr=0.1)
    off = sharded_steps(model, batch, jax.devices()[:1], lr=0.1, compute=Compute(cpu_kernels="off"))
    wrong = sharded_steps(model, batch, jax.devices()[:1], lr=0.1 * 1.01)
    assert_equal_up_to_noise_floor(eight, one, off, wrong)


def test_accumulated_micro_batches_make_the_update_of_the_whole_batch():
    """4 micro-batches of 8 on 8 devices give the parameters of 32 at once on 1 device (no BN)."""
    model = models.create("convnet_cifar", 4, width=8, dropout=0.0)
    batch = {"image": jax.random.normal(jax.random.key(1), (32, 8, 8, 3)),
             "label": jnp.arange(32) % 4}
    whole = sharded_steps(model, batch, jax.devices()[:1], lr=0.05)
    accumulated = sharded_steps(model, batch, jax.devices(), lr=0.05, grad_accum_steps=4)
    off = sharded_steps(model, batch, jax.devices()[:1], lr=0.05,
                        compute=Compute(cpu_kernels="off"))
    wrong = sharded_steps(model, batch, jax.devices()[:1], lr=0.05 * 1.01)
    assert_equal_up_to_noise_floor(accumulated, whole, off, wrong)


def test_batch_norm_normalises_each_micro_batch_with_its_own_statistics():
    model = models.create("convnet_cifar", 4, width=8, norm="batch", dropout=0.0)
    state = small_state(model)
    batch = {"image": jax.random.normal(jax.random.key(1), (8, 8, 8, 3)), "label": jnp.arange(8) % 4}
    new_state, metrics = jax.jit(functools.partial(train.train_step, grad_accum_steps=2))(
        state, batch)
    # Micro-batch k is examples k, k + 2, ...; each updates the running averages in turn.
    batch_stats, losses = state.batch_stats, []
    for k in range(2):
        logits, updates = model.apply({"params": state.params, "batch_stats": batch_stats},
                                      batch["image"][k::2], train=True, mutable=["batch_stats"])
        batch_stats = updates["batch_stats"]
        losses.append(optax.softmax_cross_entropy_with_integer_labels(
            logits, batch["label"][k::2]).mean())
    np.testing.assert_allclose(metrics["loss"], np.mean(losses), rtol=1e-5)
    jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
                 new_state.batch_stats, batch_stats)


# ---- whole runs: the quick-start data (digits) and LeNet-5, a few steps each -------------------

def quick_config(workdir, **overrides):
    cfg = TrainConfig(
        model=ModelConfig("lenet5", {"dropout": 0.5}),
        data=DataConfig(dataset="digits", image_size=32, channels=1, batch_size=32,
                        eval_batch_size=64),
        optim=OptimConfig(optimizer="sgd", learning_rate=0.05), workdir=str(workdir),
        steps=40, log_every=10, eval_every_epochs=0.5, keep_checkpoints=2, plot=True)
    return dataclasses.replace(cfg, **overrides)


def test_run_trains_evaluates_every_example_and_writes_its_workdir(tmp_path):
    state, result = trainer.train_and_evaluate(quick_config(tmp_path, steps=120))
    assert result["count"] == 300                      # 300 test digits, eval batch 64: padded
    assert result["top1"] > 0.8 and int(state.step) == 120
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    train_losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert train_losses[-1] < train_losses[0]
    assert {"learning_rate", "images_per_s", "top5"} <= set(rows[0])
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["115", "120"]   # keep 2
    assert os.listdir(tmp_path / "tensorboard") and (tmp_path / "curves.png").stat().st_size > 0


def test_logged_images_per_s_time_the_computed_steps(tmp_path, monkeypatch):
    """Each step waits 0.2 s inside the jitted program (a host callback), where dispatch does not
    wait: a rate timed on dispatch would read up to 100 times batch / 0.2 s. Timed on completed
    steps, no interval can beat that rate, and the logged rates lie within 20% of it. On one
    device: XLA:CPU runs a program over the suite's 8 fake devices synchronously, which would
    hide the difference."""
    wait = 0.2
    one_device = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,),
                               devices=jax.devices()[:1])
    monkeypatch.setattr(parallel, "data_mesh", lambda: one_device)
    compute_step = train.train_step

    def waiting_step(state, batch, **kwargs):
        state, metrics = compute_step(state, batch, **kwargs)
        waited = io_callback(lambda: np.float32(time.sleep(wait) or 0),
                             jax.ShapeDtypeStruct((), jnp.float32))
        return state, {**metrics, "loss": metrics["loss"] + waited}

    monkeypatch.setattr(train, "train_step", waiting_step)
    trainer.train_and_evaluate(quick_config(tmp_path, steps=24, log_every=4, eval_every_epochs=1,
                                            plot=False))
    rates = [r["images_per_s"] for r in read_metrics(tmp_path) if r["split"] == "train"]
    bound = 32 / wait   # batch 32
    assert len(rates) == 6 and max(rates) <= bound
    assert np.median(rates[1:]) >= 0.8 * bound   # the first interval includes compilation


def test_vgg_dense_evaluation_from_the_training_loop(tmp_path):
    tiny_vgg = {"cfg": (4, "M", 8, "M"), "head": (16,), "dropout": 0.0}
    cfg = quick_config(tmp_path, model=ModelConfig("vgg11", tiny_vgg), steps=20,
                       dense_eval_size=40, eval_flip=True)   # 10×10 maps: 4×4 windows of 7×7
    _, result = trainer.train_and_evaluate(cfg)
    assert result["count"] == 300 and 0.2 < result["top1"] <= 1.0
    with pytest.raises(ValueError, match="dense evaluation needs a VGG"):
        trainer.train_and_evaluate(quick_config(tmp_path / "lenet", dense_eval_size=40))


def saved_state(workdir, step):
    """The arrays of a checkpoint, PRNG keys as their raw data."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    return jax.tree.map(lambda a: jax.random.key_data(a) if jax.dtypes.issubdtype(
        a.dtype, jax.dtypes.prng_key) else a, ocp.StandardCheckpointer().restore(path))


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_resumed_run_is_bitwise_equal_to_an_uninterrupted_one(tmp_path, grad_accum_steps):
    optim = OptimConfig(optimizer="nesterov", learning_rate=0.05, grad_accum_steps=grad_accum_steps)
    straight = quick_config(tmp_path / "straight", steps=6, checkpoint_every=3, optim=optim)
    trainer.train_and_evaluate(straight)
    trainer.train_and_evaluate(quick_config(tmp_path / "resumed", steps=3, optim=optim))
    # The second half in a new process, through the command line, with the same settings.
    out = run_cli("--model=lenet5", "--dropout=0.5", "--batch_size=32", "--eval_batch_size=64",
                  "--optimizer=nesterov", "--learning_rate=0.05", "--eval_every_epochs=0.5",
                  "--log_every=10", "--keep_checkpoints=2", "--steps=6",
                  f"--grad_accum_steps={grad_accum_steps}",
                  f"--workdir={tmp_path / 'resumed'}", check=True)
    assert "resumed from step 3" in out.stderr
    a, b = saved_state(tmp_path / "straight", 6), saved_state(tmp_path / "resumed", 6)
    assert a["step"] == b["step"] == 6
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_batch_size_must_split_into_micro_batches_of_whole_device_multiples(tmp_path):
    with pytest.raises(ValueError, match=r"grad_accum_steps=3 must be a positive divisor of "
                                         r"batch_size=32"):
        trainer.train_and_evaluate(quick_config(tmp_path, optim=OptimConfig(grad_accum_steps=3)))
    with pytest.raises(ValueError, match=r"batch_size / grad_accum_steps=4 must be a positive "
                                         r"multiple of the device count \(8\)"):
        trainer.train_and_evaluate(quick_config(tmp_path, optim=OptimConfig(grad_accum_steps=8)))


def test_profile_steps_write_a_trace_for_tensorboard(tmp_path):
    trainer.train_and_evaluate(quick_config(tmp_path, steps=4, profile_steps=(2, 3), plot=False))
    (run,) = glob.glob(str(tmp_path / "tensorboard" / "plugins" / "profile" / "*"))
    (xplane,) = glob.glob(os.path.join(run, "*.xplane.pb"))
    assert os.path.getsize(xplane) > 0
    with gzip.open(glob.glob(os.path.join(run, "*.trace.json.gz"))[0]) as f:
        events = json.load(f)["traceEvents"]
    assert sorted(e["args"]["step_num"] for e in events if e.get("name") == "train") == ["2", "3"]


def test_absurd_learning_rate_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(trainer.NonFiniteLossError, match=r"at step \d+.*last good checkpoint"):
        trainer.train_and_evaluate(quick_config(tmp_path, optim=OptimConfig(
            optimizer="sgd", learning_rate=1e30)))
    for step in os.listdir(tmp_path / "checkpoints"):
        params = saved_state(tmp_path, step)["params"]
        assert all(np.isfinite(p).all() for p in jax.tree.leaves(params))
    _, result = trainer.train_and_evaluate(quick_config(
        tmp_path / "skip", nan_policy="skip", optim=OptimConfig(optimizer="sgd", learning_rate=1e30)))
    assert result["count"] == 300


def test_two_processes_train_to_identical_parameters(tmp_path):
    port = 20000 + os.getpid() % 20000
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tests", "multihost_worker.py"), f"127.0.0.1:{port}",
         str(i), str(tmp_path)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    sums = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sums[0]["devices"] == 4 and sums[0]["step"] == 6
    assert sums[0] == sums[1]


def test_metrics_of_a_resumed_run_keep_the_latest_row_of_each_step(tmp_path):
    rows = [("train", 5, 1.0), ("test", 5, 0.9), ("train", 10, 0.8),   # killed after step 10,
            ("train", 10, 0.7), ("test", 10, 0.6)]                      # resumed from step 5
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps({"split": s, "step": n, "loss": v}) + "\n" for s, n, v in rows)
    assert [(r["split"], r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        ("train", 5, 1.0), ("test", 5, 0.9), ("train", 10, 0.7), ("test", 10, 0.6)]
