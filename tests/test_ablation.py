"""The sweep library alone: grid and zip expansion, seeds, stable names, the baseline, and the
statistics against independent computations (the t quantile and Welch's p-value from the t density
integrated here, the bootstrap interval by a numpy bootstrap, P(improve) by hand counts and the
Mann-Whitney U), and the report's files."""
import csv
import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxcnn.ablation import Axis, Run, Sweep, records, report, stats

FACTORIZE, NORM = Axis("factorize", ("none", "2")), Axis("norm", ("batch", "lrn", "none"))


def test_grid_is_every_combination_and_seeds_are_seed_major():
    runs = Sweep((FACTORIZE, NORM), seeds=2).runs()
    assert len(runs) == 12 and [r.index for r in runs] == list(range(12))
    assert [r.config for r in runs[:6]] == [
        "factorize=none,norm=batch", "factorize=none,norm=lrn", "factorize=none,norm=none",
        "factorize=2,norm=batch", "factorize=2,norm=lrn", "factorize=2,norm=none"]
    assert [r.seed for r in runs] == [0] * 6 + [1] * 6
    assert runs[7] == Run(7, "factorize=none,norm=lrn", 1,
                          (("factorize", "none"), ("norm", "lrn")))
    assert runs[7].directory == "factorize=none,norm=lrn/seed=1"


def test_more_seeds_keep_every_existing_index_and_name():
    three, five = Sweep((FACTORIZE, NORM), seeds=3).runs(), Sweep((FACTORIZE, NORM), seeds=5).runs()
    assert five[:18] == three and len(five) == 30


def test_zip_pairs_the_ith_values_and_needs_equal_lengths():
    lr = Axis("learning_rate", ("0.1", "0.01"))
    runs = Sweep((FACTORIZE, lr), mode="zip").runs()
    assert [r.config for r in runs] == ["factorize=none,learning_rate=0.1",
                                        "factorize=2,learning_rate=0.01"]
    with pytest.raises(ValueError, match="same number of values"):
        Sweep((FACTORIZE, NORM), mode="zip")


def test_a_sweep_without_axes_is_the_base_configuration_times_seeds():
    assert [(r.config, r.seed) for r in Sweep(seeds=3).runs()] == [("base", 0), ("base", 1),
                                                                   ("base", 2)]


def test_axis_parsing_and_unsafe_characters_in_names():
    assert Axis.parse("--factorize=none,2") == FACTORIZE
    assert Axis.parse("boundaries_epochs=30,60;20,40").values == ("30,60", "20,40")
    for bad in ("factorize", "factorize=", "factorize=1,,2", "factorize=1,1"):
        with pytest.raises(ValueError, match="--axis"):
            Axis.parse(bad)
    run = Sweep((Axis("dataset", ("folder:/data/x",)),)).runs()[0]
    assert run.directory == "dataset=folder__data_x/seed=0"


def test_baseline_is_the_first_values_unless_a_selection_names_others():
    sweep = Sweep((FACTORIZE, NORM))
    assert sweep.baseline() == "factorize=none,norm=batch"
    assert sweep.baseline("norm=lrn") == "factorize=none,norm=lrn"
    assert sweep.baseline("factorize=2,norm=none") == "factorize=2,norm=none"
    with pytest.raises(ValueError, match="not a value of an axis"):
        sweep.baseline("norm=group")
    with pytest.raises(ValueError, match="names no configuration"):
        Sweep((FACTORIZE, Axis("norm", ("batch", "lrn"))), mode="zip").baseline("norm=lrn")


