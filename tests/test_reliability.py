"""Failure modes of the programs (README "When things go wrong"): preemption and Ctrl-C, a kill
during a checkpoint write, damaged checkpoints, a full disk, bad input, a dead or preempted peer in
a multi-process job, and safe loading.

Every run is LeNet-5 on the embedded digits, in a subprocess where the process is what is tested
(signals, kills, exit codes, several processes), else in this one. Runs that must be interrupted ask
for far more steps than they get to and are stopped once their first metrics (or checkpoints)
appear.
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

from conftest import assert_one_line_error, run_cli as shared_run_cli, run_in_process, steps_in
from experiments import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ("--model=lenet5", "--dataset=digits", "--batch_size=32", "--eval_batch_size=64",
         "--optimizer=sgd", "--learning_rate=0.05", "--log_every=5")
ENDLESS = "--steps=1000000"
TMP_SUFFIX = ".orbax-checkpoint-tmp"
STARTUP_S = 240   # generous: several people share two cores


def command(*args):
    return [sys.executable, "-m", "experiments.run", *QUICK, *args]


def run_cli(*args, **kwargs):
    """The program with QUICK's flags to its end (conftest.run_cli)."""
    return shared_run_cli(*QUICK, *args, **kwargs)


STARTED: list[subprocess.Popen] = []


def start_cli(*args, log, env=None):
    """The program in the background, stdout and stderr to `log` (a pipe could fill and block)."""
    with open(log, "w") as f:
        proc = subprocess.Popen(command(*args), cwd=REPO, env=env, stdout=f, stderr=f, text=True)
    STARTED.append(proc)
    return proc


@pytest.fixture(autouse=True)
def no_program_outlives_its_test():
    """Kills what a failed test left running (an ENDLESS run would train on for days)."""
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for(condition, proc, log, what):
    """Polls `condition` until it holds; fails if proc ends or time runs out."""
    deadline = time.monotonic() + STARTUP_S
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {what} (exit {proc.poll()}):\n{open(log).read()[-3000:]}")
        time.sleep(0.02)


def unfinished_in(workdir):
    return glob.glob(os.path.join(workdir, "checkpoints", f"*{TMP_SUFFIX}*"))


def saved_params(workdir, step):
    """A checkpoint's params on this process's first device (a multi-process job's too)."""
    path = os.path.join(workdir, "checkpoints", str(step), "state")
    with ocp.PyTreeCheckpointer() as reader:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = {"params": jax.tree.map(
            lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
            reader.metadata(path).item_metadata["params"])}
        return reader.restore(path, args=ocp.args.PyTreeRestore(
            target, ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=True))["params"]


def flip_bytes(path, n=64):
    """Inverts n bytes in the middle of a file."""
    data = bytearray(open(path, "rb").read())
    middle = len(data) // 2
    data[middle:middle + n] = bytes(b ^ 0xFF for b in data[middle:middle + n])
    open(path, "wb").write(data)


def multi_process(*args, workdir, logs, port, heartbeat_timeout=20):
    """The program as 2 processes x 2 CPU devices on 127.0.0.1, logs to `logs`."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    return [start_cli(*args, f"--workdir={workdir}", f"--coordinator_address=127.0.0.1:{port}",
                      "--num_processes=2", f"--process_id={i}",
                      f"--heartbeat_timeout={heartbeat_timeout}", log=logs[i], env=env)
            for i in range(2)]


# ---- preemption and crashes ----------------------------------------------------------------------

def test_sigterm_and_ctrl_c_save_the_current_step_and_the_resumed_run_equals_an_uninterrupted_one(
        tmp_path):
    signals = {"preempted": signal.SIGTERM, "interrupted": signal.SIGINT}
    procs = {name: start_cli(ENDLESS, f"--workdir={tmp_path / name}", log=tmp_path / f"{name}.log")
             for name in signals}
    for name, proc in procs.items():
        wait_for(lambda: os.path.exists(tmp_path / name / "metrics.jsonl"), proc,
                 tmp_path / f"{name}.log", "training metrics")
        proc.send_signal(signals[name])
        sent = time.monotonic()
        proc.wait(timeout=60)
        seconds = time.monotonic() - sent
        output = open(tmp_path / f"{name}.log").read()
        # SIGTERM: exit 0 (a preemption is no failure); Ctrl-C: 130, as the shell reports it.
        assert proc.returncode == {"preempted": 0, "interrupted": 130}[name], output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert seconds < 20, f"took {seconds:.1f}s to stop"
        assert f"stopped at step {steps_in(tmp_path / name)[-1]} with a checkpoint" in output
        assert os.path.exists(tmp_path / name / "curves.png")     # the figure so far
    preempted, stop_step = tmp_path / "preempted", steps_in(tmp_path / "preempted")[-1]

    # The resumed run and an uninterrupted one, side by side.
    total = f"--steps={stop_step + 4}"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        resumed, straight = pool.map(lambda w: run_cli(total, f"--workdir={w}"),
                                     [preempted, tmp_path / "straight"])
    assert resumed.returncode == straight.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {stop_step}" in resumed.stderr
    jax.tree.map(np.testing.assert_array_equal, saved_params(preempted, stop_step + 4),
                 saved_params(tmp_path / "straight", stop_step + 4))


def test_ctrl_c_requests_a_stop_and_leaves_a_second_one_to_the_default_action():
    """The first Ctrl-C becomes SIGTERM (which JAX's preemption service owns in a multi-process
    job), the second ends the process at once: SIGINT's default action."""
    from experiments import cli
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop = cli.StopRequest()
        assert not stop()
        signal.raise_signal(signal.SIGINT)
        assert stop() and stop.exit_status == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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


