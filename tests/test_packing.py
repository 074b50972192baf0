"""Packed runs (`jaxcnn.packing`, `trainer.train_members`): every member equals its standalone run
(parameters, batch statistics, metric rows, test accuracy), reads the standalone run's batches,
fails alone, and resumes from its own checkpoints. On the suite's 8 fake CPU devices, so each
member's batch is also sharded over a data axis of 8."""
import dataclasses
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from PIL import Image

from jaxcnn import data, optim, packing, runs, trainer
from jaxcnn.config import DataConfig, ModelConfig, OptimConfig, TrainConfig
from jaxcnn.cpu.policy import Compute
from jaxcnn.metrics_file import read_metrics

from conftest import run_tolerances, runs_beyond_tolerance, standalone


def config(workdir, seed=0, **optim_values) -> TrainConfig:
    base = TrainConfig(model=ModelConfig("lenet5"), data=DataConfig(batch_size=32),
                       optim=OptimConfig(optimizer="sgd", learning_rate=0.05), steps=12,
                       log_every=4, eval_every_epochs=0.125, plot=False)
    return dataclasses.replace(base, seed=seed, workdir=str(workdir),
                               data=dataclasses.replace(base.data, seed=seed),
                               optim=dataclasses.replace(base.optim, **optim_values))


def with_(cfg: TrainConfig, **changes) -> TrainConfig:
    """cfg with fields of its model options, data or optim config replaced."""
    model = changes.pop("model", {})
    data_changes = {k: changes.pop(k) for k in list(changes) if k in DataConfig.__dataclass_fields__}
    optim_changes = {k: changes.pop(k) for k in list(changes) if k in OptimConfig.__dataclass_fields__}
    return dataclasses.replace(
        cfg, **changes, model=dataclasses.replace(cfg.model, **model),
        data=dataclasses.replace(cfg.data, **data_changes),
        optim=dataclasses.replace(cfg.optim, **optim_changes))


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


# ---- a packed member against its standalone run, up to the measured noise floor ---------------
#
# A packed member and its standalone run are the same arithmetic in two orders (members mapped
# with vmap, XLA's forms of some ops instead of the CPU wing's): they are compared up to the noise
# floor measured by the same standalone run with cpu_kernels="off" (tests/conftest.py,
# `run_tolerances`), and each test shows that a deliberately wrong member exceeds it.


def assert_member_equals_standalone(member: trainer.Member, tmp_path, wrong=None) -> None:
    """`member` of a pack equals its standalone run up to the measured noise floor; the standalone
    run of `wrong` (the member's config changed a little), where given, exceeds it."""
    cfg = member.cfg
    assert member.failure is None and member.result["step"] == cfg.steps
    alone = standalone(cfg, tmp_path, "alone")
    off = dataclasses.replace(cfg, compute=Compute(cpu_kernels="off"))
    tol = run_tolerances(alone, standalone(off, tmp_path, "off"))
    packed = {"state": {"params": member.state.params, "batch_stats": member.state.batch_stats,
                        "opt_state": member.state.opt_state},
              "result": member.result, "rows": read_metrics(cfg.workdir)}
    assert not runs_beyond_tolerance(packed, alone, tol), (
        cfg.workdir, runs_beyond_tolerance(packed, alone, tol))
    if wrong is not None:   # the test's power: a member slightly wrong is told apart
        assert runs_beyond_tolerance(standalone(wrong, tmp_path, "wrong"), alone, tol)


def check_members_equal_standalone(configs, tmp_path, wrong: TrainConfig):
    """Every member of `configs` trained packed equals its standalone run; `wrong` is configs[0]
    changed a little, and is told apart from it."""
    members = trainer.train_members(configs)
    for k, member in enumerate(members):
        assert_member_equals_standalone(member, tmp_path, wrong if k == 0 else None)
    return members


def test_lenet_members_with_their_seeds_and_learning_rates_equal_standalone_runs(tmp_path):
    configs = [config(tmp_path / "m0", seed=0, learning_rate=0.05, l2=1e-4),
               config(tmp_path / "m1", seed=1, learning_rate=0.05, l2=1e-4),
               config(tmp_path / "m2", seed=0, learning_rate=0.02, momentum=0.5, l2=1e-3)]
    wrong = config(tmp_path / "wrong", seed=0, learning_rate=0.05 * 1.01, l2=1e-4)   # lr 1% off
    members = check_members_equal_standalone(configs, tmp_path, wrong)
    # The members really differ: another seed, another learning rate.
    assert members[0].result["loss"] != members[1].result["loss"] != members[2].result["loss"]
    lr = [read_metrics(c.workdir)[0]["learning_rate"] for c in configs]
    assert lr == pytest.approx([0.05, 0.05, 0.02])
    # Each member is a run like any other.
    loaded = runs.load(configs[1].workdir)
    assert loaded.step == 12 and loaded.config.seed == 1
    assert_trees_equal(loaded.variables["params"], members[1].state.params)


