"""Where metrics go: the console (a progress line), TensorBoard event files and a JSON-lines file.

Only process 0 writes; every call takes plain Python floats already fetched from the device.
"""
from __future__ import annotations

import json
import os

import jax
from absl import logging


def progress_bar(fraction: float, width: int = 20) -> str:
    done = int(round(width * min(max(fraction, 0.0), 1.0)))
    return "[" + "#" * done + "-" * (width - done) + "]"


class MetricWriter:
    def __init__(self, workdir: str, total_steps: int):
        self.total_steps = total_steps
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = None
        if self.active:
            try:
                from tensorboardX import SummaryWriter   # numpy/protobuf only: no TensorFlow
                self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                logging.warning("tensorboardX is not installed: metrics go to metrics.jsonl and "
                                "the figure only (pip install tensorboardX for TensorBoard logs)")

    def write(self, split: str, step: int, epoch: float, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"split": split, "step": step, "epoch": round(epoch, 4),
                                **{k: float(v) for k, v in metrics.items()}}) + "\n")
        if self.tb is not None:
            for name, value in metrics.items():
                self.tb.add_scalar(f"{split}/{name}", value, step)
            self.tb.flush()
        shown = "  ".join(f"{k} {v:.4g}" if not k.startswith("top") else f"{k} {100 * v:.2f}%"
                          for k, v in metrics.items())
        logging.info("%s %s step %d/%d epoch %.2f  %s", split.ljust(5),
                     progress_bar(step / self.total_steps), step, self.total_steps, epoch, shown)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The rows of metrics.jsonl in step order. A resumed run logs the steps after its last
    checkpoint a second time: the latest row of each (split, step) is the one kept."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path) as f:
        for line in filter(str.strip, f):
            row = json.loads(line)
            rows[row["split"], row["step"]] = row
    return sorted(rows.values(), key=lambda row: row["step"])
