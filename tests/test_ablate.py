"""`experiments.ablate` end to end on LeNet-5 and the embedded digits: one-line errors before
anything trains, local parallel runs equal to sequential ones, failures recorded and retried,
an interrupted run resumed, a sweep's folder alone naming its sweep (sweep.flags), and a job array
through a real one-node SLURM."""
import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from absl import flags

from experiments import ablate as _ablate, launchers, model_flags, sweep_flags, sweep_store  # noqa: F401
from jaxcnn import checkpoint, trainer
from jaxcnn.ablation import Sweep, Axis, records
from jaxcnn.cpu.policy import Compute
from jaxcnn.runs import load as load_run

from conftest import run_in_process, run_tolerances, runs_beyond_tolerance, standalone

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ("--batch_size=32", "--eval_batch_size=64", "--log_every=2", "--eval_every_epochs=0.1")


def ablate(*args, check=None, timeout=600, tiny=True):
    out = subprocess.run([sys.executable, "-m", "experiments.ablate", *(TINY if tiny else ()), *args],
                         cwd=REPO,
                         capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert out.returncode == check, out.stdout + out.stderr[-3000:]
    return out


def result(workdir, run_dir):
    with open(os.path.join(workdir, run_dir, "result.json")) as f:
        return json.load(f)


def metric_rows(workdir, run_dir):
    with open(os.path.join(workdir, run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if '"test"' in line]


@pytest.fixture
def parsed_flags():
    def parse(*args):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["prog", *TINY, *args])
    yield parse
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("args, message", [
    (("--axis=nonsense=1,2",), "no training or model flag is called 'nonsense'"),
    (("--axis=norm=batch,group",), "configuration norm=group: flag --norm=group"),
    (("--axis=optimizer=sgd,adam", "--momentum=0.8"),
     "configuration optimizer=adam: --momentum does not apply to --optimizer=adam"),
    (("--axis=factorize=none,9",), "configuration factorize=9:"),
    (("--axis=seed=1,2",), "seed cannot be an axis (use --seeds=N"),
    (("--axis=norm=batch,lrn", "--axis=factorize=none,2,3", "--combine=zip"),
     "zipped axes need the same number of values"),
    (("--axis=norm=batch,lrn", "--baseline=norm=none"), "--baseline=norm=none"),
])
def test_every_invalid_sweep_is_found_before_anything_trains(parsed_flags, tmp_path, args, message):
    parsed_flags(*args)
    with pytest.raises(ValueError) as error:
        sweep = sweep_flags.sweep_from_flags()
        sweep.baseline(flags.FLAGS.baseline)
        sweep_flags.check_configs(sweep, str(tmp_path))
    assert message in str(error.value)


def test_the_program_says_it_in_one_line_and_creates_nothing(tmp_path):
    out = ablate("--axis=optimizer=sgd,adam", "--momentum=0.8", f"--workdir={tmp_path / 'sweep'}",
                 check=1)
    assert out.stderr == ("error: configuration optimizer=adam: --momentum does not apply to "
                          "--optimizer=adam\n")
    assert not (tmp_path / "sweep").exists()


def test_list_shows_every_run_of_a_sweep_file_and_trains_nothing(tmp_path):
    out = ablate("--sweep_file=experiments/sweeps/normalization.flags", "--list",
                 f"--workdir={tmp_path}", check=0)
    lines = out.stdout.splitlines()
    assert lines[0] == f"9 runs: 3 configurations (grid of norm (3)) x 3 seeds, in {tmp_path}"
    assert lines[2].split() == ["0", "0", "pending", "norm=none"]
    assert lines[10].split() == ["8", "2", "pending", "norm=lrn"]
    assert os.listdir(tmp_path) == []


def finished_run(workdir, run_dir) -> dict:
    """A finished run of a sweep, as tests/conftest.py compares runs: its last checkpoint's
    parameters and batch statistics, its metric rows and its result.json."""
    run = load_run(os.path.join(workdir, run_dir))
    return {"state": run.variables, "rows": run.rows, "result": result(workdir, run_dir)}


def trained_here(cfg, tmp_path, name) -> dict:
    """`cfg` trained in this process, as `finished_run` gives a run."""
    run = standalone(cfg, tmp_path, name)
    return {**run, "state": {k: run["state"][k] for k in ("params", "batch_stats")}}


def assert_runs_equal_up_to_noise_floor(got, alone, cfg, tmp_path, wrong=None):
    """Sweep run `got` equals `alone`, the same run made another way, up to the noise floor that
    `cfg` (the run's config) trained here with cpu_kernels="off" measures against `alone`; `wrong`
    (a config a little off), where given, exceeds it (tests/conftest.py)."""
    off = dataclasses.replace(cfg, compute=Compute(cpu_kernels="off"))
    tol = run_tolerances(alone, trained_here(off, tmp_path, "off"))
    assert not runs_beyond_tolerance(got, alone, tol), runs_beyond_tolerance(got, alone, tol)
    if wrong is not None:
        assert runs_beyond_tolerance(trained_here(wrong, tmp_path, "wrong"), alone, tol)


def lr_off_by_1_percent(cfg):
    return dataclasses.replace(cfg, optim=dataclasses.replace(
        cfg.optim, learning_rate=cfg.optim.learning_rate * 1.01))


def test_two_parallel_runs_equal_the_same_runs_made_one_after_the_other(parsed_flags, tmp_path):
    """Each parallel run is pinned to its share of the cores (here one of two, the sequential
    ones to both): XLA's CPU thread pool, and with it how some ops split their sums, differs.
    So they are compared up to the measured noise floor, and a run with a learning rate 1% off
    exceeds it."""
    sweep = ("--axis=factorize=none,2", "--steps=6")
    parallel = ablate(*sweep, "--parallel=2", f"--workdir={tmp_path / 'parallel'}", check=0)
    sequential = ablate(*sweep, f"--workdir={tmp_path / 'sequential'}", check=0)
    # Both started before either finished: they really ran at the same time.
    assert parallel.stdout.index("run 1 started") < parallel.stdout.index("run 0 (")
    assert sequential.stdout.index("run 0 (") < sequential.stdout.index("run 1 started")
    parsed_flags(*sweep)
    for run in sweep_flags.sweep_from_flags().runs():
        a, b = (result(tmp_path / w, run.directory) for w in ("parallel", "sequential"))
        assert a["steps"] == b["steps"] == 6 and a["params"] == b["params"]
        assert len(metric_rows(tmp_path / "parallel", run.directory)) == 2
        cfg = sweep_flags.run_config(run, str(tmp_path / "here"))
        assert_runs_equal_up_to_noise_floor(
            finished_run(tmp_path / "parallel", run.directory),
            finished_run(tmp_path / "sequential", run.directory), cfg, tmp_path / run.directory,
            wrong=lr_off_by_1_percent(cfg) if run.index == 0 else None)
    assert (tmp_path / "parallel/summary.md").read_text().count("| 1 | 0 | 0 |") == 2
    assert "| factorize=2 | 1 | 0 | 0 |" in parallel.stdout


def test_a_failing_run_is_recorded_the_sweep_completes_and_only_it_is_retried(tmp_path):
    sweep = ("--optimizer=sgd", "--axis=learning_rate=0.01,1e12", "--steps=6",
             f"--workdir={tmp_path}")
    out = ablate(*sweep, check=1)
    assert "run 1 (learning_rate=1e12/seed=0) failed: non-finite loss or gradient" in out.stdout
    assert out.stderr.strip().splitlines()[-1].startswith("error: 1 run(s) failed")
    failure = json.loads((tmp_path / "learning_rate=1e12/seed=0/failed.json").read_text())
    assert failure["index"] == 1 and "non-finite" in failure["reason"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| learning_rate=0.01 | 1 | 0 | 0 |" in summary
    assert "| learning_rate=1e12 | 0 | 1 | 0 | – |" in summary   # counted, never averaged in
    assert "- learning_rate=1e12, seed=0: non-finite loss" in summary
    runs_csv = (tmp_path / "runs.csv").read_text().splitlines()
    assert runs_csv[0].startswith("learning_rate,index,config,seed,status,top1")
    assert [line.split(",")[4] for line in runs_csv[1:]] == ["finished", "failed"]

    finished = tmp_path / "learning_rate=0.01/seed=0/result.json"
    written = finished.stat().st_mtime_ns
    again = ablate(*sweep, check=1)          # submitted again: nothing pending, nothing trained
    assert "nothing to run" in again.stdout and "started" not in again.stdout
    retry = ablate(*sweep, "--retry_failed", check=1)
    assert "run 1 started" in retry.stdout and "run 0 started" not in retry.stdout
    assert finished.stat().st_mtime_ns == written


@pytest.mark.parametrize("how", ["full disk", "unwritable folder"])
@pytest.mark.parametrize("failure", ["the run's own", "its job's error", "killed"])
def test_a_failure_whose_failed_json_cannot_be_written_still_says_why_the_run_failed(
        parsed_flags, tmp_path, monkeypatch, capsys, failure, how):
    """Recording a failure can fail too: the program's one line (exit status 1) gives the run's
    own reason and then why its failed.json could not be written. In this process, with the
    training (or the launched job) standing in for itself."""
    parsed_flags("--axis=learning_rate=0.01,1e12", "--steps=6")
    sweep = sweep_flags.sweep_from_flags()
    run = sweep.runs()[1]
    run_dir = tmp_path / run.directory
    if how == "full disk":
        def full_disk(path, contents):   # what records.write_atomically raises on one
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        monkeypatch.setattr(records, "write_atomically", full_disk)
        error = f"[Errno 28] No space left on device: '{run_dir / 'failed.json'}'"
    else:   # a file where the run's folder would be (root writes wherever permissions say not)
        run_dir.parent.mkdir()
        run_dir.write_text("")
        error = f"[Errno 17] File exists: '{run_dir}'"
    if failure == "killed":
        def killed(launch, jobs, parallel, should_stop, on_exit):
            for indices, log in jobs:
                on_exit(indices, -signal.SIGKILL, log)
            return True
        monkeypatch.setattr(launchers, "run_local", killed)
        reason = f"killed by signal 9 without a result (log: {run_dir / 'job.log'})"
        start = lambda: _ablate.launch_local(str(tmp_path), [(run,)], None, lambda: False)
    else:
        reason = "non-finite loss or gradient at step 3; stopped with no last good checkpoint"

        def train_members(cfgs, should_stop):
            if failure == "its job's error":
                raise trainer.NonFiniteLossError(reason)
            return [trainer.Member(cfgs[0], failure=reason)]
        monkeypatch.setattr(trainer, "train_members", train_members)
        start = lambda: _ablate.train_runs(sweep, [run], str(tmp_path), lambda: False)
    with pytest.raises(SystemExit) as exit:
        start()
    assert exit.value.code == 1
    said = capsys.readouterr()
    line = (f"run 1 ({run.directory}) failed: {reason} (and its failed.json could not be written: "
            f"{error})")
    assert said.err == f"error: {line}\n"
    assert failure != "killed" or said.out == f"{line}\n"   # as the launcher says each run's end
    assert not os.path.exists(run_dir / "failed.json")


def test_a_run_resumes_from_its_checkpoint(parsed_flags, tmp_path):
    """An interrupted run (checkpoint at step 4, no result) continues, not restarts, when its index
    is run again, as a requeued SLURM job does."""
    parsed_flags("--axis=factorize=none,2", "--steps=4")
    run = Sweep((Axis("factorize", ("none", "2")),)).runs()[1]
    trainer.train_and_evaluate(sweep_flags.run_config(run, str(tmp_path)))
    out = ablate("--axis=factorize=none,2", "--steps=8", "--run_index=1", f"--workdir={tmp_path}",
                 check=0)
    assert "resumed from step 4" in out.stderr
    train_steps = [json.loads(line)["step"] for line in open(tmp_path / "factorize=2/seed=0/metrics.jsonl")
                   if '"train"' in line]
    assert train_steps == sorted(set(train_steps)) and train_steps[-1] == 8
    resumed = result(tmp_path, "factorize=2/seed=0")
    assert resumed["steps"] == 8 and resumed["pack_size"] == 1 and resumed["packed_with"] == []
    assert not (tmp_path / "summary.md").exists()   # run 0 is still pending


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """A finished sweep of two configurations, launched once for the tests that read it."""
    workdir = tmp_path_factory.mktemp("finished") / "sweep"
    ablate("--axis=norm=none,batch", "--steps=2", f"--workdir={workdir}", check=0)
    return workdir


def tree(directory):
    """Every file under `directory` with its modification time."""
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(directory) for f in files}


def test_the_folder_alone_names_its_sweep(finished_sweep):
    stored = (finished_sweep / "sweep.flags").read_text()
    assert "\n--axis=norm=none,batch\n" in stored and "\n--steps=2\n" in stored
    assert stored.count("# launch: launches/") == 1
    before = tree(finished_sweep)
    rows = ("| norm=none | 1 | 0 | 0 |", "| norm=batch | 1 | 0 | 0 |")
    out = ablate("--aggregate", f"--workdir={finished_sweep}", tiny=False, check=0)
    summary = (finished_sweep / "summary.md").read_text()
    assert all(row in summary and row in out.stdout for row in rows) and "| base |" not in summary
    listed = ablate("--list", f"--workdir={finished_sweep}", tiny=False, check=0).stdout
    lines = listed.splitlines()
    assert lines[0].startswith("2 runs: 2 configurations (grid of norm (2)) x 1 seeds")
    assert [line.split() for line in lines[2:]] == [["0", "0", "finished", "norm=none"],
                                                    ["1", "0", "finished", "norm=batch"]]
    for again in ((), ("--retry_failed",)):   # a resubmission: nothing trains, nothing launches
        out = ablate(*again, f"--workdir={finished_sweep}", tiny=False, check=0)
        assert "nothing to" in out.stdout and "started" not in out.stdout
    after = tree(finished_sweep)
    assert set(after) == set(before)   # no new run, launch or base/ directory
    assert all(after[f] == t for f, t in before.items() if "summary" not in f and "runs.csv" not in f)


def test_a_contradicting_flag_stops_with_one_line_and_writes_nothing(finished_sweep, capsys):
    """In this process (`main`): what the program says and leaves."""
    def ablate(*args, check):
        out = run_in_process(capsys, _ablate.main, *TINY, *args, parse=_ablate.parse_flags)
        assert out.returncode == check, out.stdout + out.stderr[-3000:]
        return out

    before = tree(finished_sweep)
    out = ablate("--axis=norm=batch,lrn", f"--workdir={finished_sweep}", check=1)
    assert out.stderr == (f"error: {finished_sweep} holds another sweep (stored in "
                          f"{finished_sweep}/sweep.flags): --axis=norm=batch,lrn (the sweep has "
                          f"--axis=norm=none,batch; values can only be added after these); name "
                          f"another --workdir, or leave these flags out to use the stored ones\n")
    out = ablate("--aggregate", "--axis=factorize=none,2", "--combine=zip", "--steps=3",
                 f"--workdir={finished_sweep}", check=1)
    assert len(out.stderr.splitlines()) == 1 and out.stdout == ""
    for difference in ("--steps=3 (the sweep has --steps=2)",
                       "--axis=factorize=none,2 (the sweep has no axis factorize; its axes: norm)",
                       "--combine=zip (the sweep has --combine=grid)"):
        assert difference in out.stderr
    assert tree(finished_sweep) == before


def test_adding_a_seed_trains_only_the_new_runs(finished_sweep, tmp_path):
    shutil.copytree(finished_sweep, tmp_path / "sweep")   # another folder: the stored --workdir
    workdir = tmp_path / "sweep"                           # is not read back
    finished = [workdir / f"norm={n}/seed=0/result.json" for n in ("none", "batch")]
    written = [f.stat().st_mtime_ns for f in finished]
    out = ablate("--seeds=2", f"--workdir={workdir}", tiny=False, check=0)
    assert f"adding to the sweep in {workdir}: seed(s) 1\n" in out.stdout
    assert "run 2 started" in out.stdout and "run 3 started" in out.stdout
    assert "run 0 started" not in out.stdout and "run 1 started" not in out.stdout
    assert [f.stat().st_mtime_ns for f in finished] == written
    for n in ("none", "batch"):   # trained with the stored base flags
        assert result(workdir, f"norm={n}/seed=1")["steps"] == 2
    summary = (workdir / "summary.md").read_text()
    assert "| norm=none | 2 | 0 | 0 |" in summary and "| norm=batch | 2 | 0 | 0 |" in summary
    stored = (workdir / "sweep.flags").read_text()
    assert "\n--seeds=2\n" in stored and stored.count("# launch: launches/") == 2


def test_a_sweep_launched_before_sweep_flags_uses_its_newest_launch(finished_sweep, tmp_path):
    shutil.copytree(finished_sweep, tmp_path / "sweep")
    workdir = tmp_path / "sweep"
    (workdir / "sweep.flags").unlink()
    out = ablate("--aggregate", f"--workdir={workdir}", tiny=False, check=0)
    assert "using its newest launch's" in out.stdout
    assert "| norm=none | 1 | 0 | 0 |" in out.stdout and "| norm=batch | 1 | 0 | 0 |" in out.stdout


@pytest.mark.parametrize("args, tiny", [(("--aggregate",), False), (("--aggregate",), True),
                                        (("--list",), False)])
def test_a_folder_that_is_no_sweep_is_left_alone(tmp_path, capsys, args, tiny):
    """What the program says, in this process (`main`; the process itself: the test above)."""
    for workdir in (tmp_path, tmp_path / "missing"):
        out = run_in_process(capsys, _ablate.main, *(TINY if tiny else ()), *args,
                             f"--workdir={workdir}", parse=_ablate.parse_flags)
        assert out.returncode == 1, out.stderr
        assert out.stderr.startswith(f"error: {workdir} ") and len(out.stderr.splitlines()) == 1
        assert "no sweep.flags and no run records" in out.stderr
    assert os.listdir(tmp_path) == []


def test_added_axis_values_keep_directories_and_say_which_indices_move(parsed_flags, tmp_path,
                                                                       capsys):
    (tmp_path / "sweep.flags").write_text("\n".join(TINY) + "\n--steps=3\n--axis=norm=none,batch\n"
                                          "--seeds=2\n--workdir=/elsewhere\n--debug\n")
    parsed_flags("--axis=norm=none,batch,lrn", "--momentum=0.9")   # 0.9: the default
    sweep_store.adopt(str(tmp_path))
    said = capsys.readouterr().out
    assert said.startswith(f"adding to the sweep in {tmp_path}: norm value(s) lrn (2 existing run(s) "
                           f"keep their directories")
    assert flags.FLAGS.axis == ["norm=none,batch,lrn"] and flags.FLAGS.seeds == 2
    assert flags.FLAGS.steps == 3 and not flags.FLAGS.debug and flags.FLAGS.workdir != "/elsewhere"
    assert not model_flags.was_set("momentum")   # as in the stored sweep


def test_a_packed_sweep_groups_packable_runs_and_equals_standalone_runs(parsed_flags, tmp_path):
    """--pack=4 over norm (not packable) x learning rate (packable): two jobs of two runs, one
    per norm, each run the same run as trained alone (here, in this process); each result.json
    names the runs it was packed with and gives their pack's seconds per epoch."""
    sweep = ("--axis=norm=none,batch", "--axis=learning_rate=0.001,0.003", "--steps=4")
    listed = ablate(*sweep, "--pack=4", "--list", f"--workdir={tmp_path / 'packed'}", check=0)
    assert listed.stdout.splitlines()[-3:] == ["--pack=4: 2 jobs for the runs to launch",
                                               "    0  runs 0,1", "    1  runs 2,3"]
    packed = ablate(*sweep, "--pack=4", f"--workdir={tmp_path / 'packed'}", check=0)
    assert packed.stdout.count(" started on ") == 2 and "run 0,1 started" in packed.stdout
    parsed_flags(*sweep)
    runs = sweep_flags.sweep_from_flags().runs()
    assert [run.directory for run in runs] == [
        f"norm={norm},learning_rate={lr}/seed=0" for norm in ("none", "batch")
        for lr in ("0.001", "0.003")]
    for run in runs:
        cfg = sweep_flags.run_config(run, str(tmp_path / "alone"))
        alone = trained_here(cfg, tmp_path / run.directory, "alone")
        a = result(tmp_path / "packed", run.directory)
        assert a["steps"] == alone["result"]["step"] == 4
        # A member and its run alone: the same arithmetic in another order (tests/test_packing.py).
        assert_runs_equal_up_to_noise_floor(
            finished_run(tmp_path / "packed", run.directory), alone, cfg, tmp_path / run.directory,
            wrong=lr_off_by_1_percent(cfg) if run.index == 0 else None)
        partner = runs[run.index ^ 1]   # 0 and 1, 2 and 3
        assert a["pack_size"] == 2 and a["packed_with"] == [partner.index]
        assert a["seconds_per_epoch"] == result(tmp_path / "packed",
                                                partner.directory)["seconds_per_epoch"]
    assert (tmp_path / "packed/summary.md").read_text().count("| 1 | 0 | 0 |") == 4
    again = ablate("--pack=4", f"--workdir={tmp_path / 'packed'}", check=0)
    assert "nothing to run" in again.stdout


def test_sigterm_checkpoints_every_member_of_a_packed_job_and_the_same_command_resumes_them(
        tmp_path):
    command = [sys.executable, "-m", "experiments.ablate", *TINY, "--seeds=2", "--pack=2",
               "--steps=80", f"--workdir={tmp_path}"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.time() + 300
    while not os.path.exists(tmp_path / "base/seed=1/metrics.jsonl"):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, output[-3000:]
    assert "run 0,1 started" in output and "stopped: the running runs checkpointed" in output
    saved = [saved_steps(tmp_path / f"base/seed={s}") for s in (0, 1)]
    assert saved[0] == saved[1] and 0 < saved[0][-1] < 80
    assert not os.path.exists(tmp_path / "base/seed=0/result.json")
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    log = (tmp_path / "base/seed=0/job.log").read_text()
    assert f"resumed 2 members from step {saved[0][-1]}" in log
    assert [result(tmp_path, f"base/seed={s}")["steps"] for s in (0, 1)] == [80, 80]


def saved_steps(run_dir):
    return checkpoint.saved_steps(os.path.join(run_dir, "checkpoints"))


def test_a_packed_sweeps_sbatch_script_gives_each_array_task_its_runs(tmp_path):
    launch = launchers.Launch(str(tmp_path))
    script = launchers.sbatch_script(launch, [(0, 1, 4, 5), (2, 3, 6, 7)], "s",
                                     launchers.SlurmResources())
    assert "#SBATCH --array=0,1\n" in script
    assert '--run_index="${jobs[$SLURM_ARRAY_TASK_ID]}"' in script
    listing = next(line for line in script.splitlines() if line.startswith("jobs=("))
    for task, runs in ((0, "0,1,4,5"), (1, "2,3,6,7")):
        out = subprocess.run(["bash", "-c", f'{listing}\necho "${{jobs[{task}]}}"'],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == runs
    unpacked = launchers.sbatch_script(launch, [(3,), (5,)], "s", launchers.SlurmResources())
    assert "#SBATCH --array=3,5\n" in unpacked and "jobs=(" not in unpacked


def slurm_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    return out.returncode == 0 and any(s.startswith(("idle", "mix")) for s in out.stdout.split())


@pytest.mark.skipif(not slurm_up(), reason="no SLURM here: scripts/start_local_slurm.sh starts one")
def test_a_sweep_runs_as_a_slurm_job_array_from_its_snapshot(tmp_path):
    sweep = ("--axis=factorize=none,2", "--steps=4", f"--workdir={tmp_path}", "--launcher=slurm",
             "--slurm_cpus_per_run=1", "--slurm_sbatch=--hold")
    out = ablate(*sweep, check=0)
    job = out.stdout.split("SLURM job array ")[1].split()[0]
    launch = next((tmp_path / "launches").iterdir())
    script = (launch / "sweep.sbatch").read_text()
    assert "#SBATCH --array=0,1\n" in script and "#SBATCH --requeue\n" in script
    assert f'--flagfile={launch}/sweep.flags --run_index="$SLURM_ARRAY_TASK_ID"' in script
    assert "--aggregate" in out.stdout and f"squeue -j {job}" in out.stdout
    # The held jobs must run the code as submitted: mark the snapshot, then release them.
    snapshot = launch / "code/experiments/ablate.py"
    snapshot.write_text('import sys; print("ran the snapshot", file=sys.stderr)\n' +
                        snapshot.read_text())
    subprocess.run(["scontrol", "release", job], check=True)
    deadline = time.time() + 400
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        assert time.time() < deadline, "the SLURM jobs did not finish in time"
        time.sleep(2)
    logs = [(launch / "logs" / f"{job}_{i}.out").read_text() for i in (0, 1)]
    assert all("ran the snapshot" in log for log in logs), logs[0][-2000:]
    for run_dir in ("factorize=none/seed=0", "factorize=2/seed=0"):
        assert result(tmp_path, run_dir)["steps"] == 4
    # The last job to finish wrote the summary; nobody called --aggregate.
    summary = (tmp_path / "summary.md").read_text()
    assert "| factorize=none | 1 | 0 | 0 |" in summary and "| factorize=2 | 1 | 0 | 0 |" in summary
    again = ablate(*sweep[:-1], check=0)     # submitted again: every run is finished
    assert "nothing to run" in again.stdout and "submitted" not in again.stdout
