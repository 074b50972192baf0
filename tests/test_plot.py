"""Figures: what each one draws, read back from its axes."""
import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from jaxcnn import plot
from jaxcnn.ablation import records, stats
from jaxcnn.ablation.spec import Run
from jaxcnn.ablation.stats import ConfigSummary, Estimate

ROWS = [{"split": "train", "step": 5, "epoch": 0.5, "loss": 2.0, "top1": 0.25},
        {"split": "train", "step": 10, "epoch": 1.0, "loss": 1.0, "top1": 0.5},
        {"split": "test", "step": 10, "epoch": 1.0, "loss": 1.2, "top1": 0.45}]


def shown(ax) -> np.ndarray:
    return np.asarray(ax.images[0].get_array())


def test_curves_are_the_rows(tmp_path):
    fig = plot.curves_figure(ROWS, title="run")
    ax_loss, ax_acc = fig.axes
    (train_loss, test_loss), (train_acc, test_acc) = ax_loss.lines, ax_acc.lines
    assert list(train_loss.get_xdata()) == [0.5, 1.0] and list(train_loss.get_ydata()) == [2.0, 1.0]
    assert list(test_loss.get_ydata()) == [1.2] and list(train_acc.get_ydata()) == [25.0, 50.0]
    assert list(test_acc.get_ydata()) == [45.0] and fig.get_suptitle() == "run"
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(f'{{"split": "{r["split"]}", "step": {r["step"]}, "epoch": {r["epoch"]}, '
                     f'"loss": {r["loss"]}, "top1": {r["top1"]}}}\n' for r in ROWS)
    path = plot.plot_curves(str(tmp_path))
    assert path == str(tmp_path / "curves.png")
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_image_grid_stretches_each_image_to_its_own_range():
    images = np.stack([np.arange(16.0).reshape(4, 4), np.full((4, 4), 7.0),
                       -np.arange(16.0).reshape(4, 4)])[..., None]
    fig = plot.image_grid(images, ["a", "b", "c"], columns=2, title="grid")
    assert isinstance(fig, Figure) and len(fig.axes) == 4          # 2 x 2, the last one empty
    np.testing.assert_array_equal(shown(fig.axes[0]), np.arange(16.0).reshape(4, 4) / 15)
    np.testing.assert_array_equal(shown(fig.axes[1]), np.zeros((4, 4)))   # constant: black
    np.testing.assert_allclose(shown(fig.axes[2]), 1 - np.arange(16.0).reshape(4, 4) / 15)
    assert not fig.axes[3].images and [ax.get_title() for ax in fig.axes] == ["a", "b", "c", ""]
    rgb = plot.image_grid(np.stack([np.arange(48).reshape(4, 4, 3)] * 2))
    np.testing.assert_allclose(shown(rgb.axes[1]), np.arange(48).reshape(4, 4, 3) / 47)


@pytest.mark.parametrize("images, titles, message", [
    (np.zeros((2, 4, 4, 2)), None, r"image_grid takes \[n, H, W\], \[n, H, W, 1\] or "
                                   r"\[n, H, W, 3\] images with n >= 1, got shape \(2, 4, 4, 2\)"),
    (np.zeros((0, 4, 4)), None, r"got shape \(0, 4, 4\)"),
    (np.zeros((2, 4, 4)), ["one"], "1 titles for 2 images"),
])
def test_image_grid_refuses_what_it_cannot_show(images, titles, message):
    with pytest.raises(ValueError, match=message):
        plot.image_grid(images, titles)


def test_filters_are_the_kernels_output_channels():
    kernel = np.random.default_rng(0).normal(size=(5, 5, 1, 6))
    fig = plot.filters_figure(kernel, title="conv1")
    assert len(fig.axes) == 6 and [ax.get_title() for ax in fig.axes] == list("012345")
    k = kernel[:, :, 0, 4]
    np.testing.assert_allclose(shown(fig.axes[4]), (k - k.min()) / (k.max() - k.min()))
    with pytest.raises(ValueError, match=r"1 or 3 input channels \(a first layer's\), got shape "
                                         r"\(3, 3, 16, 32\)"):
        plot.filters_figure(np.zeros((3, 3, 16, 32)))


def test_feature_maps_are_the_channels_of_one_activation():
    activation = np.random.default_rng(0).normal(size=(6, 6, 10))
    fig = plot.feature_maps_figure(activation, columns=4)
    assert len(fig.axes) == 12 and sum(bool(ax.images) for ax in fig.axes) == 10
    a = activation[..., 9]
    np.testing.assert_allclose(shown(fig.axes[9]), (a - a.min()) / (a.max() - a.min()))
    assert fig.axes[9].images[0].get_cmap().name == "viridis"
    with pytest.raises(ValueError, match=r"one image's activation \[H, W, C\], got shape "
                                         r"\(1, 6, 6, 10\)"):
        plot.feature_maps_figure(activation[None])


