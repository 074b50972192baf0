"""Figures from metrics.jsonl: the curves of a run, and the comparison of an ablation sweep's runs."""
from __future__ import annotations

import os

from jaxcnn.metric_writers import read_metrics


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, workdir: str, filename: str) -> str:
    fig.suptitle(os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    path = os.path.join(workdir, filename)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def plot_curves(workdir: str, filename: str = "curves.png") -> str:
    rows = read_metrics(workdir)
    fig, (ax_loss, ax_acc) = _pyplot().subplots(1, 2, figsize=(10, 4))
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
    return _save(fig, workdir, filename)


def plot_sweep(workdir: str, results: list[dict], filename: str = "results.png") -> str:
    """Test top-1 per epoch of every run of a sweep (run "name" in workdir/name), then the final
    top-1 and the seconds per epoch of `results` (rows of `jaxcnn.ablation`) as bars."""
    fig, (ax_curves, ax_acc, ax_time) = _pyplot().subplots(1, 3, figsize=(13, 4))
    names = [r["run"] for r in results]
    for name in names:
        points = [r for r in read_metrics(os.path.join(workdir, name)) if r["split"] == "test"]
        ax_curves.plot([r["epoch"] for r in points], [100 * r["top1"] for r in points], "o-",
                       label=name)
    ax_acc.bar_label(ax_acc.bar(names, [100 * r["top1"] for r in results]), fmt="%.2f")
    ax_time.bar_label(ax_time.bar(names, [r["seconds_per_epoch"] for r in results],
                                  color="tab:orange"), fmt="%.1f")
    ax_curves.set(xlabel="epoch", ylabel="test top-1 (%)", title="test accuracy")
    ax_curves.legend()
    ax_acc.set(ylabel="test top-1 (%)", title="final test accuracy")
    ax_time.set(ylabel="seconds", title="training time per epoch")
    for ax in (ax_curves, ax_acc, ax_time):
        ax.grid(alpha=0.3)
        ax.margins(y=0.1)
    return _save(fig, workdir, filename)