def t_cdf(t: float, df: float) -> float:
    """Student's t CDF by integrating its density (Simpson's rule)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    x = np.linspace(0.0, abs(t), 200_001)
    pdf = c * (1 + x ** 2 / df) ** (-(df + 1) / 2)
    h = x[1] - x[0]
    area = h / 3 * (pdf[0] + pdf[-1] + 4 * pdf[1:-1:2].sum() + 2 * pdf[2:-1:2].sum())
    return 0.5 + math.copysign(area, t)


def test_estimate_against_hand_computation():
    e = stats.estimate([0.5, 0.6, 0.7])
    # mean 0.6, sd 0.1, t(0.975, df=2) = 4.302652729911275 (tables), half-width 4.3027 * 0.1 / sqrt 3
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert (e.n, e.mean, e.sd) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert (e.ci_low, e.ci_high) == (pytest.approx(0.6 - half, abs=1e-9),
                                     pytest.approx(0.6 + half, abs=1e-9))
    assert abs(t_cdf(4.302652729911275, 2) - 0.975) < 1e-9
    single = stats.estimate([0.7])
    assert single.n == 1 and single.mean == 0.7 and math.isnan(single.sd) and math.isnan(single.ci_low)
    same = stats.estimate([0.75, 0.75, 0.75])   # e.g. every seed right on as many test images
    assert (same.n, same.mean, same.sd, same.ci_low, same.ci_high) == (3, 0.75, 0.0, 0.75, 0.75)


def test_intervals_are_clipped_to_the_metrics_range():
    accuracies = [0.95, 0.99, 0.999]                # near 100% over 3 seeds
    mean, sd = np.mean(accuracies), np.std(accuracies, ddof=1)
    half = 4.302652729911275 * sd / math.sqrt(3)    # t(0.975, df=2) from tables
    assert mean + half > 1.0
    clipped = stats.estimate(accuracies, stats.RANGES["top1"])
    assert clipped.ci_high == 1.0 and clipped.ci_low == pytest.approx(mean - half)
    assert stats.estimate(accuracies).ci_high == pytest.approx(mean + half)   # unbounded
    losses = [0.01, 0.2, 0.05]
    assert np.mean(losses) - 4.302652729911275 * np.std(losses, ddof=1) / math.sqrt(3) < 0
    assert stats.estimate(losses, stats.RANGES["loss"]).ci_low == 0.0
    assert all(stats.RANGES[m] == (0.0, 1.0) for m in ("top1", "top1_last5", "top5"))


def numpy_bootstrap(a, b, resamples: int, seed: int) -> tuple[np.ndarray, float]:
    """The 2.5 and 97.5 percentiles of mean(a*) - mean(b*) over `resamples` independent resamples
    of a and of b (with replacement), and the standard deviation of those differences."""
    rng, a, b = np.random.default_rng(seed), np.asarray(a), np.asarray(b)
    diffs = (a[rng.integers(0, len(a), (resamples, len(a)))].mean(1)
             - b[rng.integers(0, len(b), (resamples, len(b)))].mean(1))
    return np.percentile(diffs, [2.5, 97.5]), float(diffs.std())


@pytest.mark.parametrize("a, b", [
    ([0.51, 0.55, 0.52, 0.50], [0.56, 0.60, 0.57]),      # a sweep's 4 and 3 seeds
    ([0.61, 0.58, 0.63, 0.60, 0.59, 0.62, 0.57, 0.64], [0.55, 0.61, 0.58, 0.52, 0.60, 0.57])])
def test_bootstrap_difference_against_a_numpy_bootstrap(a, b):
    expected, sd = numpy_bootstrap(a, b, 100_000, seed=1)
    # Monte Carlo error of a 2.5% quantile: about 0.03 sd of the differences with 10,000
    # resamples (scipy's), 0.01 sd with 100,000 (here): 0.15 sd is 4 standard errors and more.
    np.testing.assert_allclose(stats.bootstrap_difference(a, b), expected, atol=0.15 * sd)
    assert stats.bootstrap_difference(a, b) == stats.bootstrap_difference(a, b)   # seeded


def test_bootstrap_difference_by_hand():
    # Constant samples: every resample's difference is the difference itself.
    low, high = stats.bootstrap_difference([0.75] * 3, [0.7] * 4)
    assert low == high == pytest.approx(0.05, abs=1e-12)
    # Means of resamples of [0, 1] are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4: the 2.5 and
    # 97.5 percentiles are 0 and 1, less the constant 1/2.
    assert stats.bootstrap_difference([0.0, 1.0], [0.5, 0.5]) == (-0.5, 0.5)
    assert all(map(math.isnan, stats.bootstrap_difference([0.7], [0.5, 0.6])))
    assert all(map(math.isnan, stats.bootstrap_difference([0.5, 0.6], [])))


def test_probability_of_improvement_against_a_hand_count_and_mann_whitney():
    a, b = [0.5, 0.6, 0.7], [0.55, 0.6]
    # pairs (a, b): (.5, .55) 0, (.5, .6) 0, (.6, .55) 1, (.6, .6) 1/2, (.7, .55) 1, (.7, .6) 1
    assert stats.probability_of_improvement(a, b) == pytest.approx(3.5 / 6)
    assert stats.probability_of_improvement(a, b, higher_is_better=False) == pytest.approx(2.5 / 6)
    rng = np.random.default_rng(0)
    for n, m in ((3, 3), (4, 3), (5, 8)):
        x, y = rng.integers(90, 95, n) / 100, rng.integers(90, 95, m) / 100   # with ties
        u = scipy_stats.mannwhitneyu(x, y).statistic
        assert stats.probability_of_improvement(x, y) == pytest.approx(u / (n * m))
        assert stats.probability_of_improvement(x, y, higher_is_better=False) == pytest.approx(
            scipy_stats.mannwhitneyu(y, x).statistic / (n * m))
    assert math.isnan(stats.probability_of_improvement([], b))


def test_welch_p_value_against_hand_computation():
    a, b = [0.51, 0.55, 0.52, 0.50], [0.56, 0.60, 0.57]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))   # Welch-Satterthwaite
    expected = 2 * (1 - t_cdf(abs(t), df))
    assert stats.welch_p(a, b) == pytest.approx(expected, rel=1e-6)
    assert 0.001 < expected < 0.05
    assert math.isnan(stats.welch_p([0.5], b))


def record(run, status, **data):
    return records.Record(run, status, data)


def finished(run, top1):
    return record(run, records.FINISHED, top1=top1, top1_last5=top1 - 0.01, top5=top1 + 0.3,
                  loss=2 - top1, params=10, flops_per_image=100.0, seconds_per_epoch=2.0)


def test_summary_counts_failed_and_pending_runs_and_never_averages_them():
    runs = Sweep((FACTORIZE,), seeds=4).runs()     # even indices: none; odd: 2
    recs = [finished(runs[0], 0.50), finished(runs[1], 0.56), finished(runs[2], 0.55),
            finished(runs[3], 0.60), finished(runs[4], 0.52),
            record(runs[5], records.FAILED, reason="non-finite loss or gradient at step 7"),
            finished(runs[6], 0.51), record(runs[7], records.PENDING)]
    base, fact = stats.summarize(recs, "factorize=none")
    assert (base.config, base.is_baseline, base.counts) == (
        "factorize=none", True, {"finished": 4, "failed": 0, "pending": 0})
    assert fact.counts == {"finished": 2, "failed": 1, "pending": 1}
    assert fact.metrics["top1"].mean == pytest.approx(0.58)         # (0.56 + 0.60) / 2 only
    assert fact.failures == ["seed=2: non-finite loss or gradient at step 7"]
    assert fact.comparisons["top1"].p == pytest.approx(stats.welch_p([0.56, 0.60],
                                                                     [0.50, 0.55, 0.52, 0.51]))
    assert fact.comparisons["top1"].diff == pytest.approx(0.58 - 0.52)
    assert fact.comparisons["top1"].p_improve == 1.0
    assert fact.comparisons["loss"].p_improve == 1.0      # loss: lower is better
    assert fact.metrics["top1_last5"].mean == pytest.approx(0.57)
    assert base.comparisons["top1"] == stats.UNCOMPARED
    table = report.markdown([base, fact])
    low, high = (100 * x for x in stats.bootstrap_difference([0.56, 0.60],
                                                              [0.50, 0.55, 0.52, 0.51]))
    assert (f"| factorize=2 | 2 | 1 | 1 | 58.00 ± 2.83 | 32.59 – 83.41 | 57.00 ± 2.83 | "
            f"+6.00 [{low:+.2f}, {high:+.2f}] | {fact.comparisons['top1'].p:.3g} | 1 | 88.00 |"
            ) in table
    assert ("| factorize=none | 4 | 0 | 0 | 52.00 ± 2.16 | 48.56 – 55.44 | 51.00 ± 2.16 | "
            "baseline | – | – |") in table
    assert "bootstrap percentile, 10,000 resamples of each sample, seed 0" in table
    assert "- factorize=2, seed=2: non-finite loss or gradient at step 7" in table


def test_welch_p_with_a_constant_sample_is_welchs_limit_and_warns_nothing():
    """Seeds that all reach the same accuracy: Welch's t with that variance zero (the one-sample
    test of the other sample), not scipy's cancellation warning."""
    import warnings
    b = [0.97, 0.975, 0.96]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = stats.welch_p([0.98] * 3, b)
        nearly = stats.welch_p([0.98, 0.98, 0.98 + 1e-9], b)
        assert math.isnan(stats.welch_p([0.98] * 3, [0.98] * 3))
    assert p == pytest.approx(nearly, rel=1e-5) and 0 < p < 1


