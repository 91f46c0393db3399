"""The report's figures: every axis labelled with its unit, every figure with a legend.

Curves that coincide (functional and subclass runs are bit-identical) are drawn once and
named together, and lines differ in marker and style as well as colour, so that no run
hides behind another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from vaelab import metrics, ranking

_LINES = ("-o", "--s", ":^", "-.D", "-v", "--P", ":X", "-.*")
# Learning curves name at most this many lines in their legend; the rest are drawn faint.
MAX_LABELLED = 10


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
    ax.set_xlabel(param)
    ax.set_ylabel(metrics.label(by, kind))
    ax.set_title(f"{by} against {param}", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax)


def split_scatter(table: pd.DataFrame, kind: str) -> Figure:
    """Each run's test KL against its test reconstruction term; collapsed runs marked."""
    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    styles = {"": ("tab:blue", "o", "active"), "partial": ("tab:orange", "s", "partial collapse")}
    styles["collapsed"] = ("tab:red", "x", "collapsed")
    for flag, (colour, marker, name) in styles.items():
        rows = table[table["flag"].eq(flag)]
        if len(rows):
            ax.scatter(
                ranking.metric(rows, "test/reconstruction"),
                ranking.metric(rows, "test/kl"),
                c=colour,
                marker=marker,
                label=f"{name} ({len(rows)})",
            )
    ax.set_xlabel(metrics.label("test/reconstruction", kind))
    ax.set_ylabel(metrics.label("test/kl", kind))
    ax.set_title("KL / reconstruction split of each run", fontsize=9)
    return _finish(fig, ax)


def learning_curves(
    histories: Mapping[str, Sequence[tuple[int, float]]],
    labels: Mapping[str, str],
    order: Sequence[str],
    by: str,
    kind: str,
) -> Figure:
    """Each run's per-epoch metric, labelled by run; identical curves drawn once.

    `order` is the ranking: the first MAX_LABELLED distinct curves are named in the legend.
    """
    from vaelab.report.tables import identical_runs

    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    same = {tuple(group): group for group in identical_runs(histories)}
    drawn = 0
    for group in sorted(same.values(), key=lambda g: min(order.index(r) for r in g)):
        steps, values = zip(*histories[group[0]], strict=True) if histories[group[0]] else ((), ())
        if not steps:
            continue
        name = " = ".join(labels[r] for r in group)
        if len(group) > 1:
            name += " (identical)"
        if drawn < MAX_LABELLED:
            ax.plot(steps, values, _LINES[drawn % len(_LINES)], label=name, markersize=4)
        else:
            ax.plot(steps, values, "-", color="0.75", linewidth=0.8, zorder=0)
        drawn += 1
    if drawn > MAX_LABELLED:
        ax.plot([], [], "-", color="0.75", label=f"{drawn - MAX_LABELLED} more runs")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metrics.label(by, kind))
    ax.set_title(f"{by} per epoch", fontsize=9)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _finish(fig, ax, outside=True)
