"""A finished run's record, `result.json`: its test metrics (the final ones and the mean top-1 of
its last evaluations) with its size, cost, speed and the kernels it ran (what `records.read` and
the report read back)."""
from __future__ import annotations

import json
import os
import statistics
import time

import jax

from jaxcnn import data, models, trainer
from jaxcnn.ablation import records
from jaxcnn.ablation.records import FAILED_FILE, RESULT_FILE, TOP1_LAST, remove_if_present, top1_last
from jaxcnn.ablation.spec import Run
from jaxcnn.config import TrainConfig
from jaxcnn.cpu import record
from jaxcnn.metrics_file import read_metrics
from jaxcnn.models import summary


def write_result(run: Run, cfg: TrainConfig, state, metrics: dict,
                 packed_with: tuple[int, ...] = ()) -> dict:
    """result.json, in the run's workdir, of a finished run: test metrics, size, cost and speed.
    packed_with: the indices of the other runs trained in one program with it (`jaxcnn.packing`);
    its seconds_per_epoch is then the pack's, in which all of them trained, not a standalone run's
    (result.json's `pack_size` and `packed_with` say so)."""
    num_classes = data.dataset_info(cfg.data).num_classes
    model = models.create(cfg.model.name, num_classes, **cfg.model.options)
    image_shape = (cfg.data.image_size, cfg.data.image_size, cfg.data.channels)
    rows = read_metrics(cfg.workdir)
    result = {"index": run.index, "config": run.config, "seed": run.seed,
              "overrides": dict(run.overrides), "model": cfg.model.name,
              "model_options": trainer.json_safe(cfg.model.options),
              "top1": metrics["top1"], TOP1_LAST: top1_last(rows), "top5": metrics["top5"],
              "loss": metrics["loss"],
              "params": sum(p.size for p in jax.tree.leaves(state.params)),
              "flops_per_image": summary.flops_per_image(model, image_shape),
              "kernels": record.record(model, image_shape, cfg.compute),
              "seconds_per_epoch": seconds_per_epoch(rows, cfg.data.batch_size),
              "pack_size": len(packed_with) + 1, "packed_with": list(packed_with),
              "epochs": max(r["epoch"] for r in rows if r["split"] == "test"),
              "steps": metrics["step"], "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
    records.write_atomically(os.path.join(cfg.workdir, RESULT_FILE), json.dumps(result, indent=1))
    remove_if_present(os.path.join(cfg.workdir, FAILED_FILE))
    return result


def seconds_per_epoch(rows: list[dict], batch_size: int) -> float:
    """Training seconds per epoch at the median logged throughput: compilation, evaluation and
    checkpointing are left out, and a resumed run's rows count like the others."""
    train = [r for r in rows if r["split"] == "train"]
    steps_per_epoch = train[-1]["step"] / train[-1]["epoch"]
    return steps_per_epoch * batch_size / statistics.median(r["images_per_s"] for r in train)
