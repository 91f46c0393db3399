"""Figures read at a glance: axis labels with units, legends, integer epoch ticks, one panel
per comparable group. Drawn from hand-made tables and histories, in milliseconds."""

import math
import re

import pandas as pd
import pytest

from vaelab.orchestration.report import comparison_figures, figures
from vaelab.vae import plots
from vaelab.vocab import metrics

UNIT = re.compile(r"\((nats|loss units|latent units|hidden units|epochs)[^)]*\)$")


def check_axes(fig, epoch_axes: bool) -> None:
    """Every axes: both labels, units where a quantity is shown, a legend naming its series."""
    for ax in fig.axes:
        assert ax.get_xlabel() and UNIT.search(ax.get_ylabel()), ax.get_ylabel()
        if epoch_axes:
            assert ax.get_xlabel() == "epoch"
            ticks = ax.get_xticks()
            assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
        else:
            assert UNIT.search(ax.get_xlabel()), ax.get_xlabel()
        handles, labels = ax.get_legend_handles_labels()
        legend = ax.get_legend() or (fig.legends[0] if fig.legends else None)  # below the axes
        assert labels and legend is not None
        assert [t.get_text() for t in legend.get_texts()] == labels


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_epoch_ticks_are_whole_numbers_whatever_the_run_length(epochs):
    history = {f"{s}/{t}": [1.0] * epochs for s in ("train", "val") for t in metrics.TERMS}
    curves = figures.learning_curves(
        {"a": [(e, 1.0) for e in range(1, epochs + 1)]}, {"a": "a"}, ["a"], "val/total", "other"
    )
    for fig in (plots.loss_curves(history), curves):
        check_axes(fig, epoch_axes=True)
        lo, hi = fig.axes[0].get_xlim()
        assert lo <= 1 and hi >= epochs


def test_learning_curves_name_each_run_and_draw_identical_curves_once():
    curve = [(1, 190.0), (2, 150.0), (3, 140.0)]
    histories = {"f": curve, "s": list(curve), "c": [(1, 200.0), (2, 170.0), (3, 160.0)]}
    labels = {"f": "f (style=functional)", "s": "s (style=subclass)", "c": "c (style=custom)"}
    fig = figures.learning_curves(histories, labels, ["f", "s", "c"], "val/total", "continuous")
    check_axes(fig, epoch_axes=True)
    assert figures.legend_texts(fig) == (
        "f (style=functional) = s (identical)",
        "c (style=custom)",
    )
    assert fig.axes[0].get_ylabel() == "val −ELBO on intensities (nats)"


def test_the_longest_legend_a_sweep_can_produce_never_squeezes_the_plot():
    """Ten distinct curves named (the most a legend names), each of many identical runs with
    the longest labels a run gets, and more runs beyond them."""
    label = "0123abcd (style=custom_loop, model.intermediate_dim=64, model.latent_dim=16, seed=6)"
    histories, labels = {}, {}
    for curve in range(14):
        for twin in range(7):  # identical curves: functional = subclass = custom_loop ...
            run = f"{curve}-{twin}"
            histories[run] = [(e, 100.0 + curve + 1 / e) for e in range(1, 10)]
            labels[run] = f"{run} {label}"
    fig = figures.learning_curves(histories, labels, list(histories), "val/total", "continuous")
    fig.draw_without_rendering()
    (ax,) = fig.axes
    plot = ax.get_position()  # in figure fractions, after the layout
    assert plot.width > 0.8 and plot.height * fig.get_figheight() > 2.5, plot
    legend = fig.legends[0].get_window_extent()
    assert fig.bbox.contains(legend.x0, legend.y0) and fig.bbox.contains(legend.x1, legend.y1)
    assert legend.y1 < ax.get_window_extent().y0  # below the plot, never over it
    texts = figures.legend_texts(fig)
    assert len(texts) == 11 and texts[-1] == "4 more runs"
    assert texts[0].replace("\n", " ").endswith("= 0-1 = 0-2 and 4 more (identical)")
    assert max(len(line) for t in texts for line in t.splitlines()) <= figures.LEGEND_WRAP


def _configs(rows: list[tuple[str, str, float, int, float, float]]) -> pd.DataFrame:
    """Ranked configurations as `replicates.summarise` gives them: latent_dim, style, mean,
    n and the interval over the seeds."""
    return pd.DataFrame(
        [
            {
                "params.model.latent_dim": z,
                "params.style.name": style,
                "mean": mean,
                "n": n,
                "ci_low": low,
                "ci_high": high,
                "rank": rank,
            }
            for rank, (z, style, mean, n, low, high) in enumerate(rows, start=1)
        ]
    ).astype({"rank": "Int64"})


CONFIGS = [
    ("16", "functional", 130.0, 3, 128.0, 132.0),
    ("16", "custom_loop", 134.0, 3, 131.0, 137.0),
    ("2", "functional", 170.0, 3, 165.0, 175.0),
    ("32", "custom_loop", 126.0, 1, math.nan, math.nan),
]


