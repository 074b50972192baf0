"""What a sweep's folder says about each run. A run's own directory holds `result.json` once it has
finished or `failed.json` (with a one-line reason) once it has failed; neither means pending
(queued, running, preempted, or killed before it could say). Each file is written atomically and
only by its own run, so runs finishing at the same moment never touch each other's record.
Reading needs no JAX (`jaxcnn.ablation.result` writes a finished run's record).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

from jaxcnn.ablation.spec import Run, Sweep

RESULT_FILE, FAILED_FILE = "result.json", "failed.json"
FINISHED, FAILED, PENDING = "finished", "failed", "pending"


def write_atomically(path: str, contents: bytes | str) -> None:
    """Writes a file that readers see whole or not at all (a temporary file, then a rename): a
    failed write (a full disk, a missing permission) leaves the file as it was, removes the
    temporary one, and raises an OSError that names `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)   # its error names the directory
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    except OSError as e:
        raise OSError(e.errno, e.strerror, path) from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(contents.encode() if isinstance(contents, str) else contents)
        os.chmod(tmp, 0o644)   # mkstemp's 0600 would hide results from the rest of the lab
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError) and e.errno:   # the write's own error names no file
            raise OSError(e.errno, e.strerror, path) from e
        raise


@dataclasses.dataclass(frozen=True)
class Record:
    run: Run
    status: str
    data: dict          # result.json's or failed.json's content; {} when pending


def read(sweep_dir: str, run: Run) -> Record:
    for status, name in ((FINISHED, RESULT_FILE), (FAILED, FAILED_FILE)):
        path = os.path.join(sweep_dir, run.directory, name)
        if os.path.exists(path):
            with open(path) as f:
                return Record(run, status, json.load(f))
    return Record(run, PENDING, {})


def read_records(sweep_dir: str, sweep: Sweep) -> list[Record]:
    """Every run's record, in run order."""
    return [read(sweep_dir, run) for run in sweep.runs()]


def write_failure(sweep_dir: str, run: Run, reason: str) -> None:
    failure = {"index": run.index, "config": run.config, "seed": run.seed,
               "reason": " ".join(reason.split()), "failed_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_atomically(os.path.join(sweep_dir, run.directory, FAILED_FILE),
                     json.dumps(failure, indent=1))


def clear_failure(sweep_dir: str, run: Run) -> None:
    """Forgets a recorded failure (the run is being tried again)."""
    remove_if_present(os.path.join(sweep_dir, run.directory, FAILED_FILE))


def remove_if_present(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
