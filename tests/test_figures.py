"""Figures read at a glance: axis labels with units, legends, integer epoch ticks, one panel
per comparable group. Drawn from hand-made tables and histories, in milliseconds."""

import re

import pandas as pd
import pytest

from vaelab.orchestration.report import figures, tables
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


def test_effect_plots_label_the_size_they_vary_and_one_line_per_style():
    effect = pd.DataFrame(
        {"functional": [170.0, 130.0, 125.0], "subclass": [171.0, 131.0, 126.0]},
        index=[2.0, 16.0, 32.0],
    )
    fig = figures.effect_plot(effect, "model.latent_dim", "val/total", metrics.LIKELIHOOD)
    check_axes(fig, epoch_axes=False)
    assert fig.axes[0].get_xlabel() == "latent_dim (latent units)"
    assert figures.legend_texts(fig) == ("functional", "subclass")
    assert all(float(t).is_integer() for t in fig.axes[0].get_xticks())


def _split(run_id: str, reconstruction: float, kl: float, flag: str = "") -> dict:
    return {
        "run_id": run_id,
        "flag": flag,
        "metrics.test/reconstruction": reconstruction,
        "metrics.test/kl": kl,
    }


def _group(label: str, kind: str, rows: list[dict]) -> tables.ComparableGroup:
    table = pd.DataFrame(rows)
    return tables.ComparableGroup(label, kind, table.assign(kind=kind))


def test_the_split_has_a_panel_per_group_in_its_units_and_counts_only_drawn_runs():
    elbo = _group(
        "loss elbo",
        metrics.CONTINUOUS_ELBO,
        [
            {
                "run_id": "a",
                "flag": "",
                "metrics.test/reconstruction": 100.0,
                "metrics.test/kl": 25.0,
            },
            {
                "run_id": "b",
                "flag": "",
                "metrics.test/reconstruction": 110.0,
                "metrics.test/kl": 20.0,
            },
            {"run_id": "failed", "flag": "", "metrics.test/reconstruction": None},
        ],
    )
    notebook = _group(
        "loss notebook_functional", metrics.OTHER_LOSS, [_split("c", 0.07, 0.0, "collapsed")]
    )
    fig = figures.split_scatter([elbo, notebook])
    check_axes(fig, epoch_axes=False)
    first, second = fig.axes
    assert first.get_xlabel() == "test BCE on intensities (nats)"
    assert second.get_xlabel() == "test reconstruction (loss units)"
    assert [first.get_title(), second.get_title()] == ["loss elbo", "loss notebook_functional"]
    assert figures.legend_texts(fig) == ("active (2)", "collapsed (1)")


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