def test_confusion_figure_shows_the_matrix_and_its_counts():
    matrix = np.array([[5, 0, 1], [0, 7, 0], [2, 0, 4]])
    fig = plot.confusion_figure(matrix, ["a", "b", "c"])
    ax = fig.axes[0]
    np.testing.assert_array_equal(shown(ax), matrix)
    assert sorted(t.get_text() for t in ax.texts) == sorted(["5", "1", "7", "2", "4"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    with pytest.raises(ValueError, match=r"a confusion matrix of 2 classes is 2x2, got shape"):
        plot.confusion_figure(matrix, ["a", "b"])


def summary(config, params, flops, mean, low, high, n=3, baseline=False):
    nan = Estimate(0, math.nan, math.nan, math.nan, math.nan)
    return ConfigSummary(config, {"finished": n, "failed": 0, "pending": 0},
                         {"top1": Estimate(n, mean, 0.01, low, high), "top5": nan, "loss": nan},
                         {}, {"params": params, "flops_per_image": flops, "seconds_per_epoch": 1.0},
                         [], baseline)


def test_cost_accuracy_points_are_means_with_their_intervals_at_their_costs():
    summaries = [summary("base", 1000.0, 2e6, 0.90, 0.88, 0.93, baseline=True),
                 summary("wide", 4000.0, 8e6, 0.95, 0.94, 0.96),
                 summary("one seed", 500.0, 1e6, 0.80, math.nan, math.nan, n=1),
                 summary("pending", math.nan, math.nan, math.nan, math.nan, math.nan, n=0)]
    fig = plot.cost_accuracy_figure(summaries, title="sweep")
    for ax, cost in zip(fig.axes, ("params", "flops_per_image")):
        assert ax.get_xscale() == "log" and len(ax.containers) == 3     # "pending" left out
        for container, s in zip(ax.containers, summaries):
            x, y = container.lines[0].get_data()
            assert (x[0], y[0]) == (s.costs[cost], pytest.approx(100 * s.metrics["top1"].mean))
        bars = ax.containers[0].lines[2][0].get_segments()[0]
        np.testing.assert_allclose(bars, [[1000.0 if cost == "params" else 2e6, 88.0],
                                          [1000.0 if cost == "params" else 2e6, 93.0]])
        assert not ax.containers[2].lines[2]           # one seed: no interval
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["base (baseline)", "wide", "one seed"]


def test_sweep_figure_rows_show_clipped_intervals_last_evaluations_and_comparisons(tmp_path):
    seeds = {"base": [0.95, 0.99, 0.999], "wide": [0.96, 0.97, 0.98]}
    recs = [records.Record(Run(i, config, seed, ()), records.FINISHED, {"top1": top1})
            for i, (config, seed, top1) in enumerate(
                (c, s, t) for c, values in seeds.items() for s, t in enumerate(values))]
    versus = stats.Comparison(diff=-0.0097, diff_ci_low=-0.031, diff_ci_high=0.012, p=0.4,
                              p_improve=4 / 9)
    summaries = [
        ConfigSummary(config, {"finished": 3, "failed": 0, "pending": 0},
                      {"top1": stats.estimate(values, stats.RANGES["top1"]),
                       "top1_last5": stats.estimate([v - 0.02 for v in values])},
                      {"top1": comparison}, {}, [], config == "base")
        for (config, values), comparison in zip(seeds.items(), (stats.UNCOMPARED, versus))]
    assert summaries[0].metrics["top1"].ci_high == 1.0        # clipped: unclipped it is past 1
    ax = plot.sweep_figure(str(tmp_path), recs, summaries).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "base\n(baseline)", "wide\nΔ -1.0 [-3.1, +1.2], P(improve) 0.44"]
    for row, s in enumerate(summaries):
        top1 = s.metrics["top1"]
        bar = ax.containers[row].lines[2][0].get_segments()[0]
        np.testing.assert_allclose(bar, [[100 * top1.ci_low, row], [100 * top1.ci_high, row]])
        dots = [line for line in ax.lines if list(line.get_ydata()) == [row] * 3]
        assert sorted(dots[0].get_xdata()) == pytest.approx([100 * v for v in seeds[s.config]])
    hollow = [line for line in ax.lines if line.get_marker() == "D"]
    assert [line.get_markerfacecolor() for line in hollow] == ["none", "none"]
    assert [line.get_xdata()[0] for line in hollow] == [
        pytest.approx(100 * s.metrics["top1_last5"].mean) for s in summaries]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "final, each seed", "mean of the last 5 evaluations", "final: mean, 95% CI"]
