"""The figure of a run: train and test loss and accuracy against epochs, from metrics.jsonl."""
from __future__ import annotations

import os

from jaxcnn.metric_writers import read_metrics


def plot_curves(workdir: str, filename: str = "curves.png") -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
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
    fig.suptitle(os.path.basename(os.path.abspath(workdir)))
    fig.tight_layout()
    path = os.path.join(workdir, filename)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
