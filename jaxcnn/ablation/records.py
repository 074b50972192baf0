"""What a sweep's folder says about each run. A run's own directory holds `result.json` once it has
finished or `failed.json` (with a one-line reason) once it has failed; neither means pending
(queued, running, preempted, or killed before it could say). Each file is written atomically and
only by its own run, so runs finishing at the same moment never touch each other's record.
Reading needs no JAX (`jaxcnn.ablation.result` writes a finished run's record).
A finished run's `top1_last5` (the mean test top-1 of its last evaluations) is read from its
metrics.jsonl when its result.json was written before the field was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time

from jaxcnn.ablation.spec import Run, Sweep
from jaxcnn.files import write_atomically
from jaxcnn.metrics_file import read_metrics

RESULT_FILE, FAILED_FILE = "result.json", "failed.json"
FINISHED, FAILED, PENDING = "finished", "failed", "pending"
LAST_EVALS = 5
TOP1_LAST = f"top1_last{LAST_EVALS}"   # result.json's field: see `top1_last`


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
                data = json.load(f)
            if status == FINISHED and TOP1_LAST not in data:   # written by an older jaxcnn
                data[TOP1_LAST] = top1_last(read_metrics(os.path.join(sweep_dir, run.directory)))
            return Record(run, status, data)
    return Record(run, PENDING, {})


def top1_last(rows: list[dict]) -> float:
    """The mean test top-1 of the last LAST_EVALS test evaluations among a run's metrics.jsonl
    `rows` (fewer if it made fewer; nan if none), so that one noisy last evaluation does not decide
    a comparison on its own."""
    top1 = [r["top1"] for r in rows if r["split"] == "test"][-LAST_EVALS:]
    return sum(top1) / len(top1) if top1 else math.nan


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
