"""Where a sweep's runs execute. Each run is one job, `python -m experiments.ablate
--flagfile=LAUNCH/sweep.flags --run_index=I` (with --pack, several runs one job, `--run_index=I,J`),
run from a snapshot of the code taken at launch
(`LAUNCH/code`, as pycls's sweep launcher does), so that a queued job trains the code that was
submitted, not whatever the checkout holds when the job starts.

- `local`: K jobs at once on this machine, each with its share of the GPUs
  (CUDA_VISIBLE_DEVICES) or, without GPUs, of the CPU cores (its CPU affinity).
- `slurm`: one SLURM job array through an sbatch script written into LAUNCH. A plain script
  rather than submitit: it is a file a person can read, edit and submit again by hand
  (`sbatch --array=3,5 LAUNCH/sweep.sbatch`), SLURM alone requeues and signals it, and no
  pickled function crosses to the compute node (nothing this codebase loads executes code).
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Callable

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = ("jaxcnn", "experiments")


@dataclasses.dataclass(frozen=True)
class Launch:
    """One submission of a sweep: LAUNCH = SWEEP/launches/<time>."""
    directory: str

    @classmethod
    def create(cls, sweep_dir: str, flagfile_text: str) -> "Launch":
        directory = os.path.join(sweep_dir, "launches", time.strftime("%Y%m%d-%H%M%S"))
        while os.path.exists(directory):   # two launches within a second
            directory += "+"
        for package in SNAPSHOT:
            shutil.copytree(os.path.join(REPO, package), os.path.join(directory, "code", package),
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        with open(os.path.join(directory, "sweep.flags"), "w") as f:
            f.write(flagfile_text)
        return cls(directory)

    @property
    def flagfile(self) -> str:
        return os.path.join(self.directory, "sweep.flags")

    def command(self, indices: tuple[int, ...] | None, extra: tuple[str, ...] = ()) -> list[str]:
        """The job's command line for runs `indices` (one run, or several packed; without
        --run_index when None). `-P` keeps the working directory off sys.path, so the snapshot
        on PYTHONPATH is imported even when the job starts in the checkout."""
        command = [sys.executable, "-P", "-m", "experiments.ablate", f"--flagfile={self.flagfile}",
                   *extra]
        return command if indices is None else [*command,
                                                f"--run_index={','.join(map(str, indices))}"]

    def environment(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": os.path.join(self.directory, "code")}


# --- local ---------------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs this process may hand out: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists.
    (Asking JAX would make this process claim the GPUs' memory.)"""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return [d for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(listed.stdout.splitlines()) if line.startswith("GPU")]


@dataclasses.dataclass(frozen=True)
class Share:
    """What one of K concurrent local jobs gets: some GPUs, or some CPU cores."""
    gpus: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()

    def __str__(self):
        return f"GPUs {','.join(self.gpus)}" if self.gpus else f"cores {','.join(map(str, self.cores))}"


def device_shares(parallel: int) -> list[Share]:
    """Splits the local GPUs (or, without GPUs, the CPU cores) evenly over `parallel` jobs."""
    gpus = visible_gpus()
    items = gpus or sorted(os.sched_getaffinity(0))
    kind = "GPUs" if gpus else "CPU cores"
    if parallel > len(items):
        raise ValueError(f"--parallel={parallel} is more than the {len(items)} {kind} here")
    size = len(items) // parallel
    chunks = [tuple(items[k * size:(k + 1) * size]) for k in range(parallel)]
    return [Share(gpus=c) if gpus else Share(cores=c) for c in chunks]