def test_effects_have_a_panel_per_hyperparameter_with_interval_bars_in_units():
    fig = comparison_figures.effect_panels(
        _configs(CONFIGS), ["model.latent_dim", "style.name"], "val/total", metrics.LIKELIHOOD
    )
    latent, style = [ax for ax in fig.axes if ax.get_visible()]
    assert latent.get_xlabel() == "latent_dim (latent units)" and style.get_xlabel() == "style"
    assert latent.get_ylabel() == "val −ELBO ≥ −log p(x) (nats)"
    assert [t.get_text() for t in latent.get_xticklabels()] == ["2", "16", "32"]
    assert [t.get_text() for t in style.get_xticklabels()] == ["custom_loop", "functional"]
    # latent_dim 16: two configurations, so the t-interval over their means (132 ± 25.4);
    # 2: one configuration, its own interval over its seeds; 32: one seed, no bar.
    (line, _, (bars,)) = latent.containers[0].lines
    assert list(line.get_ydata()) == [170.0, 132.0, 126.0]
    segments = [tuple(segment[:, 1]) if len(segment) else () for segment in bars.get_segments()]
    half = 12.706204736174698 * math.sqrt(8) / math.sqrt(2)
    assert segments[0] == (165.0, 175.0)
    assert segments[1] == pytest.approx((132.0 - half, 132.0 + half))
    assert segments[2] == ()
    assert [t.replace("\n", " ") for t in figures.legend_texts(fig)] == [
        "mean over the configurations at a value, 95% interval; beside it: how many",
        "no bar: a single configuration, with a single seed",
    ]
    # A single panel is narrow: its legend stacks and wraps, and stays inside the figure.
    alone = comparison_figures.effect_panels(
        _configs(CONFIGS), ["model.latent_dim"], "val/total", "other"
    )
    alone.draw_without_rendering()
    legend = alone.legends[0].get_window_extent()
    assert alone.bbox.contains(legend.x0, legend.y0) and alone.bbox.contains(legend.x1, legend.y1)


def test_parallel_coordinates_draw_every_configuration_and_name_the_best():
    configs = _configs(CONFIGS)
    params = ["model.latent_dim", "style.name"]
    fig = comparison_figures.parallel_coordinates(configs, params, "val/total", "continuous")
    ax = fig.axes[0]
    drawn = [line for line in ax.lines if len(line.get_xdata()) == len(params) + 1]
    assert len(drawn) == len(CONFIGS) + 1  # one per configuration, and the best again on top
    assert list(drawn[-1].get_ydata()) == [1.0, 0.0, 0.0]  # the best: largest z, first style
    assert [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()] == [
        "latent_dim (latent units)",
        "style",
        "mean val −ELBO on intensities (nats)",
    ]
    assert figures.legend_texts(fig) == (
        "best: latent_dim=32, style=custom_loop (mean 126.00)",
        "4 configurations, coloured by mean",
    )
    assert fig.get_figwidth() <= comparison_figures.MAX_WIDTH


def test_the_rate_distortion_plane_has_a_panel_per_group_and_rings_its_pareto_front():
    elbo = pd.DataFrame(
        {
            "reconstruction": [100.0, 110.0, 105.0, math.nan],
            "kl": [25.0, 20.0, 30.0, 1.0],  # the third is beaten by the first on both
            "flag": ["", "", "", ""],
        }
    )
    notebook = pd.DataFrame({"reconstruction": [0.07], "kl": [0.0], "flag": ["collapsed"]})
    fig = comparison_figures.rate_distortion(
        [("loss elbo", metrics.CONTINUOUS_ELBO, elbo), ("loss mse", metrics.OTHER_LOSS, notebook)]
    )
    first, second = fig.axes
    assert first.get_xlabel() == "val BCE on intensities (nats)"
    assert first.get_ylabel() == "val KL (nats)"
    assert second.get_xlabel() == "val reconstruction (loss units)"
    assert [first.get_title(), second.get_title()] == ["loss elbo", "loss mse"]
    assert figures.legend_texts(fig) == (
        "active (3)",
        "Pareto front (2)",
        "collapsed (1)",
        "Pareto front (1)",
    )
    ringed = first.collections[-1].get_offsets().tolist()
    assert ringed == [[100.0, 25.0], [110.0, 20.0]]


@pytest.mark.parametrize(
    "kind, total",
    [(metrics.LIKELIHOOD, "−ELBO ≥ −log p(x) (nats)"), (metrics.OTHER_LOSS, "loss (loss units)")],
)
def test_a_runs_loss_curves_say_what_each_term_is_and_its_unit(kind, total):
    history = {
        f"{split}/{term}": [3.0, 2.0, 1.5] for split in ("train", "val") for term in metrics.TERMS
    }
    fig = plots.loss_curves(history, kind)
    check_axes(fig, epoch_axes=True)
    assert [ax.get_ylabel() for ax in fig.axes][0] == total
    assert fig.axes[2].get_ylabel() == "KL (nats)"
    assert figures.legend_texts(fig) == ("train", "val") * 3
