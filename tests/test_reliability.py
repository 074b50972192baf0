"""Failure modes of `python -m experiments.run` (README "When things go wrong"): preemption, a kill
during a checkpoint write, bad input, a dead peer in a multi-process job, and safe loading.

Every run is LeNet-5 on the embedded digits in a subprocess. Runs that must be interrupted ask for
far more steps than they get to and are stopped once their first metrics (or checkpoints) appear.
"""
import concurrent.futures
import glob
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ("--model=lenet5", "--dataset=digits", "--batch_size=32", "--eval_batch_size=64",
         "--optimizer=sgd", "--learning_rate=0.05", "--log_every=5")
ENDLESS = "--steps=1000000"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
STARTUP_S = 240   # generous: several people share two cores


def command(*args):
    return [sys.executable, "-m", "experiments.run", *QUICK, *args]


def run_cli(*args, env=None):
    return subprocess.run(command(*args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def start_cli(*args, log, env=None):
    """The program in the background, stdout and stderr to `log` (a pipe could fill and block)."""
    with open(log, "w") as f:
        return subprocess.Popen(command(*args), cwd=REPO, env=env, stdout=f, stderr=f, text=True)


def wait_for(condition, proc, log, what):
    """Polls `condition` until it holds; fails if proc ends or time runs out."""
    deadline = time.monotonic() + STARTUP_S
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {what} (exit {proc.poll()}):\n{open(log).read()[-3000:]}")
        time.sleep(0.02)


def steps_in(workdir):
    """Complete checkpoint steps in a workdir."""
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(ckpt_dir):
        return []
    return sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())


def unfinished_in(workdir):
    return glob.glob(os.path.join(workdir, "checkpoints", f"*{TMP_SUFFIX}*"))


def saved_params(workdir, step):
    return ocp.StandardCheckpointer().restore(
        os.path.join(workdir, "checkpoints", str(step), "state"))["params"]


def assert_one_line_error(result, expected):
    """Exit status 1, one `error:` line and no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]


# ---- preemption and crashes ----------------------------------------------------------------------

def test_sigterm_saves_the_current_step_and_the_resumed_run_equals_an_uninterrupted_one(tmp_path):
    preempted, log = tmp_path / "preempted", tmp_path / "preempted.log"
    proc = start_cli(ENDLESS, f"--workdir={preempted}", log=log)
    wait_for(lambda: os.path.exists(preempted / "metrics.jsonl"), proc, log, "training metrics")
    proc.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    proc.wait(timeout=60)
    seconds = time.monotonic() - sent
    output = open(log).read()
    assert proc.returncode == 0, output[-3000:]
    assert seconds < 20, f"took {seconds:.1f}s to stop"
    stop_step = steps_in(preempted)[-1]
    assert f"stopped at step {stop_step} with a checkpoint" in output

    # The resumed run and an uninterrupted one, side by side.
    total = f"--steps={stop_step + 4}"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        resumed, straight = pool.map(lambda w: run_cli(total, f"--workdir={w}"),
                                     [preempted, tmp_path / "straight"])
    assert resumed.returncode == straight.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stop_step}" in resumed.stderr
    jax.tree.map(np.testing.assert_array_equal, saved_params(preempted, stop_step + 4),
                 saved_params(tmp_path / "straight", stop_step + 4))


def test_kill_9_while_a_checkpoint_is_written_resumes_from_the_last_complete_one(tmp_path):
    log = tmp_path / "killed.log"
    proc = start_cli(ENDLESS, "--checkpoint_every=1", "--keep_checkpoints=2",
                     f"--workdir={tmp_path}", log=log)
    wait_for(lambda: steps_in(tmp_path) and unfinished_in(tmp_path), proc, log,
             "checkpoint being written after a complete one")
    proc.kill()
    proc.wait()
    complete = steps_in(tmp_path)
    # Also a leftover from an older crash: a copy of the latest step, half gone, as the next step.
    stale = tmp_path / "checkpoints" / f"{complete[-1] + 1}{TMP_SUFFIX}-1700000000"
    shutil.copytree(tmp_path / "checkpoints" / str(complete[-1]), stale)
    shutil.rmtree(stale / "state")

    result = run_cli(f"--steps={complete[-1] + 3}", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resumed from step {complete[-1]}" in result.stderr
    assert steps_in(tmp_path)[-1] == complete[-1] + 3 and not unfinished_in(tmp_path)


# ---- bad input: a one-line error and exit status 1, the cases side by side ---------------------

def write_image_folder(root, broken=None):
    for split, n in (("train", 6), ("test", 2)):
        for label in ("cat", "dog"):
            os.makedirs(root / split / label)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(
                    root / split / label / f"{i}.png")
    if broken:
        (root / "train" / "dog" / broken[0]).write_bytes(broken[1])


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A workdir with complete checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("trained")
    result = run_cli("--steps=4", "--checkpoint_every=2", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_bad_input_ends_with_a_one_line_error(tmp_path, trained_workdir):
    write_image_folder(tmp_path / "corrupt", broken=("bad.jpg", b"\xff\xd8\xff\xe0 not a jpeg"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    for case in ("corrupt_ckpt", "other_model", "nan"):
        shutil.copytree(trained_workdir, tmp_path / case)
    os.remove(tmp_path / "corrupt_ckpt" / "checkpoints" / "4" / "state" / "manifest.ocdbt")
    eight_devices = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    folder = lambda name: f"--dataset=folder:{tmp_path / name}"
    cases = {  # args -> what the error line says
        ("--model=resnet50",): "unknown model 'resnet50'; valid models: lenet5, alexnet",
        ("--dataset=imagenet",): "unknown dataset 'imagenet'; valid datasets: mnist",
        ("--optimizer=lamb",): "value should be one of <sgd|nesterov|adam|adamw>",
        ("--schedule=poly",): "value should be one of <constant|discexp|piecewise|cosine",
        ("--image_size=16",): "LeNet5 needs inputs of at least 32x32 pixels, got 16x16",
        ("--batch_size=30",): "batch_size=30 must be a positive multiple of the device count (8)",
        (folder("missing"),): "/missing/train'; expected",
        (folder("empty"),): "has no class sub-folders",
        (folder("corrupt"), "--batch_size=8", "--eval_batch_size=8"): "Invalid JPEG data",
        (f"--workdir={tmp_path / 'corrupt_ckpt'}",): "checkpoints/4 is corrupt, incomplete",
        (f"--workdir={tmp_path / 'other_model'}", "--norm=batch"):
            "was written for model_options={}, this run has model_options={'norm': 'batch'}",
        (f"--flagfile={tmp_path / 'missing.flags'}",): "Unable to open flagfile",
        ("--batch_size=0",): "--batch_size must be positive, got 0",
        ("--optimizer=adam", "--momentum=0.5"): "--momentum does not apply to --optimizer=adam",
        ("--discexp_rate=0.5",): "--discexp_rate only applies to --schedule=discexp",
        (f"--workdir={tmp_path / 'nan'}", "--learning_rate=1e30", "--log_every=1"):
            "non-finite loss or gradient at step ",
    }

    def run_case(args):
        return run_cli(f"--workdir={tmp_path / 'unused'}", "--steps=8", *args, env=eight_devices)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(run_case, cases)))
    for args, expected in cases.items():
        assert_one_line_error(results[args], expected)
    # The non-finite stop keeps the last good checkpoint and says which one.
    nan_error = results[(f"--workdir={tmp_path / 'nan'}", "--learning_rate=1e30", "--log_every=1")]
    assert "last good checkpoint (step 4)" in nan_error.stderr
    assert steps_in(tmp_path / "nan") == [2, 4]
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(saved_params(tmp_path / "nan", 4)))


# ---- multi-process -----------------------------------------------------------------------------

def test_a_dead_peer_ends_the_other_process_with_a_clear_error(tmp_path):
    port = 20000 + (os.getpid() + 7919) % 20000
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    workdir, logs = tmp_path / "run", [tmp_path / f"process{i}.log" for i in range(2)]
    procs = [start_cli(ENDLESS, f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
                       "--num_processes=2", f"--process_id={i}", "--heartbeat_timeout=5",
                       log=logs[i], env=env) for i in range(2)]
    try:
        wait_for(lambda: os.path.exists(workdir / "metrics.jsonl"), procs[0], logs[0],
                 "training metrics")
        procs[1].kill()
        procs[0].wait(timeout=60)   # the heartbeat timeout (5 s) and some slack; never forever
    finally:
        for proc in procs:
            proc.kill()
    output = open(logs[0]).read()
    assert procs[0].returncode != 0
    # Either JAX's coordination service notices the missing heartbeats, or a collective in flight
    # with the dead peer fails first (gloo aborts the process); both end it within the wait above.
    heartbeat = "another task died" in output and "stopped sending heartbeats" in output
    assert heartbeat or "gloo::" in output, output[-3000:]


# ---- safe loading ------------------------------------------------------------------------------

def test_restoring_a_checkpoint_never_unpickles(trained_workdir, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint restore tried to unpickle")
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    manager = ocp.CheckpointManager(trained_workdir / "checkpoints")
    restored = manager.restore(4, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore(), state=ocp.args.StandardRestore()))
    manager.close()
    assert restored["meta"]["model"] == "lenet5" and int(restored["state"]["step"]) == 4
