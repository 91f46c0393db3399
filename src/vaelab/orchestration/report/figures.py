"""The report's figures: every axis labelled with its unit, every figure with a legend.

Curves that coincide (functional and subclass runs are bit-identical) are drawn once and
named together, and lines differ in marker and style as well as colour, so that no run
hides behind another.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab.orchestration.report.tables import (
    EFFECT_PARAMS,
    ComparableGroup,
    identical_runs,
    short_name,
    with_split,
)
from vaelab.rules import ranking
from vaelab.vae import plots
from vaelab.vocab import metrics

_LINES = ("-o", "--s", ":^", "-.D", "-v", "--P", ":X", "-.*")
# Learning curves name at most this many lines in their legend; the rest are drawn faint.
MAX_LABELLED = 10
# Identical curves are named together up to this many runs, then counted.
MAX_NAMED_IDENTICAL = 3
# A legend entry wraps at this many characters, so no entry is wider than half the plot.
LEGEND_WRAP = 60


def _finish(fig: Figure, ax, outside: bool = False) -> Figure:
    """Legend (beside the axes when it names runs, so it hides no curve), grid, layout."""
    if outside:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def effect_plot(effects: pd.DataFrame, param: str, by: str, kind: str) -> Figure:
    """The metric's mean against one hyperparameter, a line per style."""
    fig = Figure(figsize=(5, 3.4))
    ax = fig.subplots()
    for index, style in enumerate(effects.columns):
        series = effects[style].dropna()
        ax.plot(series.index, series.values, _LINES[index % len(_LINES)], label=str(style))
    ax.set_xlabel(f"{short_name(param)} ({EFFECT_PARAMS.get(param, 'value')})")
    ax.set_ylabel(metrics.label(by, kind))
    ax.set_title(f"{by} against {param}", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax)


# How each collapse flag is drawn in the split scatter: colour, marker, legend name.
_FLAG_STYLES = {
    "": ("tab:blue", "o", "active"),
    "partial": ("tab:orange", "s", "partial collapse"),
    "collapsed": ("tab:red", "x", "collapsed"),
}


def split_scatter(groups: Sequence[ComparableGroup]) -> Figure:
    """Each run's test KL against its test reconstruction term, one panel per group.

    Groups measure in different units (nats, the notebook's loss units), so each has its own
    axes labelled with its own; the legend counts the runs drawn (a failed run has no point).
    """
    fig = Figure(figsize=(4.6 * len(groups), 3.6))
    for ax, group in zip(fig.subplots(1, len(groups), squeeze=False)[0], groups, strict=True):
        drawn = with_split(group.table)
        for flag, (colour, marker, name) in _FLAG_STYLES.items():
            rows = drawn[drawn["flag"].eq(flag)]
            if len(rows):
                ax.scatter(
                    ranking.metric(rows, metrics.TEST_RECONSTRUCTION),
                    ranking.metric(rows, metrics.TEST_KL),
                    c=colour,
                    marker=marker,
                    label=f"{name} ({len(rows)})",
                )
        ax.set_xlabel(metrics.label(metrics.TEST_RECONSTRUCTION, group.kind))
        ax.set_ylabel(metrics.label(metrics.TEST_KL, group.kind))
        ax.set_title(group.label, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(4))  # long tick labels: few of them
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def legend_texts(fig: Figure) -> tuple[str, ...]:
    """Every legend entry of a drawn figure, for the page to carry (the browser test reads it)."""
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    legends += fig.legends
    return tuple(text.get_text() for legend in legends for text in legend.get_texts())


def learning_curves(
    histories: Mapping[str, Sequence[tuple[int, float]]],
    labels: Mapping[str, str],
    order: Sequence[str],
    by: str,
    kind: str,
) -> Figure:
    """Each run's per-epoch metric, labelled by run; identical curves drawn once.

    `order` is the ranking: the first MAX_LABELLED distinct curves are named in the legend.
    The legend sits below the plot, in two columns of wrapped entries, and the figure grows
    taller with it: however long the names, the plot keeps the figure's whole width.
    """
    same = {tuple(group): group for group in identical_runs(histories)}
    epochs = [step for history in histories.values() for step, _ in history]
    curves = []
    for group in sorted(same.values(), key=lambda g: min(order.index(r) for r in g)):
        if histories[group[0]]:
            curves.append((group, *zip(*histories[group[0]], strict=True)))
    names = [_curve_name(group, labels) for group, _, _ in curves[:MAX_LABELLED]]
    if len(curves) > MAX_LABELLED:
        names.append(f"{len(curves) - MAX_LABELLED} more runs")
    columns = 2 if len(names) > 1 else 1
    lines = sum(name.count("\n") + 1 for name in names)
    fig = Figure(figsize=(9, 3.6 + 0.17 * -(-lines // columns)), layout="constrained")
    ax = fig.subplots()
    for drawn, (_, steps, values) in enumerate(curves):
        if drawn < MAX_LABELLED:
            style = _LINES[drawn % len(_LINES)]
            ax.plot(steps, values, style, label=names[drawn], markersize=4)
        else:
            ax.plot(steps, values, "-", color="0.75", linewidth=0.8, zorder=0)
    if len(curves) > MAX_LABELLED:
        ax.plot([], [], "-", color="0.75", label=names[-1])
    plots.epoch_axis(ax, epochs)
    ax.set_ylabel(metrics.label(by, kind))
    ax.set_title(f"{by} per epoch", fontsize=9)
    # A figure legend "outside" is laid out by the constrained layout: it takes the rows it
    # needs below the axes, which keep the figure's width.
    fig.legend(fontsize=7, loc="outside lower center", ncols=columns, frameon=False)
    ax.grid(alpha=0.3)
    return fig


def _curve_name(group: Sequence[str], labels: Mapping[str, str]) -> str:
    """A legend entry: the run's label; for identical runs, the first one's and the others' ids."""
    others = [labels[r].split(" ", 1)[0] for r in group[1:MAX_NAMED_IDENTICAL]]
    name = " = ".join([labels[group[0]], *others])
    if len(group) > MAX_NAMED_IDENTICAL:
        name += f" and {len(group) - MAX_NAMED_IDENTICAL} more"
    if len(group) > 1:
        name += " (identical)"
    return textwrap.fill(name, LEGEND_WRAP, break_long_words=True)
