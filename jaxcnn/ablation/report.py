"""A sweep's results files, rewritten whole from the runs' records: `runs.csv` (one row per run),
`summary.csv` and `summary.md` (one row per configuration: `stats`' estimates and comparisons with
the baseline; summary.md says so when finished runs ran different kernels, `jaxcnn.cpu.record`)
and `summary.png` (test top-1 with 95% confidence intervals and the mean of the last evaluations,
and the mean test-accuracy curve of each configuration with a ±1 sd band). Each file is replaced
atomically, so two runs that finish at the same moment and both rewrite the report leave a whole
one."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os

from jaxcnn import plot
from jaxcnn.ablation import records as records_lib
from jaxcnn.ablation.spec import Sweep
from jaxcnn.ablation.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, COSTS, METRICS,
                                   ConfigSummary, Estimate, summarize)

RUN_COLUMNS = ("index", "config", "seed", "status", "top1", records_lib.TOP1_LAST, "top5", "loss",
               "params", "flops_per_image", "seconds_per_epoch", "epochs", "steps", "kernels",
               "reason", "directory")


def write(sweep_dir: str, sweep: Sweep, baseline: str | None = None
          ) -> tuple[list[ConfigSummary], str]:
    """Rewrites the report of `sweep` in `sweep_dir`; returns the summaries and summary.md's text.
    baseline: a selection such as "factorize=2" (default: the first value of every axis)."""
    records = records_lib.read_records(sweep_dir, sweep)
    summaries = summarize(records, sweep.baseline(baseline))
    axes = [a.name for a in sweep.axes]
    _write_csv(os.path.join(sweep_dir, "runs.csv"), (*axes, *RUN_COLUMNS),
               [run_row(r) for r in records])
    _write_csv(os.path.join(sweep_dir, "summary.csv"), SUMMARY_COLUMNS,
               [summary_row(s) for s in summaries])
    table = markdown(summaries) + kernels_note(records)
    records_lib.write_atomically(os.path.join(sweep_dir, "summary.md"), table)
    figure = plot.sweep_figure(sweep_dir, records, summaries)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    records_lib.write_atomically(os.path.join(sweep_dir, "summary.png"), buffer.getvalue())
    return summaries, table


def _write_csv(path: str, columns, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    records_lib.write_atomically(path, text.getvalue())


def _kernels(record: records_lib.Record) -> str | None:
    """The run's kernel record as one sorted JSON string (None for runs without one)."""
    kernels = record.data.get("kernels")
    return None if kernels is None else json.dumps(kernels, sort_keys=True)


def run_row(record: records_lib.Record) -> dict:
    return {**dict(record.run.overrides), **record.data, "index": record.run.index,
            "config": record.run.config, "seed": record.run.seed, "status": record.status,
            "kernels": _kernels(record), "directory": record.run.directory}


LAYER_FORMS = ("convolutions", "dense")   # a kernel record's per-layer entries


def _differ(records: list[records_lib.Record]) -> bool:
    """Whether finished runs ran differently: other settings anywhere in the sweep (platform,
    devices, switches, oneDNN's status), or other layer forms within one configuration (across
    configurations that change the architecture the layers themselves differ)."""
    settings, forms = set(), {}
    for r in records:
        kernels = r.data["kernels"]
        settings.add(json.dumps({k: v for k, v in kernels.items() if k not in LAYER_FORMS},
                                sort_keys=True))
        forms.setdefault(r.run.config, set()).add(_kernels(r))
    return len(settings) > 1 or any(len(f) > 1 for f in forms.values())


def kernels_note(records: list[records_lib.Record]) -> str:
    """Empty unless finished runs ran differently (`_differ`); else a paragraph for summary.md
    that lists the runs of each kernel record (whose JSON is runs.csv's `kernels` column)."""
    done = [r for r in records if r.status == records_lib.FINISHED and _kernels(r) is not None]
    if not _differ(done):
        return ""
    groups: dict[str, list[str]] = {}
    for r in done:
        groups.setdefault(_kernels(r), []).append(str(r.run.index))
    lines = ["", f"Finished runs ran {len(groups)} different sets of kernels (runs.csv's `kernels` "
             "column): compare their results with care."]
    lines += [f"- runs {', '.join(runs)}: {kernels}" for kernels, runs in groups.items()]
    return "\n".join(lines) + "\n"


