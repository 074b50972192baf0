"""What a sweep's folder says about each run. A run's own directory holds `result.json` once it has
finished or `failed.json` (with a one-line reason) once it has failed; neither means pending
(queued, running, preempted, or killed before it could say). Each file is written atomically and
only by its own run, so runs finishing at the same moment never touch each other's record.
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time

import jax

from jaxcnn import data, models, trainer
from jaxcnn.ablation.spec import Run
from jaxcnn.config import TrainConfig
from jaxcnn.metric_writers import read_metrics
from jaxcnn.models import kernels, summary

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


def write_result(run: Run, cfg: TrainConfig, state, metrics: dict) -> dict:
    """result.json, in the run's workdir, of a finished run: test metrics, size, cost and speed."""
    num_classes = data.dataset_info(cfg.data).num_classes
    model = models.create(cfg.model.name, num_classes, **cfg.model.options)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    rows = read_metrics(cfg.workdir)
    result = {"index": run.index, "config": run.config, "seed": run.seed,
              "overrides": dict(run.overrides), "model": cfg.model.name,
              "model_options": trainer.json_safe(cfg.model.options),
              "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
              "params": sum(p.size for p in jax.tree.leaves(state.params)),
              "flops_per_image": summary.flops_per_image(model, image_shape),
              "kernels": kernels.record(model, image_shape),
              "seconds_per_epoch": seconds_per_epoch(rows, cfg.data.batch_size),
              "epochs": max(r["epoch"] for r in rows if r["split"] == "test"),
              "steps": metrics["step"], "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_atomically(os.path.join(cfg.workdir, RESULT_FILE), json.dumps(result, indent=1))
    _remove(os.path.join(cfg.workdir, FAILED_FILE))
    return result


def write_failure(sweep_dir: str, run: Run, reason: str) -> None:
    failure = {"index": run.index, "config": run.config, "seed": run.seed,
               "reason": " ".join(reason.split()), "failed_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_atomically(os.path.join(sweep_dir, run.directory, FAILED_FILE),
                     json.dumps(failure, indent=1))


def clear_failure(sweep_dir: str, run: Run) -> None:
    """Forgets a recorded failure (the run is being tried again)."""
    _remove(os.path.join(sweep_dir, run.directory, FAILED_FILE))


def _remove(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)


def seconds_per_epoch(rows: list[dict], batch_size: int) -> float:
    """Training seconds per epoch at the median logged throughput: compilation, evaluation and
    checkpointing are left out, and a resumed run's rows count like the others."""
    train = [r for r in rows if r["split"] == "train"]
    steps_per_epoch = train[-1]["step"] / train[-1]["epoch"]
    return steps_per_epoch * batch_size / statistics.median(r["images_per_s"] for r in train)
