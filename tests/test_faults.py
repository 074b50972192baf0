"""More failure modes (README "When things go wrong"), each through the programs: a damaged newest
checkpoint under `runs.load` and `experiments.predict`; a full disk while writing metrics.jsonl,
the TensorBoard events, curves.png and a sweep's records; a workdir the program may not write; a
sweep run killed by a signal; two `--aggregate` of one sweep at the same moment.

Every run is LeNet-5 on the embedded digits, a few steps, in a subprocess. A full disk is a file
size limit (RLIMIT_FSIZE: a write past it fails with EFBIG, "File too large", as a full disk fails
with ENOSPC; no root or spare filesystem needed). Permissions are tested as the user `nobody`.
"""
import concurrent.futures
import csv
import glob
import hashlib
import json
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcnn import predict, runs
from jaxcnn.data import sources
from jaxcnn.metric_writers import MetricWriter
from jaxcnn.metrics_file import read_metrics

from conftest import assert_one_line_error, steps_in

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = ("--model=lenet5", "--dataset=digits", "--batch_size=32", "--eval_batch_size=64",
         "--optimizer=sgd", "--learning_rate=0.05")
TIMEOUT_S = 300   # generous: several people share two cores


def program(module, *args, max_file_bytes=None, full_disk_from_first_record=False, user=None,
            env=None, timeout=TIMEOUT_S):
    """`python -m experiments.MODULE ARGS` to its end. max_file_bytes: under RLIMIT_FSIZE from the
    start; with full_disk_from_first_record, from the first record the sweep writes
    (`records.write_atomically`: result.json, failed.json, the report files), so that the run's
    training, checkpoints and curves.png are written first. user: run as that user, able to read
    everything (CAP_DAC_READ_SEARCH, since this venv's interpreter lies under root's home) but to
    write only what it may."""
    command = [sys.executable, "-m", f"experiments.{module}", *args]
    if full_disk_from_first_record:
        command = [sys.executable, "-c", (
            "import resource, runpy, sys\n"
            "from jaxcnn.ablation import records\n"
            "write = records.write_atomically\n"
            "def full_disk(*args):\n"
            f"    resource.setrlimit(resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes}))\n"
            "    return write(*args)\n"
            "records.write_atomically = full_disk\n"
            f"sys.argv = ['experiments.{module}', *sys.argv[1:]]\n"
            f"runpy.run_module('experiments.{module}', run_name='__main__', alter_sys=True)\n"),
            *args]
    elif max_file_bytes is not None:
        command = [sys.executable, "-c", "import os, resource, sys; resource.setrlimit("
                   f"resource.RLIMIT_FSIZE, ({max_file_bytes}, {max_file_bytes})); "
                   "os.execv(sys.executable, sys.argv[1:])", *command]
    if user is not None:
        command = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                   "--clear-groups", "--inh-caps=+dac_read_search",
                   "--ambient-caps=+dac_read_search", *command]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def contents(root):
    """Path -> sha256 of every file under root: what a failed program must leave as it was."""
    return {os.path.relpath(path, root): hashlib.sha256(open(path, "rb").read()).hexdigest()
            for path in glob.glob(os.path.join(root, "**"), recursive=True)
            if os.path.isfile(path)}


# ---- a damaged newest checkpoint: runs.load and experiments.predict take the one before --------