def test_batch_norm_dropout_cifar_augmentation_and_grad_accumulation_members(tmp_path):
    """convnet_cifar with batch norm and dropout on crops and flips of the digits, gradients in
    two micro-batches, members differing in seed, momentum, weight decay, label smoothing and
    clipping."""
    def cfg(name, seed, **values):
        values = {"weight_decay": 1e-4, "grad_clip_norm": 5.0, **values}
        return with_(config(tmp_path / name, seed, grad_accum_steps=2, **values),
                     model={"name": "convnet_cifar",
                            "options": {"norm": "batch", "dropout": 0.3, "width": 8}},
                     image_size=16, channels=3, augment="cifar", steps=12, log_every=4,
                     eval_every_epochs=0.5)
    configs = [cfg("a", 0), cfg("b", 1, momentum=0.8, weight_decay=1e-3),
               cfg("c", 2, label_smoothing=0.1, grad_clip_norm=0.5, learning_rate=0.1)]
    wrong = with_(configs[0], learning_rate=configs[0].optim.learning_rate * 1.01)  # lr 1% off
    members = check_members_equal_standalone(configs, tmp_path, wrong)
    assert jax.tree.leaves(members[0].state.batch_stats)


def test_bfloat16_members_equal_standalone_runs(tmp_path):
    configs = [with_(config(tmp_path / f"m{s}", seed=s), model={"options": {"dtype": "bfloat16"}},
                     steps=8, log_every=4) for s in (0, 1)]
    wrong = with_(configs[0], seed=1)   # member 0 reading member 1's batches
    check_members_equal_standalone(configs, tmp_path, wrong)


def test_a_diverging_member_fails_alone_and_keeps_its_last_good_checkpoint(tmp_path):
    configs = [config(tmp_path / "ok", seed=0),
               config(tmp_path / "bad", seed=0, learning_rate=1e4),
               config(tmp_path / "ok2", seed=1)]
    configs = [dataclasses.replace(c, checkpoint_every=1) for c in configs]
    members = trainer.train_members(configs)
    ok, bad, ok2 = members
    assert ok.failure is None and ok2.failure is None and ok.result["step"] == 12
    assert bad.failure.startswith("non-finite loss or gradient at step ")
    first_bad = int(bad.failure.split("step ")[1].split(";")[0])
    kept = runs.load(configs[1].workdir)
    # Steps count updates: "at step N" is the update after step N, the last good one.
    assert kept.step == first_bad and f"(step {kept.step}) kept" in bad.failure
    assert bad.state is not None and int(bad.state.step) == first_bad
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(bad.state.params))
    # The others are unaffected: member 0 equals its standalone run.
    assert_member_equals_standalone(ok, tmp_path)


def test_a_stopped_pack_resumes_to_the_uninterrupted_result(tmp_path):
    configs = [dataclasses.replace(config(tmp_path / f"m{s}", seed=s, learning_rate=lr), steps=14)
               for s, lr in ((0, 0.05), (1, 0.1))]
    calls = iter(range(1000))
    stopped = trainer.train_members(configs, should_stop=lambda: next(calls) == 9)   # at step 10
    assert [m.result["preempted"] for m in stopped] == [True, True]
    assert [m.result["step"] for m in stopped] == [10, 10]
    resumed = trainer.train_members(configs)
    uninterrupted = trainer.train_members(
        [dataclasses.replace(c, workdir=c.workdir + "-whole") for c in configs])
    for r, u in zip(resumed, uninterrupted):
        assert_trees_equal(r.state.params, u.state.params)
        assert r.result["top1"] == u.result["top1"]


def test_members_that_would_change_the_program_are_refused(tmp_path):
    a = config(tmp_path / "a")
    with pytest.raises(ValueError, match="model.options is"):
        packing.check([a, with_(config(tmp_path / "b"), model={"options": {"norm": "lrn"}})])
    with pytest.raises(ValueError, match=r"optim.l2 is 0.0 and 0.001 \(zero and non-zero"):
        packing.check([a, config(tmp_path / "b", l2=1e-3)])
    with pytest.raises(ValueError, match="data.batch_size"):
        packing.check([a, with_(config(tmp_path / "b"), batch_size=64)])
    with pytest.raises(ValueError, match="a workdir each"):
        packing.check([a, config(tmp_path / "a", seed=1)])
    packing.check([a, config(tmp_path / "b", seed=3, learning_rate=0.3, momentum=0.5,
                             label_smoothing=0.1)])
    assert set(optim.HYPERPARAMETERS) >= {"learning_rate", "momentum", "l2", "weight_decay",
                                          "grad_clip_norm", "label_smoothing"}


