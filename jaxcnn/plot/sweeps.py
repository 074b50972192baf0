"""An ablation sweep's configurations compared (`records`, `summaries`: `jaxcnn.ablation`'s)."""
from __future__ import annotations

import math
import os

import numpy as np
from matplotlib.figure import Figure

from jaxcnn.metrics_file import read_metrics


def _top1_error(estimate) -> list[list[float]] | None:
    """The 95% confidence interval of a mean top-1 as errorbar's [[below], [above]] in %, or
    None (no bar) without one."""
    if estimate.n < 2:
        return None
    return [[100 * (estimate.mean - estimate.ci_low)], [100 * (estimate.ci_high - estimate.mean)]]


def _row_label(summary) -> str:
    """The configuration's name over its difference of mean top-1 to the baseline's (in points,
    with its bootstrap 95% interval) and its probability of improvement."""
    if summary.is_baseline:
        return f"{summary.config}\n(baseline)"
    c = summary.comparisons["top1"]
    if math.isnan(c.diff):
        return summary.config
    interval = "" if math.isnan(c.diff_ci_low) else (
        f" [{100 * c.diff_ci_low:+.1f}, {100 * c.diff_ci_high:+.1f}]")
    return f"{summary.config}\nΔ {100 * c.diff:+.1f}{interval}, P(improve) {c.p_improve:.2f}"


def sweep_figure(sweep_dir: str, records, summaries) -> Figure:
    """Left, one row per configuration: its final test top-1, mean with its 95% confidence
    interval and every finished seed as a dot, the mean of the runs' last evaluations as a hollow
    diamond, and under its name the difference to the baseline and P(improve). Right: the mean
    test top-1 per epoch of each configuration with a ±1 sd band over its seeds."""
    # here, not at the top: jaxcnn.ablation imports jaxcnn.plot, which draws without it
    from jaxcnn.ablation.records import LAST_EVALS, TOP1_LAST
    fig = Figure(figsize=(12, max(4.5, 1.5 + 0.6 * len(summaries))), layout="constrained")
    ax_acc, ax_curves = fig.subplots(1, 2)
    for i, s in enumerate(summaries):
        top1, last = s.metrics["top1"], s.metrics[TOP1_LAST]
        seeds = [100 * r.data["top1"] for r in records
                 if r.run.config == s.config and r.status == "finished"]
        ax_acc.plot(seeds, [i] * len(seeds), ".", color="0.6", zorder=1, label="final, each seed")
        color = "tab:red" if s.is_baseline else "tab:blue"
        if top1.n:
            ax_acc.errorbar(100 * top1.mean, i, xerr=_top1_error(top1), fmt="o", capsize=5,
                            zorder=2, color=color, label="final: mean, 95% CI")
            ax_acc.plot(100 * last.mean, i + 0.25, "D", mfc="none", color=color, zorder=2,
                        label=f"mean of the last {LAST_EVALS} evaluations")
        curves = [{r["epoch"]: 100 * r["top1"] for r in read_metrics(
                      os.path.join(sweep_dir, rec.run.directory)) if r["split"] == "test"}
                  for rec in records if rec.run.config == s.config and rec.status == "finished"]
        epochs = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if epochs:
            values = np.array([[c[e] for e in epochs] for c in curves])
            mean, sd = values.mean(0), values.std(0, ddof=1) if len(values) > 1 else 0 * values[0]
            ax_curves.plot(epochs, mean, "o-", label=f"{s.config} (n={len(values)})")
            ax_curves.fill_between(epochs, mean - sd, mean + sd, alpha=0.2)
    ax_acc.set_yticks(range(len(summaries)), [_row_label(s) for s in summaries],
                      fontsize="small")
    ax_acc.invert_yaxis()   # the sweep's order, top down
    ax_acc.set(xlabel="test top-1 (%)", title="test top-1 (Δ: points, bootstrap 95% CI)")
    ax_curves.set(xlabel="epoch", ylabel="test top-1 (%)", title="mean test top-1 ± 1 sd")
    handles, labels = ax_acc.get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles))   # one entry per label, not one per configuration
        ax_acc.legend(unique.values(), unique.keys(), fontsize="small", ncols=2,
                      loc="upper center", bbox_to_anchor=(0.5, -0.12))
    if ax_curves.lines:
        ax_curves.legend(fontsize="small")
    for ax in (ax_acc, ax_curves):
        ax.grid(alpha=0.3)
        ax.margins(x=0.1, y=0.1)
    fig.suptitle(os.path.basename(os.path.abspath(sweep_dir)))
    return fig


def cost_accuracy_figure(summaries, title: str | None = None) -> Figure:
    """Each configuration's mean test top-1 with its 95% confidence interval against its
    parameters (left) and its forward FLOPs per image (right), on log scales, one colour per
    configuration. Configurations without a finished run are left out."""
    done = [s for s in summaries if s.metrics["top1"].n and not math.isnan(s.costs["params"])]
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, cost, label in zip(axes, ("params", "flops_per_image"),
                               ("parameters", "FLOPs per image (forward)")):
        for i, s in enumerate(done):
            top1 = s.metrics["top1"]
            ax.errorbar(s.costs[cost], 100 * top1.mean, yerr=_top1_error(top1), fmt="o",
                        capsize=5, color=f"C{i % 10}",
                        label=s.config + (" (baseline)" if s.is_baseline else ""))
        ax.set(xscale="log", xlabel=label, title=f"test top-1 against {label.split(' (')[0]}")
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.2, y=0.1)
    axes[0].set_ylabel("test top-1 (%): mean, 95% CI")
    if done:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center",
                   ncols=min(3, len(done)), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
