"""Per-configuration statistics of a sweep's finished runs, as a paper quotes them: n, mean ± sd,
the 95% confidence interval of the mean (Student t, clipped to the metric's range) and, against a
baseline, Welch's t-test, a bootstrap 95% confidence interval of the difference of the means and
the probability of improvement (Agarwal et al. 2021, "Deep reinforcement learning at the edge of
the statistical precipice")."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

from jaxcnn.ablation.records import FAILED, FINISHED, PENDING, TOP1_LAST, Record

METRICS = ("top1", TOP1_LAST, "top5", "loss")
RANGES = {"top1": (0.0, 1.0), TOP1_LAST: (0.0, 1.0), "top5": (0.0, 1.0), "loss": (0.0, math.inf)}
HIGHER_IS_BETTER = {"top1": True, TOP1_LAST: True, "top5": True, "loss": False}
COSTS = ("params", "flops_per_image", "seconds_per_epoch")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


@dataclasses.dataclass(frozen=True)
class Estimate:
    n: int
    mean: float
    sd: float           # sample standard deviation (n - 1); nan for n < 2
    ci_low: float       # 95% Student-t interval of the mean, clipped to the metric's range;
    ci_high: float      # nan for n < 2


def estimate(values, bounds: tuple[float, float] = (-math.inf, math.inf)) -> Estimate:
    """bounds: the metric's range, which the interval is clipped to (a t-interval of an accuracy
    near 100% over 3 seeds can otherwise reach past it)."""
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
    return Estimate(n, mean, sd, max(float(low), bounds[0]), min(float(high), bounds[1]))


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


def _difference_of_means(values, baseline, axis=-1):
    return np.mean(values, axis=axis) - np.mean(baseline, axis=axis)


def bootstrap_difference(values, baseline) -> tuple[float, float]:
    """The bootstrap 95% confidence interval of mean(values) - mean(baseline), each sample
    resampled on its own; (nan, nan) unless both have 2 values or more. The seed is fixed, so the
    report reads the same every time it is rewritten."""
    if len(values) < 2 or len(baseline) < 2:
        return math.nan, math.nan
    # Percentile, not BCa: at 3-4 seeds BCa's bias correction and jackknife acceleration rest on
    # a handful of distinct resamples and swing with them, and BCa is undefined (nan) when a
    # configuration's seeds tie. A percentile interval lies within the differences the samples
    # can give (no clipping), but is narrow at such n: Welch's p keeps the t's caution.
    interval = stats.bootstrap(
        (values, baseline), _difference_of_means, n_resamples=BOOTSTRAP_RESAMPLES, paired=False,
        vectorized=True, confidence_level=CONFIDENCE, method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return float(interval.low), float(interval.high)


def probability_of_improvement(values, baseline, higher_is_better: bool = True) -> float:
    """P(a run of `values` beats a run of `baseline`): the fraction of all (value, baseline value)
    pairs in which the value is the better, ties counting 1/2; nan when either sample is empty."""
    if len(values) == 0 or len(baseline) == 0:
        return math.nan
    a, b = np.asarray(values, float)[:, None], np.asarray(baseline, float)[None, :]
    better = a > b if higher_is_better else a < b
    return float(np.mean(better + 0.5 * (a == b)))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One metric of a configuration against the baseline's, over their finished runs."""
    diff: float           # mean - baseline's mean
    diff_ci_low: float    # its bootstrap 95% interval
    diff_ci_high: float
    p: float              # Welch's two-sided t-test
    p_improve: float      # P(a run beats a baseline run), in the metric's better direction


UNCOMPARED = Comparison(math.nan, math.nan, math.nan, math.nan, math.nan)   # the baseline's own


def compare(values, baseline, metric: str) -> Comparison:
    diff = float(np.mean(values) - np.mean(baseline)) if len(values) and len(baseline) else math.nan
    return Comparison(diff, *bootstrap_difference(values, baseline), welch_p(values, baseline),
                      probability_of_improvement(values, baseline, HIGHER_IS_BETTER[metric]))


@dataclasses.dataclass(frozen=True)
class ConfigSummary:
    config: str
    counts: dict[str, int]               # finished / failed / pending runs
    metrics: dict[str, Estimate]         # over the finished runs only
    comparisons: dict[str, Comparison]   # against the baseline's finished runs
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
        metrics = {m: estimate(finished(config, m), RANGES[m]) for m in METRICS}
        comparisons = {m: UNCOMPARED if config == baseline else
                       compare(finished(config, m), finished(baseline, m), m) for m in METRICS}
        costs = {c: float(np.mean(finished(config, c))) if counts[FINISHED] else math.nan
                 for c in COSTS}
        failures = [f"seed={r.run.seed}: {r.data['reason']}" for r in recs if r.status == FAILED]
        summaries.append(ConfigSummary(config, counts, metrics, comparisons, costs, failures,
                                       config == baseline))
    return summaries
