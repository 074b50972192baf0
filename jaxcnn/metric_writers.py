"""Where metrics go: the console, TensorBoard event files and a JSON-lines file.

On the console a progress bar (tqdm.auto: text in a terminal, a widget in a notebook where
ipywidgets is installed, text otherwise) carries the latest training metrics, and each evaluation
is one plain line above it (on stdout). The same lines are also logged (absl), marked
`CONSOLE_SHOWN` so that a program's console handler can leave them to the log files, where they
keep absl's full form (see `experiments.cli.quiet`).

A write that fails (a full disk, a missing permission) raises an OSError naming the file, and
leaves what was written before as it was: metrics.jsonl gets whole rows or nothing.

Only process 0 writes; every call takes plain Python floats already fetched from the device. The
members of a packed run write a writer each; only the first shows its progress on the console.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
import warnings

import jax
from absl import logging
from tqdm import TqdmWarning

from jaxcnn.metrics_file import append_row, cut_unfinished_row

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
    def __init__(self, workdir: str, total_steps: int, console: bool = True):
        self.total_steps = total_steps
        self.active = jax.process_index() == 0
        self.console = console
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.tb = self.bar = None
        if self.active:
            cut_unfinished_row(self.path)
            try:
                self.tb = EventFile(os.path.join(workdir, "tensorboard"))
            except ImportError:
                logging.warning("tensorboardX is not installed: metrics go to metrics.jsonl and "
                                "the figure only (pip install tensorboardX for TensorBoard logs)")

    def start(self, step: int) -> None:
        """Shows the progress bar from `step`, the step training starts (or resumes) from."""
        if self.active and self.console:
            self.bar = tqdm(total=self.total_steps, initial=step, unit="step", dynamic_ncols=True)

    def write(self, split: str, step: int, epoch: float, metrics: dict[str, float]) -> None:
        if not self.active:
            return
        append_row(self.path, {"split": split, "step": step, "epoch": round(epoch, 4),
                               **{k: float(v) for k, v in metrics.items()}})
        if self.tb is not None:
            self.tb.write(step, {f"{split}/{name}": value for name, value in metrics.items()})
        line = (f"{split:<5} step {step}/{self.total_steps}  epoch {epoch:.2f}  "
                f"{format_metrics(metrics)}")
        if self.bar is None:   # not on the console: the log alone
            logging.info("%s: %s", os.path.dirname(self.path), line)
            return
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


class EventFile:
    """TensorBoard scalars in a new event file of `logdir`, written by tensorboardX's record
    writer (numpy/protobuf only: no TensorFlow) in the calling thread. (tensorboardX's
    SummaryWriter writes from a thread of its own: a full disk there ended the program with an
    error naming no file, then tracebacks of that thread and of its exit handler.)"""

    def __init__(self, logdir: str):
        from tensorboardX.proto import event_pb2
        from tensorboardX.record_writer import RecordWriter
        from tensorboardX.summary import scalar
        self._event, self._scalar = event_pb2.Event, scalar
        os.makedirs(logdir, exist_ok=True)
        name = os.path.join(logdir, f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}")
        self.path, n = name, 1
        while os.path.exists(self.path):   # another writer started within the same second
            self.path, n = f"{name}.{n}", n + 1
        self._records = None
        with self._errors():
            self._records = RecordWriter(self.path)
            self._records.write(self._event(wall_time=time.time(),
                                            file_version="brain.Event:2").SerializeToString())

    def write(self, step: int, scalars: dict[str, float]) -> None:
        """One event per scalar, then a flush to disk."""
        if self._records is None:   # closed, or failed before
            return
        with self._errors():
            for tag, value in scalars.items():
                self._records.write(self._event(wall_time=time.time(), step=step,
                                                summary=self._scalar(tag, value))
                                    .SerializeToString())
            self._records.flush()

    @contextlib.contextmanager
    def _errors(self):
        """A failed write as an OSError naming the file; the file is closed, dropping what could
        not be written (so that nothing tries again at exit)."""
        try:
            yield
        except OSError as e:
            records, self._records = self._records, None
            if records is not None:
                with contextlib.suppress(OSError):   # closed all the same
                    records.close()
            raise OSError(e.errno, e.strerror, self.path) from e

    def close(self) -> None:
        if self._records is not None:
            with self._errors():
                self._records.close()
            self._records = None
