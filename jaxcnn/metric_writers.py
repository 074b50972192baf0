"""Where metrics go: the console, TensorBoard event files and a JSON-lines file.

On the console a progress bar (tqdm.auto: text in a terminal, a widget in a notebook where
ipywidgets is installed, text otherwise) carries the latest training metrics, and each evaluation
is one plain line above it (on stdout). The same lines are also logged (absl), marked
`CONSOLE_SHOWN` so that a program's console handler can leave them to the log files, where they
keep absl's full form (see `experiments.cli.quiet`).

Only process 0 writes; every call takes plain Python floats already fetched from the device.
"""
from __future__ import annotations

import json
import os
import warnings

import jax
from absl import logging
from tqdm import TqdmWarning

with warnings.catch_warnings():
    # In a notebook without ipywidgets tqdm.auto warns, then draws its text bar (which also reads
    # well in a notebook saved with its outputs).
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

# `extra=` of log records whose text is on the console already.
CONSOLE_SHOWN = {"console_shown": True}


def format_metrics(metrics: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" if not k.startswith("top") else f"{k} {100 * v:.2f}%"
                     for k, v in metrics.items())


class MetricWriter:
    def __init__(self, workdir: str, total_steps: int):
        self.total_steps = total_steps
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = self.bar = None
        if self.active:
            try:
                from tensorboardX import SummaryWriter   # numpy/protobuf only: no TensorFlow
                self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                logging.warning("tensorboardX is not installed: metrics go to metrics.jsonl and "
                                "the figure only (pip install tensorboardX for TensorBoard logs)")

    def start(self, step: int) -> None:
        """Shows the progress bar from `step`, the step training starts (or resumes) from."""
        if self.active:
            self.bar = tqdm(total=self.total_steps, initial=step, unit="step", dynamic_ncols=True)

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
        line = (f"{split:<5} step {step}/{self.total_steps}  epoch {epoch:.2f}  "
                f"{format_metrics(metrics)}")
        logging.info("%s", line, extra=CONSOLE_SHOWN)
        self.bar.update(step - self.bar.n)
        if split == "train":
            shown = {k: metrics[k] for k in ("loss", "top1") if k in metrics}
            self.bar.set_postfix_str(f"epoch {epoch:.2f}  {format_metrics(shown)}")
        else:
            self.bar.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
    """The rows of metrics.jsonl in step order. A resumed run logs the steps after its last
    checkpoint a second time: the latest row of each (split, step) is the one kept. A last line
    without its newline is a row still being written by a running run, and is left out."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = {}
    with open(path) as f:
        for line in filter(str.strip, f.read().split("\n")[:-1]):
            row = json.loads(line)
            rows[row["split"], row["step"]] = row
    return sorted(rows.values(), key=lambda row: row["step"])
