"""Per-configuration statistics of a sweep's finished runs, as a paper quotes them: n, mean ± sd,
the 95% confidence interval of the mean (Student t) and Welch's t-test against a baseline."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from jaxcnn.ablation.records import FAILED, FINISHED, PENDING, Record

METRICS = ("top1", "top5", "loss")
COSTS = ("params", "flops_per_image", "seconds_per_epoch")
CONFIDENCE = 0.95


@dataclasses.dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    sd: float           # sample standard deviation (n - 1); nan for n < 2
    ci_low: float       # 95% Student-t interval of the mean; nan for n < 2
    ci_high: float


def estimate(values) -> Estimate:
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(x.mean())
    if n < 2:
        return Estimate(1, mean, math.nan, math.nan, math.nan)
    sd = float(x.std(ddof=1))
    if sd == 0:   # identical values (scipy's interval needs a positive scale)
        return Estimate(n, mean, 0.0, mean, mean)
    low, high = stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=sd / math.sqrt(n))
    return Estimate(n, mean, sd, float(low), float(high))


def welch_p(values, baseline) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances); nan where it is undefined."""
    if len(values) < 2 or len(baseline) < 2:
        return math.nan
    constant = [_constant(values), _constant(baseline)]
    if all(constant):   # no variance at all: no test
        return math.nan
    if any(constant):
        # Welch's t with one variance zero is the one-sample t-test of the other sample against
        # the constant (df = n - 1), without scipy's cancellation warning on a constant sample.
        sample, constant_value = (baseline, values[0]) if constant[0] else (values, baseline[0])
        return float(stats.ttest_1samp(sample, constant_value).pvalue)
    return float(stats.ttest_ind(values, baseline, equal_var=False).pvalue)


def _constant(values) -> bool:
    """Equal up to float64 rounding (seeds that all reached the same accuracy)."""
    values = np.asarray(values, np.float64)
    return float(np.ptp(values)) <= 1e-12 * max(1.0, float(np.abs(values).max()))


@dataclasses.dataclass(frozen=True)
class ConfigSummary:
    config: str
    counts: dict[str, int]               # finished / failed / pending runs
    metrics: dict[str, Estimate]         # over the finished runs only
    p_values: dict[str, float]           # Welch's test against the baseline's finished runs
    costs: dict[str, float]              # means over the finished runs
    failures: list[str]                  # "seed=S: reason"
    is_baseline: bool


def summarize(records: list[Record], baseline: str) -> list[ConfigSummary]:
    """One summary per configuration, in sweep order. Failed and pending runs are counted and
    listed, never averaged in."""
    by_config: dict[str, list[Record]] = {}
    for record in sorted(records, key=lambda r: r.run.index):
        by_config.setdefault(record.run.config, []).append(record)

    def finished(config, key):
        return [r.data[key] for r in by_config.get(config, []) if r.status == FINISHED]

    summaries = []
    for config, recs in by_config.items():
        counts = {s: sum(r.status == s for r in recs) for s in (FINISHED, FAILED, PENDING)}
        metrics = {m: estimate(finished(config, m)) for m in METRICS}
        p_values = {m: math.nan if config == baseline else
                    welch_p(finished(config, m), finished(baseline, m)) for m in METRICS}
        costs = {c: float(np.mean(finished(config, c))) if counts[FINISHED] else math.nan
                 for c in COSTS}
        failures = [f"seed={r.run.seed}: {r.data['reason']}" for r in recs if r.status == FAILED]
        summaries.append(ConfigSummary(config, counts, metrics, p_values, costs, failures,
                                       config == baseline))
    return summaries