# ---- damaged checkpoints and a full disk -------------------------------------------------------

def test_damaged_checkpoints_are_moved_aside_and_the_newest_readable_one_resumes(
        tmp_path, trained_workdir):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    ckpt = workdir / "checkpoints"
    # Array data (Orbax has no checksum of its own here: only ours notices), index, metadata.
    data_files = glob.glob(str(ckpt / "8" / "state" / "ocdbt.process_0" / "d" / "*"))
    flip_bytes(max(data_files, key=os.path.getsize))
    flip_bytes(ckpt / "6" / "state" / "manifest.ocdbt", n=16)
    flip_bytes(ckpt / "4" / "state" / "_METADATA", n=16)

    result = run_cli("--steps=4", "--keep_checkpoints=4", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "is unreadable" in line]
    assert len(warnings) == 3, result.stderr[-3000:]
    for step, cause in ((8, "does not match its checksum"), (6, "manifest"), (4, "decode")):
        line = next(w for w in warnings if f"checkpoint step {step} is unreadable" in w)
        assert cause in line and f"moved to {ckpt / f'corrupt-{step}'}" in line
        assert (ckpt / f"corrupt-{step}" / "state").is_dir()   # kept, not deleted
    assert "resumed from step 2" in result.stderr
    assert steps_in(workdir) == [2, 4]
    # Resumed from step 2, it ends where the undamaged run was at step 4.
    jax.tree.map(np.testing.assert_array_equal, saved_params(workdir, 4),
                 saved_params(trained_workdir, 4))


def test_a_full_disk_stops_with_one_line_and_keeps_the_last_checkpoint(tmp_path, trained_workdir):
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    # Files of at most 100 kB: the metrics fit, a checkpoint's array data (about 200 kB) does not.
    full = run_cli("--steps=10", "--checkpoint_every=2", "--keep_checkpoints=4",
                   f"--workdir={workdir}", max_file_bytes=100_000)
    assert_one_line_error(full, f"writing checkpoint step 10 to {workdir / 'checkpoints'} failed: "
                                f"File too large; the last complete one, step 8, is kept")
    assert steps_in(workdir) == [2, 4, 6, 8]

    resumed = run_cli("--steps=10", "--checkpoint_every=2", "--keep_checkpoints=4",
                      f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 8" in resumed.stderr and "is unreadable" not in resumed.stderr
    assert steps_in(workdir)[-1] == 10 and not unfinished_in(workdir)


def test_bad_input_ends_with_a_one_line_error(tmp_path, trained_workdir, capsys):
    """Checked in this process (`run_in_process`: exit status, the one line, no traceback); the
    suite's 8 CPU devices are the device count the messages name."""
    write_image_folder(tmp_path / "corrupt", broken=("bad.jpg", b"\xff\xd8\xff\xe0 not a jpeg"))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    for case in ("all_damaged", "other_model", "other_optimizer", "nan"):
        shutil.copytree(trained_workdir, tmp_path / case)
    for step in steps_in(tmp_path / "all_damaged"):
        state = tmp_path / "all_damaged" / "checkpoints" / str(step) / "state"
        flip_bytes(state / "manifest.ocdbt", n=16)
    (tmp_path / "a_file").write_text("")
    assert jax.device_count() == 8
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
        (f"--workdir={tmp_path / 'all_damaged'}",):
            f"no readable checkpoint in {tmp_path / 'all_damaged' / 'checkpoints'} (damaged ones "
            f"moved to corrupt-8, corrupt-6, corrupt-4, corrupt-2)",
        (f"--workdir={tmp_path / 'other_model'}", "--norm=batch"):
            "was written for model_options={}, this run has model_options={'norm': 'batch'}",
        (f"--workdir={tmp_path / 'other_optimizer'}", "--optimizer=adam"):
            "checkpoints/8 has other arrays than this run's state (at .opt_state",
        (f"--workdir={tmp_path / 'a_file'}",): f"workdir {tmp_path / 'a_file'} is a file",
        ("--num_processes=2",): "--num_processes and --process_id need --coordinator_address",
        (f"--flagfile={tmp_path / 'missing.flags'}",): "Unable to open flagfile",
        ("--batch_size=0",): "--batch_size must be positive, got 0",
        ("--grad_accum_steps=3",): "--batch_size=32 must be a multiple of --grad_accum_steps=3",
        ("--grad_accum_steps=8",):
            "batch_size / grad_accum_steps=4 must be a positive multiple of the device count (8)",
        ("--profile_steps=3:2",): "--profile_steps must be A:B",
        ("--optimizer=adam", "--momentum=0.5"): "--momentum does not apply to --optimizer=adam",
        ("--discexp_rate=0.5",): "--discexp_rate only applies to --schedule=discexp",
        (f"--workdir={tmp_path / 'nan'}", "--steps=12", "--learning_rate=1e30", "--log_every=1"):
            "non-finite loss or gradient at step ",
    }

    results = {args: run_in_process(capsys, run.main, *QUICK, f"--workdir={tmp_path / 'unused'}",
                                    "--steps=8", *args) for args in cases}
    for args, expected in cases.items():
        assert_one_line_error(results[args], expected)
    # The non-finite stop keeps the last good checkpoint and says which one.
    nan_case = (f"--workdir={tmp_path / 'nan'}", "--steps=12", "--learning_rate=1e30", "--log_every=1")
    nan_error = results[nan_case]
    assert "last good checkpoint (step 8)" in nan_error.stderr
    assert steps_in(tmp_path / "nan") == [2, 4, 6, 8]
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(saved_params(tmp_path / "nan", 8)))
    # Checkpoints of another model or optimizer are refused, not taken for damaged ones.
    assert steps_in(tmp_path / "other_optimizer") == [2, 4, 6, 8]


