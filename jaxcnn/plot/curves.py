"""The loss and top-1 curves of one run, train and test, from its metric rows."""
from __future__ import annotations

import io
import os

from matplotlib.figure import Figure

from jaxcnn.files import write_atomically
from jaxcnn.metrics_file import read_metrics


def curves_figure(rows: list[dict], title: str | None = None) -> Figure:
    """Loss (left) and top-1 accuracy in % (right) against the epoch, one line per split, from
    rows such as `metrics_file.read_metrics` or `runs.load(...).rows` gives."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for split, style in (("train", "-"), ("test", "o-")):
        points = [r for r in rows if r["split"] == split]
        epochs = [r["epoch"] for r in points]
        ax_loss.plot(epochs, [r["loss"] for r in points], style, label=split)
        ax_acc.plot(epochs, [100 * r["top1"] for r in points], style, label=f"{split} top-1")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="top-1 accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(workdir: str, filename: str = "curves.png") -> str:
    """Writes the curves of the run in `workdir` to `workdir/filename` (whole or not at all: a
    full disk keeps the previous figure and names the file); returns its path."""
    fig = curves_figure(read_metrics(workdir), os.path.basename(os.path.abspath(workdir)))
    image = io.BytesIO()
    fig.savefig(image, format=os.path.splitext(filename)[1][1:] or "png", dpi=100)
    path = os.path.join(workdir, filename)
    write_atomically(path, image.getvalue())
    return path