def test_runs_that_ran_different_kernels_are_named_in_the_summary():
    runs = Sweep((FACTORIZE,), seeds=3).runs()
    cpu = {"platform": "cpu", "convolutions": {"conv1/conv": "onednn"}}
    xla = {"platform": "cpu", "convolutions": {"conv1/conv": "xla"}}
    recs = [record(runs[i], records.FINISHED, kernels=k)
            for i, k in enumerate((cpu, cpu, xla, cpu))]
    assert report.kernels_note(recs[:2]) == ""
    note = report.kernels_note(recs + [record(runs[4], records.PENDING)])
    assert note.splitlines()[1].startswith("Finished runs ran 2 different sets of kernels")
    assert note.splitlines()[2:] == [
        '- runs 0, 1, 3: {"convolutions": {"conv1/conv": "onednn"}, "platform": "cpu"}',
        '- runs 2: {"convolutions": {"conv1/conv": "xla"}, "platform": "cpu"}']
    # Configurations that change the architecture run other layers: alike, when run alike.
    branches = {"platform": "cpu", "convolutions": {"conv1/branch1x1": "im2col"}}
    assert report.kernels_note([recs[0], record(runs[1], records.FINISHED, kernels=branches)]) == ""
    elsewhere = {**branches, "platform": "gpu"}
    assert report.kernels_note([recs[0], record(runs[1], records.FINISHED, kernels=elsewhere)])
    assert report.run_row(recs[2])["kernels"] == (
        '{"convolutions": {"conv1/conv": "xla"}, "platform": "cpu"}')