def test_the_other_programs_end_bad_input_with_a_one_line_error(tmp_path):
    cases = {  # program and args -> what the error line says
        ("benchmark", "--modes=sideways"): "valid modes: forward, forward_backward, train_step",
        ("benchmark", "--model=lenet5", "--image_size=8", "--notorch"):
            "LeNet5 needs inputs of at least 32x32 pixels, got 8x8",
        ("summary", "--model=resnet50"): "unknown model 'resnet50'",
        ("summary", "--depth=0"): "flag --depth=0: 0 is not a positive integer",
        ("predict", f"--workdir={tmp_path}", "a.png"): "no checkpoint in",
        ("predict", f"--workdir={tmp_path}"): "give one or more image files",
    }

    def run_case(args):
        return subprocess.run([sys.executable, "-m", f"experiments.{args[0]}", *args[1:]],
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = dict(zip(cases, pool.map(run_case, cases)))
    for args, expected in cases.items():
        assert_one_line_error(results[args], expected)


# ---- multi-process -----------------------------------------------------------------------------

def test_sigterm_to_one_process_stops_both_at_the_same_step_and_the_resumed_job_is_exact(tmp_path):
    port = 20000 + (os.getpid() + 3571) % 20000
    workdir, logs = tmp_path / "preempted", [tmp_path / f"process{i}.log" for i in range(2)]
    procs = multi_process(ENDLESS, workdir=workdir, logs=logs, port=port)
    try:
        wait_for(lambda: os.path.exists(workdir / "metrics.jsonl"), procs[0], logs[0],
                 "training metrics")
        procs[1].send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    finally:
        for proc in procs:
            proc.kill()
    outputs = [open(log).read() for log in logs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    stop_step = steps_in(workdir)[-1]
    for output in outputs:
        assert f"stopped at step {stop_step} with a checkpoint" in output, output[-3000:]

    # The resumed job and an uninterrupted one, side by side.
    runs = {"resumed": (workdir, port + 1), "straight": (tmp_path / "straight", port + 2)}
    procs = {name: multi_process(f"--steps={stop_step + 3}", workdir=w, port=p,
                                 logs=[tmp_path / f"{name}{i}.log" for i in range(2)])
             for name, (w, p) in runs.items()}
    for name, pair in procs.items():
        for i, proc in enumerate(pair):
            assert proc.wait(timeout=300) == 0, open(tmp_path / f"{name}{i}.log").read()[-3000:]
    assert f"resumed from step {stop_step}" in open(tmp_path / "resumed0.log").read()
    jax.tree.map(np.testing.assert_array_equal, saved_params(workdir, stop_step + 3),
                 saved_params(tmp_path / "straight", stop_step + 3))


def test_a_dead_peer_ends_the_other_process_with_a_clear_error(tmp_path):
    port = 20000 + (os.getpid() + 7919) % 20000
    workdir, logs = tmp_path / "run", [tmp_path / f"process{i}.log" for i in range(2)]
    procs = multi_process(ENDLESS, workdir=workdir, logs=logs, port=port, heartbeat_timeout=5)
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