def flip_spread(path, every=4096):
    """Inverts one byte in every `every` of a file (one in the middle of a smaller one)."""
    data = bytearray(open(path, "rb").read())
    for i in range(min(every, len(data)) // 2, len(data), every):
        data[i] ^= 0xFF
    open(path, "wb").write(data)


def damage(workdir, step, what):
    """A damaged checkpoint: flipped bits throughout its array data ("arrays": Orbax then fails
    to decode some chunk, or decodes other numbers, which only the checksums stored in the meta
    notice), array data that decode but no longer match their checksum ("checksum", made by
    changing the checksum the meta stores for conv1's kernel) or a meta truncated mid-write."""
    ckpt = os.path.join(workdir, "checkpoints", str(step))
    path = os.path.join(ckpt, "meta", "metadata")
    if what == "arrays":   # every data file: which arrays land in which one varies
        for data_file in glob.glob(os.path.join(ckpt, "state", "ocdbt.process_0", "d", "*")):
            flip_spread(data_file)
    elif what == "checksum":
        meta = json.loads(open(path).read())
        meta["checksums"][list(meta["arrays"]).index(KERNEL)] += 1
        open(path, "w").write(json.dumps(meta))
    else:
        text = open(path).read()
        open(path, "w").write(text[:len(text) // 2])


KERNEL = ".params['conv1']['conv']['kernel']"
CAUSES = {"arrays": r"(state: .*|the array data of \.params\[.* does not match its checksum)",
          "checksum": re.escape(f"the array data of {KERNEL} does not match its checksum"),
          "meta": "meta: .*"}


def unreadable_warning(what, workdir):
    """The warning of runs.load (and so of experiments.predict) for checkpoint 8 damaged by
    `what`: training's, with `left in` where training says `moved to`."""
    return re.compile(rf"checkpoint step 8 is unreadable \({CAUSES[what]}\): left in "
                      rf"{re.escape(str(workdir / 'checkpoints' / '8'))}; trying the one before")


def test_runs_load_skips_a_damaged_newest_checkpoint_with_the_warning_training_gives(
        trained_workdir, tmp_path, caplog):
    before = contents(trained_workdir)
    older = tmp_path / "without_8"
    shutil.copytree(trained_workdir, older)
    shutil.rmtree(older / "checkpoints" / "8")
    expected = runs.load(str(older))
    assert expected.step == 6
    for what in CAUSES:
        workdir = tmp_path / what
        shutil.copytree(trained_workdir, workdir)
        damage(workdir, 8, what)
        found = contents(workdir)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            run = runs.load(str(workdir))
        assert run.step == 6, what
        jax.tree.map(np.testing.assert_array_equal, run.variables, expected.variables)
        warnings = [r.getMessage() for r in caplog.records if "is unreadable" in r.getMessage()]
        assert len(warnings) == 1, caplog.text
        assert unreadable_warning(what, workdir).fullmatch(warnings[0]), warnings[0]
        assert contents(workdir) == found   # loading writes nothing, and moves nothing aside
    assert contents(trained_workdir) == before


def test_predict_skips_a_damaged_newest_checkpoint_with_one_warning(trained_workdir, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(trained_workdir, workdir)
    damage(workdir, 8, "arrays")
    images, _ = sources.digits_arrays("test", 32, 1)
    paths = [str(tmp_path / f"{i}.png") for i in range(3)]
    for path, image in zip(paths, images):
        Image.fromarray(image[..., 0]).save(path)

    result = program("predict", f"--workdir={workdir}", "--top_k=3", *paths)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "is unreadable" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert unreadable_warning("arrays", workdir).search(warnings[0]), warnings[0]

    def printed(step):
        """What the program prints with the model of checkpoint `step` alone."""
        alone = tmp_path / f"only_{step}"
        shutil.copytree(trained_workdir, alone)
        for other in steps_in(alone):
            if other != step:
                shutil.rmtree(alone / "checkpoints" / str(other))
        predictor = predict.load(str(alone))
        assert predictor.run.step == step
        run = predictor.run
        probabilities = predictor.predict(np.stack(
            [predict.read_image(p, run.input_shape, run.config.data.augment) for p in paths]))
        lines = []
        for path, p in zip(paths, probabilities):
            lines += [path] + [f"  {i}  {100 * p[i]:6.2f}%" for i in np.argsort(-p)[:3]]
        return "\n".join(lines) + "\n"

    assert result.stdout == printed(6)
    assert result.stdout != printed(8)   # the damaged step's own model would say otherwise


# ---- a full disk while writing metrics.jsonl and curves.png -----------------------------------

def test_a_full_disk_while_writing_metrics_keeps_the_rows_and_the_checkpoints(trained_workdir,
                                                                              tmp_path):
    workdir, fresh = tmp_path / "run", tmp_path / "fresh"
    shutil.copytree(trained_workdir, workdir)
    metrics = workdir / "metrics.jsonl"
    rows = metrics.read_bytes()
    args = (*QUICK, "--steps=12", "--log_every=5", "--checkpoint_every=2", "--keep_checkpoints=4")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        # Room for 20 more bytes of metrics.jsonl: the row of step 10 is cut off mid-write. (The
        # checkpoint of step 10, written after it, would not fit either: it is never begun.)
        full = pool.submit(program, "run", *args, f"--workdir={workdir}",
                           max_file_bytes=len(rows) + 20)
        # A new run's files of at most 400 bytes: its second row fits metrics.jsonl (~170 bytes
        # a row), not the TensorBoard event file (~300 bytes a row).
        events_full = pool.submit(program, "run", *QUICK, "--steps=20", "--log_every=5",
                                  f"--workdir={fresh}", max_file_bytes=400)
        full, events_full = full.result(), events_full.result()

    assert_one_line_error(full, f"error: [Errno 27] File too large: '{metrics}'")
    assert metrics.read_bytes() == rows   # no half row left for the next run to append to
    assert steps_in(workdir) == [2, 4, 6, 8]
    assert_one_line_error(events_full, f"error: [Errno 27] File too large: "
                                       f"'{fresh / 'tensorboard' / 'events.out.tfevents.'}")
    assert [r["step"] for r in read_metrics(fresh)] == [5, 10]   # whole rows

    resumed = program("run", *args, f"--workdir={workdir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 8" in resumed.stderr
    assert metrics.read_bytes().startswith(rows)
    assert [(r["split"], r["step"]) for r in read_metrics(workdir)][-3:] == [
        ("train", 10), ("train", 12), ("test", 12)]


def test_a_row_left_unfinished_by_an_earlier_writer_is_cut_off_before_the_next_one(tmp_path,
                                                                                   caplog):
    (tmp_path / "metrics.jsonl").write_text('{"split": "train", "step": 5}\n{"split": "tr')
    with caplog.at_level(logging.WARNING):
        writer = MetricWriter(str(tmp_path), total_steps=10, console=False)
    try:
        writer.write("train", 10, 0.2, {"loss": 1.0})
    finally:
        writer.close()
    assert (tmp_path / "metrics.jsonl").read_text() == (
        '{"split": "train", "step": 5}\n'
        '{"split": "train", "step": 10, "epoch": 0.2, "loss": 1.0}\n')
    assert "cutting off an unfinished last row (13 bytes)" in caplog.text


def test_a_full_disk_while_drawing_the_curves_names_the_file_and_keeps_the_figure(
        trained_workdir, tmp_path):
    """A finished run run again only evaluates and redraws curves.png, which does not fit: the
    error names it, and the previous figure stays whole (no truncated PNG, no temporary file)."""
    workdir = tmp_path / "run"
    shutil.copytree(trained_workdir, workdir)
    curves = workdir / "curves.png"
    figure = curves.read_bytes()
    result = program("run", *QUICK, "--steps=8", f"--workdir={workdir}",
                     max_file_bytes=len(figure) // 2)
    assert_one_line_error(result, f"error: [Errno 27] File too large: '{curves}'")
    assert curves.read_bytes() == figure
    assert not glob.glob(str(workdir / ".curves.png.*"))


# ---- a sweep: its records on a full disk, a killed run, two aggregates at once ----------------

SWEEP = (*QUICK, "--steps=2", "--log_every=1", "--axis=dropout=0.25,0.5")
REPORT = ("runs.csv", "summary.csv", "summary.md", "summary.png")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A finished sweep of 2 runs of 2 steps; returns (its directory, the launch's sweep.flags)."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sweep"
    result = program("ablate", *SWEEP, f"--workdir={sweep_dir}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    (flagfile,) = glob.glob(str(sweep_dir / "launches" / "*" / "sweep.flags"))
    return sweep_dir, flagfile


def temporary_files(root):
    """What `records.write_atomically` would leave behind if it did not clean up."""
    return [p for name in ("result.json", "failed.json", *REPORT)
            for p in glob.glob(os.path.join(glob.escape(str(root)), "**", f".{name}.*"),
                               recursive=True)]


def test_a_full_disk_while_writing_a_sweeps_records_keeps_what_was_written(sweep, tmp_path):
    sweep_dir, flagfile = sweep
    copies = {name: tmp_path / name for name in ("result", "failed", "report")}
    for copy in copies.values():
        shutil.copytree(sweep_dir, copy)
    run0, run1 = "dropout=0.25/seed=0", "dropout=0.5/seed=0"
    os.unlink(copies["result"] / run0 / "result.json")   # trained, its result not yet written
    os.unlink(copies["failed"] / run1 / "result.json")
    before = {name: contents(copy) for name, copy in copies.items()}

    def worker(name, *args):   # a sweep's job, as SLURM runs it
        return program("ablate", f"--flagfile={flagfile}", f"--workdir={copies[name]}", *args,
                       max_file_bytes=16, full_disk_from_first_record=True)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        result = pool.submit(worker, "result", "--run_index=0")
        # The run fails at once (30 is no multiple of the 8 devices), and so does its record.
        failed = pool.submit(worker, "failed", "--run_index=1", "--batch_size=30")
        result, failed = result.result(), failed.result()
    report = program("ablate", f"--flagfile={flagfile}", f"--workdir={copies['report']}",
                     "--aggregate", max_file_bytes=100)

    assert_one_line_error(result, f"error: [Errno 27] File too large: "
                                  f"'{copies['result'] / run0 / 'result.json'}'")
    assert_one_line_error(failed, f"error: run 1 ({run1}) failed: batch_size=30 must be a "
                                  f"positive multiple of the device count (8) (and its failed.json "
                                  f"could not be written: [Errno 27] File too large: "
                                  f"'{copies['failed'] / run1 / 'failed.json'}')")
    assert_one_line_error(report, f"error: [Errno 27] File too large: "
                                  f"'{copies['report'] / 'runs.csv'}'")
    for name, copy in copies.items():
        assert not temporary_files(copy), name
        after = contents(copy)
        # What was there is still there, byte for byte (the worker redrew its run's curves.png
        # and logged its TensorBoard events before it came to the record).
        changed = {p for p in before[name] if after.get(p) != before[name][p]}
        assert changed <= {f"{run0}/curves.png", f"{run0}/job.log"}, (name, changed)
    assert steps_in(copies["result"] / run0) == [2] and steps_in(copies["failed"] / run1) == [2]


def test_two_aggregates_at_once_leave_whole_equal_report_files(sweep, tmp_path):
    sweep_dir, flagfile = sweep
    copy = tmp_path / "sweep"
    shutil.copytree(sweep_dir, copy)
    for name in REPORT:
        os.unlink(copy / name)
    for attempt in range(2):   # from nothing, then over the files of the first attempt
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: program(
                "ablate", f"--flagfile={flagfile}", f"--workdir={copy}", "--aggregate"), range(2)))
        for result in results:
            assert result.returncode == 0, result.stderr[-3000:]
        assert results[0].stdout == results[1].stdout
        table = results[0].stdout.split("summary: ")[0]
        assert (copy / "summary.md").read_text() == table
        assert not temporary_files(copy)
        with open(copy / "runs.csv") as f:
            assert [(r["index"], r["status"]) for r in csv.DictReader(f)] == [
                ("0", "finished"), ("1", "finished")]
        with open(copy / "summary.csv") as f:
            assert [r["config"] for r in csv.DictReader(f)] == ["dropout=0.25", "dropout=0.5"]
        Image.open(copy / "summary.png").load()   # a whole PNG
    # The same records make the same files as the sweep's own last run wrote.
    for name in REPORT:
        assert (copy / name).read_bytes() == (sweep_dir / name).read_bytes(), name


def processes_with(*words):
    """PIDs of the processes whose command line holds every one of `words`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if all(word in cmdline for word in words):
            found.append(int(pid))
    return found


def test_a_sweep_run_killed_by_a_signal_is_recorded_as_failed_and_the_other_finishes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    # Run 1 would train for days: it is killed once its first metrics are written.
    args = (*QUICK, "--log_every=1", "--axis=steps=3,1000000", f"--workdir={sweep_dir}",
            "--parallel=2")
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        sweep = subprocess.Popen([sys.executable, "-m", "experiments.ablate", *args], cwd=REPO,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        endless = sweep_dir / "steps=1000000" / "seed=0"
        deadline = time.monotonic() + TIMEOUT_S
        while not (endless / "metrics.jsonl").exists():
            assert sweep.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        (pid,) = processes_with("experiments.ablate", "--run_index=1", str(sweep_dir))
        os.kill(pid, signal.SIGKILL)
        sweep.wait(timeout=TIMEOUT_S)
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    output = log.read_text()
    assert sweep.returncode == 1, output[-3000:]   # a run failed
    assert "Traceback" not in output, output[-3000:]
    reason = f"killed by signal 9 without a result (log: {endless / 'job.log'})"
    assert json.loads((endless / "failed.json").read_text())["reason"] == reason
    assert f"run 1 (steps=1000000/seed=0) failed: {reason}" in output
    assert json.loads((sweep_dir / "steps=3" / "seed=0" / "result.json").read_text())["steps"] == 3
    assert "run 0 (steps=3/seed=0) test top-1 " in output
    assert f"- steps=1000000, seed=0: {reason}" in (sweep_dir / "summary.md").read_text()
    assert "error: 1 run(s) failed" in output
    assert not processes_with("experiments.ablate", str(sweep_dir))   # nothing left running


# ---- a workdir the program may not write --------------------------------------------------------

def unprivileged_user():
    """`nobody`, or a reason to skip."""
    if os.geteuid() != 0:
        return None, "not root: cannot switch to another user (and a user's own files would do)"
    if shutil.which("setpriv") is None:
        return None, "no setpriv (util-linux) to run a program as another user"
    try:
        return pwd.getpwnam("nobody"), None
    except KeyError:
        return None, "no user 'nobody' here"


def test_a_workdir_without_write_permission_ends_with_one_line_and_keeps_the_run(
        trained_workdir, tmp_path):
    """Root ignores permissions, so the programs run as `nobody`: root's workdir is readable to
    it, not writable. Training there stops with one line and leaves the run as it was; predict
    reads it (loading writes nothing)."""
    user, why = unprivileged_user()
    if user is None:
        pytest.skip(why)
    workdir = tmp_path / "run"   # root's, mode 755
    shutil.copytree(trained_workdir, workdir)
    before = contents(workdir)
    home = tempfile.mkdtemp(dir="/tmp", prefix="jaxcnn-nobody-")   # matplotlib's cache, etc.
    os.chown(home, user.pw_uid, user.pw_gid)
    env = {**os.environ, "HOME": home,
           "JAXCNN_CACHE_DIR": os.environ.get("JAXCNN_CACHE_DIR",
                                              os.path.expanduser("~/.cache/jaxcnn"))}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)   # root's, 0700
    image = tmp_path / "digit.png"
    Image.fromarray(sources.digits_arrays("test", 32, 1)[0][0][..., 0]).save(image)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            resume = pool.submit(program, "run", *QUICK, "--steps=12", f"--workdir={workdir}",
                                 user=user, env=env)
            new = pool.submit(program, "run", *QUICK, "--steps=2", f"--workdir={workdir / 'new'}",
                              user=user, env=env)
            read = pool.submit(program, "predict", f"--workdir={workdir}", str(image), user=user,
                               env=env)
            resume, new, read = resume.result(), new.result(), read.result()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert_one_line_error(resume, f"error: [Errno 13] Permission denied: '{workdir}/")
    assert_one_line_error(new, f"error: [Errno 13] Permission denied: '{workdir / 'new'}'")
    assert read.returncode == 0 and read.stdout.startswith(f"{image}\n"), read.stderr[-3000:]
    assert contents(workdir) == before and not os.path.exists(workdir / "new")