def _noise_folder(root, per_class=20):
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 4)):
        for name in ("ant", "bee"):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3), np.uint8)).save(
                    root / split / name / f"{i}.png")
    return root


@pytest.mark.parametrize("device_resident", [True, False])
def test_members_read_exactly_their_standalone_batches(tmp_path, device_resident):
    root = _noise_folder(tmp_path / "images")
    cfg = DataConfig(dataset=f"folder:{root}", image_size=8, channels=3, batch_size=8,
                     augment="cifar", device_resident=device_resident,
                     cache_dir=str(tmp_path / "cache"))
    sharding = NamedSharding(jax.make_mesh((8,), ("data",)), P("data"))
    seeds = [0, 3]
    packed = data.train_batches(cfg, sharding, start_step=3, seeds=seeds)
    alone = [data.train_batches(dataclasses.replace(cfg, seed=s), sharding, start_step=3)
             for s in seeds]
    for _ in range(7):   # across an epoch boundary (5 steps per epoch)
        batch = next(packed)
        assert batch["image"].shape == (2, 8, 8, 8, 3)
        assert tuple(batch["image"].sharding.spec)[:2] == (None, "data")
        for k, member in enumerate(alone):
            expected = next(member)
            np.testing.assert_array_equal(batch["image"][k], expected["image"])
            np.testing.assert_array_equal(batch["label"][k], expected["label"])
    assert not np.array_equal(batch["image"][0], batch["image"][1])


def test_run_with_seeds_trains_them_packed_each_in_its_own_directory(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "experiments.run", "--seeds=2", "--steps=4",
                          "--batch_size=32", "--log_every=2", f"--workdir={tmp_path}"],
                         cwd=repo, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    for seed in (0, 1):
        run = runs.load(str(tmp_path / f"seed={seed}"))
        assert run.step == 4 and run.config.seed == run.config.data.seed == seed
        top1 = [r for r in run.rows if r["split"] == "test"][-1]["top1"]
        assert f"seed {seed} ({tmp_path}/seed={seed}): test accuracy {100 * top1:.2f}%" in lines
    assert lines[-1].startswith("test accuracy over 2 seeds: ")
    both = subprocess.run([sys.executable, "-m", "experiments.run", "--seeds=2", "--seed=1",
                           f"--workdir={tmp_path}"], cwd=repo, capture_output=True, text=True)
    assert both.returncode == 1 and both.stderr.strip() == (
        "error: --seed and --seeds exclude each other: --seeds=K trains seeds 0..K-1")


ONE_DEVICE_PACK = """
import dataclasses, sys
import jax, numpy as np
sys.path.insert(0, "tests")
from test_packing import config
from jaxcnn import trainer
from jaxcnn.cpu import onednn
from jaxcnn.cpu.onednn import ffi
if not onednn.available():
    print("unavailable:", onednn.unavailable_reason()); sys.exit(0)
calls, call = [], ffi._call
ffi._call = lambda kind, *args: (calls.append(kind), call(kind, *args))[1]
root = sys.argv[1]
configs = [config(f"{root}/m{s}", seed=s, learning_rate=lr) for s, lr in ((0, 0.05), (1, 0.1))]
members = trainer.train_members(configs)
assert {"forward", "backward_data", "backward_weights"} <= set(calls), calls
for m, c in zip(members, configs):
    state, result = trainer.train_and_evaluate(dataclasses.replace(c, workdir=c.workdir + "-alone"))
    jax.tree.map(np.testing.assert_array_equal, m.state.params, state.params)
    assert m.result["top1"] == result["top1"]
print("ok")
"""


def test_on_one_cpu_device_members_run_onednns_convolutions_and_equal_standalone_runs(tmp_path):
    """The CPU path a user of --seeds gets (one device, so `auto` takes oneDNN's convolutions,
    which the suite's 8 fake devices keep it from): oneDNN's FFI calls run the members one after
    another inside the program, and every member equals its standalone run bit for bit."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "XLA_FLAGS": ""}
    out = subprocess.run([sys.executable, "-c", ONE_DEVICE_PACK, str(tmp_path)], cwd=repo,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    if out.stdout.startswith("unavailable:"):
        pytest.skip(f"oneDNN's convolutions cannot be built here: {out.stdout}")
    assert out.stdout.strip().endswith("ok")
