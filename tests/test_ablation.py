"""The sweep library alone: grid and zip expansion, seeds, stable names, the baseline, and the
statistics against hand computations (the t quantile and Welch's p-value from the t density
integrated here, not from scipy)."""
import math

import numpy as np
import pytest

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
    return record(run, records.FINISHED, top1=top1, top5=top1 + 0.3, loss=2 - top1, params=10,
                  flops_per_image=100.0, seconds_per_epoch=2.0)


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
    assert fact.p_values["top1"] == pytest.approx(stats.welch_p([0.56, 0.60],
                                                                [0.50, 0.55, 0.52, 0.51]))
    assert math.isnan(base.p_values["top1"])
    table = report.markdown([base, fact])
    assert "| factorize=2 | 2 | 1 | 1 | 58.00 ± 2.83 |" in table
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
    assert report.run_row(recs[2])["kernels"] == (
        '{"convolutions": {"conv1/conv": "xla"}, "platform": "cpu"}')