SUMMARY_COLUMNS = ("config", "baseline", "n", "failed", "pending",
                   *(f"{m}_{s}" for m in METRICS
                     for s in ("mean", "sd", "ci_low", "ci_high", "diff", "diff_ci_low",
                               "diff_ci_high", "p", "p_improve")),
                   *COSTS)


def summary_row(s: ConfigSummary) -> dict:
    row = {"config": s.config, "baseline": s.is_baseline, "n": s.counts["finished"],
           "failed": s.counts["failed"], "pending": s.counts["pending"], **s.costs}
    for m, e in s.metrics.items():
        row.update({f"{m}_mean": e.mean, f"{m}_sd": e.sd, f"{m}_ci_low": e.ci_low,
                    f"{m}_ci_high": e.ci_high,
                    **{f"{m}_{k}": v for k, v in dataclasses.asdict(s.comparisons[m]).items()}})
    return row


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _p(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.3g}"


def _mean_sd(e: Estimate) -> str:
    return _pct(e.mean) + ("" if math.isnan(e.sd) else f" ± {_pct(e.sd)}")


def _delta(s: ConfigSummary) -> str:
    """The difference of mean top-1 to the baseline's in points, with its bootstrap interval."""
    if s.is_baseline:
        return "baseline"
    c = s.comparisons["top1"]
    if math.isnan(c.diff):
        return "–"
    interval = "" if math.isnan(c.diff_ci_low) else (
        f" [{100 * c.diff_ci_low:+.2f}, {100 * c.diff_ci_high:+.2f}]")
    return f"{100 * c.diff:+.2f}{interval}"


LEGEND = (f"Δ, p and P(improve): final test top-1 against the baseline. p: Welch's two-sided "
          f"t-test. Δ's 95% CI: bootstrap percentile, {BOOTSTRAP_RESAMPLES:,} resamples of each "
          f"sample, seed {BOOTSTRAP_SEED}. P(improve): P(run > baseline run) over all pairs of "
          "seeds, ties counting 1/2. 95% CI: Student t, clipped to [0, 100]%. summary.csv has "
          "them all for top-5 and loss too (P(improve) of loss: P(lower)).")


def markdown(summaries: list[ConfigSummary]) -> str:
    """One row per configuration and a legend line that names the tests. Failed runs are listed
    under them with their reasons."""
    lines = ["| configuration | n | failed | pending | test top-1 % final (mean ± sd) | 95% CI | "
             f"mean of last {records_lib.LAST_EVALS} evals % (mean ± sd) | "
             "Δ top-1 vs baseline [bootstrap 95% CI] | p (Welch) | P(improve) | test top-5 % | "
             "test loss | params | MFLOPs / image | s / epoch |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for s in summaries:
        top1, top5, loss = (s.metrics[m] for m in ("top1", "top5", "loss"))
        cost = ("–", "–", "–") if math.isnan(s.costs["params"]) else (
            f"{s.costs['params']:,.0f}", f"{s.costs['flops_per_image'] / 1e6:,.2f}",
            f"{s.costs['seconds_per_epoch']:.1f}")
        ci = "–" if math.isnan(top1.ci_low) else f"{_pct(top1.ci_low)} – {_pct(top1.ci_high)}"
        versus = s.comparisons["top1"]
        lines.append(
            f"| {s.config} | {s.counts['finished']} | {s.counts['failed']} | "
            f"{s.counts['pending']} | {_mean_sd(top1)} | {ci} | "
            f"{_mean_sd(s.metrics[records_lib.TOP1_LAST])} | {_delta(s)} | {_p(versus.p)} | "
            f"{_p(versus.p_improve)} | {_pct(top5.mean)} | "
            f"{'–' if math.isnan(loss.mean) else f'{loss.mean:.4f}'} | {' | '.join(cost)} |")
    lines += ["", LEGEND]
    failures = [f"- {s.config}, {f}" for s in summaries for f in s.failures]
    if failures:
        lines += ["", "Failed runs (not averaged in):", *failures]
    return "\n".join(lines) + "\n"