def write_run(sweep_dir, run, result, test_top1):
    """A run's folder: result.json (None: none) and a metrics.jsonl with a train row between each
    of its test evaluations."""
    workdir = sweep_dir / run.directory
    workdir.mkdir(parents=True)
    rows = [row for i, top1 in enumerate(test_top1, 1) for row in (
        {"split": "train", "step": 10 * i - 5, "epoch": i - 0.5, "top1": 0.0},
        {"split": "test", "step": 10 * i, "epoch": i, "top1": top1})]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if result is not None:
        (workdir / "result.json").write_text(json.dumps(result))


def test_top1_last_is_the_mean_of_the_last_test_evaluations_and_read_fills_it_in(tmp_path):
    rows = [{"split": {"t": "test", "r": "train"}[s], "step": i, "top1": i / 10}
            for i, s in enumerate("tttrtttrt", 1)]
    assert records.LAST_EVALS == 5 and records.TOP1_LAST == "top1_last5"
    assert records.top1_last(rows) == pytest.approx((0.3 + 0.5 + 0.6 + 0.7 + 0.9) / 5)
    assert records.top1_last(rows[:2]) == pytest.approx(0.15)   # fewer evaluations: all of them
    assert math.isnan(records.top1_last([]))
    run_old, run_new, run_pending = Sweep(seeds=3).runs()
    write_run(tmp_path, run_old, {"top1": 0.9}, [0.1, 0.5, 0.6, 0.7, 0.8, 0.9])   # older result
    write_run(tmp_path, run_new, {"top1": 0.9, "top1_last5": 0.25}, [0.1, 0.9])
    write_run(tmp_path, run_pending, None, [0.1, 0.9])
    assert records.read(str(tmp_path), run_old).data == {"top1": 0.9, "top1_last5": 0.7}
    assert records.read(str(tmp_path), run_new).data["top1_last5"] == 0.25   # as written
    assert records.read(str(tmp_path), run_pending).data == {}


def test_the_reports_files_have_every_statistic(tmp_path):
    sweep = Sweep((FACTORIZE,), seeds=3)
    for run, top1 in zip(sweep.runs(), (0.90, 0.93, 0.91, 0.95, 0.92, 0.94)):
        write_run(tmp_path, run, {"top1": top1, "top5": 0.99, "loss": 1 - top1, "params": 10,
                                  "flops_per_image": 1e6, "seconds_per_epoch": 2.0,
                                  "epochs": 2, "steps": 20}, [top1 - 0.05, top1])
    summaries, table = report.write(str(tmp_path), sweep)
    base, fact = [0.90, 0.91, 0.92], [0.93, 0.95, 0.94]
    with open(tmp_path / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    for metric in ("top1", "top1_last5", "top5", "loss"):
        assert {f"{metric}_diff_ci_low", f"{metric}_diff_ci_high", f"{metric}_p_improve",
                f"{metric}_p", f"{metric}_diff"} <= set(rows[1])
    assert float(rows[1]["top1_diff"]) == pytest.approx(0.03)
    assert (float(rows[1]["top1_diff_ci_low"]), float(rows[1]["top1_diff_ci_high"])) == (
        pytest.approx(stats.bootstrap_difference(fact, base)[0]),
        pytest.approx(stats.bootstrap_difference(fact, base)[1]))
    assert float(rows[1]["top1_p_improve"]) == 1.0 and float(rows[1]["loss_p_improve"]) == 1.0
    assert float(rows[1]["top1_last5_mean"]) == pytest.approx(0.94 - 0.025)
    assert rows[0]["top1_p_improve"] == "nan" and rows[0]["baseline"] == "True"
    with open(tmp_path / "runs.csv") as f:
        assert float(next(csv.DictReader(f))["top1_last5"]) == pytest.approx(0.875)
    assert table == (tmp_path / "summary.md").read_text()
    assert table.splitlines()[0].startswith(
        "| configuration | n | failed | pending | test top-1 % final (mean ± sd) | 95% CI | "
        "mean of last 5 evals % (mean ± sd) | Δ top-1 vs baseline [bootstrap 95% CI] | "
        "p (Welch) | P(improve) |")
    assert table.splitlines()[-1] == report.LEGEND
    assert (tmp_path / "summary.png").stat().st_size > 0
