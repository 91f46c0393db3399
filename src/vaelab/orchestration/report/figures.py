"""The report's run figures (learning curves), and how any chart reaches the page.

Every axis is labelled with its unit, every figure has a legend; the configurations'
figures are in comparison_figures.

Curves that coincide (functional and subclass runs are bit-identical) are drawn once and
named together, and lines differ in marker and style as well as colour, so that no run
hides behind another.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure

from vaelab.orchestration.report import render
from vaelab.orchestration.report.tables import identical_runs
from vaelab.vae import plots
from vaelab.vocab import metrics

# Report figures are read on a screen at their own size: at 110 dpi a 9-inch figure is
# 990 px wide and its 7-point text about 11 px high (run artifacts keep 80 dpi).
REPORT_DPI = 110
_LINES = ("-o", "--s", ":^", "-.D", "-v", "--P", ":X", "-.*")
# Learning curves name at most this many lines in their legend; the rest are drawn faint.
MAX_LABELLED = 10
# Identical curves are named together up to this many runs, then counted.
MAX_NAMED_IDENTICAL = 3
# A legend entry wraps at this many characters, so no entry is wider than half the plot.
LEGEND_WRAP = 60


def chart(name: str, caption: str, figure: Figure) -> render.Figure:
    """A drawn chart as the page carries it: PNG at REPORT_DPI, caption, legend entries."""
    png = plots.png_bytes(figure, dpi=REPORT_DPI)
    return render.Figure(name, caption, png, legend_texts(figure))


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