def run_local(launch: Launch, jobs: list[tuple[tuple[int, ...], str]], parallel: int,
              should_stop: Callable[[], bool],
              on_exit: Callable[[tuple[int, ...], int, str], None]) -> bool:
    """Runs `jobs` ((run indices, log file) pairs) `parallel` at a time, each on its own share of
    the devices; `on_exit(indices, exit status, log file)` as each ends. A stop request (SIGTERM) is passed
    on to the running jobs, which checkpoint and exit; no new job starts. Returns False if stopped."""
    free, queue, running = device_shares(parallel), list(jobs), {}
    stopping = False
    while queue or running:
        if should_stop() and not stopping:
            stopping = True
            queue.clear()
            for process, *_ in running.values():
                process.send_signal(signal.SIGTERM)
        while queue and free:
            (index, log), share = queue.pop(0), free.pop(0)
            os.makedirs(os.path.dirname(log), exist_ok=True)
            env = launch.environment()
            if share.gpus:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(share.gpus)
            # taskset rather than a preexec_fn: forking this (multithreaded, JAX) process to run
            # Python code in the child is what JAX warns may deadlock.
            pin = ["taskset", "-c", ",".join(map(str, share.cores))] if share.cores else []
            with open(log, "ab") as out:
                process = subprocess.Popen([*pin, *launch.command(index)], env=env, stdout=out,
                                           stderr=subprocess.STDOUT)
            print(f"run {','.join(map(str, index))} started on {share} (log: {log})", flush=True)
            running[process.pid] = (process, index, log, share)
        time.sleep(0.2)
        for pid, (process, index, log, share) in list(running.items()):
            if process.poll() is not None:
                del running[pid]
                free.append(share)
                on_exit(index, process.returncode, log)
    return not stopping


# --- SLURM ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SlurmResources:
    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    nodes_per_run: int = 1
    time: str | None = None           # SLURM's format, e.g. "24:00:00"
    max_running: int = 0              # runs at once (the array's %N); 0: no limit
    extra: tuple[str, ...] = ()       # further sbatch options, e.g. "--account=lab"


def sbatch_script(launch: Launch, jobs: list[tuple[int, ...]], name: str,
                  res: SlurmResources) -> str:
    """One array task per job: task I trains run I, or, when runs are packed, task k trains the
    runs of the k-th job (the script's `jobs` list)."""
    packed = any(len(job) > 1 for job in jobs)
    tasks = range(len(jobs)) if packed else [job[0] for job in jobs]
    array = ",".join(map(str, tasks)) + (f"%{res.max_running}" if res.max_running else "")
    options = [f"--job-name={name}", f"--array={array}",
               f"--output={os.path.join(launch.directory, 'logs', '%A_%a.out')}",
               f"--nodes={res.nodes_per_run}", "--ntasks-per-node=1",
               f"--cpus-per-task={res.cpus_per_run}",
               # Preemption requeues the run, which resumes from its checkpoint; near the time
               # limit SIGTERM makes it checkpoint and exit (submit again to continue).
               "--requeue", "--open-mode=append",
               "--signal=B:TERM@120" if res.nodes_per_run == 1 else "--signal=TERM@120"]
    if res.partition:
        options.append(f"--partition={res.partition}")
    if res.gpus_per_run:
        options.append(f"--gres=gpu:{res.gpus_per_run}")
    if res.time:
        options.append(f"--time={res.time}")
    options += res.extra
    if res.nodes_per_run > 1:   # one process per node, joined by jax.distributed from SLURM's env
        command = "srun " + shlex.join(launch.command(None, ("--distributed_from_env",)))
    else:
        command = "exec " + shlex.join(launch.command(None))
    if packed:
        command += ' --run_index="${jobs[$SLURM_ARRAY_TASK_ID]}"'
        listing = [f"jobs=({' '.join(','.join(map(str, job)) for job in jobs)})   "
                   f"# the runs each array task trains packed"]
    else:
        command += ' --run_index="$SLURM_ARRAY_TASK_ID"'
        listing = []
    return "\n".join(["#!/bin/bash", *(f"#SBATCH {o}" for o in options), "",
                      f"cd {shlex.quote(os.getcwd())}",
                      f"export PYTHONPATH={shlex.quote(os.path.join(launch.directory, 'code'))}",
                      *listing, command, ""])


def submit_slurm(launch: Launch, jobs: list[tuple[int, ...]], name: str,
                 res: SlurmResources) -> str:
    """Writes LAUNCH/sweep.sbatch and submits it; returns the array's job id at once."""
    if shutil.which("sbatch") is None:
        raise ValueError("--launcher=slurm: sbatch is not on PATH (run this on a SLURM login node)")
    path = os.path.join(launch.directory, "sweep.sbatch")
    with open(path, "w") as f:
        f.write(sbatch_script(launch, jobs, name, res))
    os.makedirs(os.path.join(launch.directory, "logs"), exist_ok=True)
    out = subprocess.run(["sbatch", "--parsable", path], capture_output=True, text=True)
    if out.returncode != 0:
        raise ValueError(f"sbatch {path} failed: {' '.join(out.stderr.split())}")
    return out.stdout.strip().split(";")[0]
