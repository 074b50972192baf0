"""Figures from metrics.jsonl: the curves of a run, and the comparison of a sweep's configurations."""
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


def close(fig) -> None:
    _pyplot().close(fig)


def sweep_figure(sweep_dir: str, records, summaries):
    """Left: each configuration's test top-1, mean with its 95% confidence interval and every
    finished seed as a dot. Right: the mean test top-1 per epoch of each configuration with a
    ±1 sd band over its seeds (`records` and `summaries` from `jaxcnn.ablation`)."""
    import numpy as np
    fig, (ax_acc, ax_curves) = _pyplot().subplots(
        1, 2, figsize=(6 + 0.6 * len(summaries), 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    names = [s.config for s in summaries]
    for i, s in enumerate(summaries):
        top1 = s.metrics["top1"]
        seeds = [100 * r.data["top1"] for r in records
                 if r.run.config == s.config and r.status == "finished"]
        ax_acc.plot([i] * len(seeds), seeds, ".", color="0.6", zorder=1)
        if top1.n:
            err = None if top1.n < 2 else [[100 * (top1.mean - top1.ci_low)],
                                           [100 * (top1.ci_high - top1.mean)]]
            ax_acc.errorbar(i, 100 * top1.mean, yerr=err, fmt="o", capsize=5, zorder=2,
                            color="tab:red" if s.is_baseline else "tab:blue")
        curves = [{r["epoch"]: 100 * r["top1"] for r in read_metrics(
                      os.path.join(sweep_dir, rec.run.directory)) if r["split"] == "test"}
                  for rec in records if rec.run.config == s.config and rec.status == "finished"]
        epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if epochs:
            values = np.array([[c[e] for e in epochs] for c in curves])
            mean, sd = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else 0 * values[0]
            ax_curves.plot(epochs, mean, "o-", label=f"{s.config} (n={len(values)})")
            ax_curves.fill_between(epochs, mean - sd, mean + sd, alpha=0.2)
    ax_acc.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax_acc.set(ylabel="test top-1 (%)", title="final test top-1: mean, 95% CI, seeds")
    ax_curves.set(xlabel="epoch", ylabel="test top-1 (%)", title="mean test top-1 ± 1 sd")
    if ax_curves.lines:
        ax_curves.legend(fontsize="small")
    for ax in (ax_acc, ax_curves):
        ax.grid(alpha=0.3)
        ax.margins(x=0.1, y=0.1)
    fig.suptitle(os.path.basename(os.path.abspath(sweep_dir)))
    fig.tight_layout()
    return fig
