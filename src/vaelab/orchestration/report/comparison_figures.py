"""The comparison's figures: effects with intervals, parallel coordinates, rate–distortion.

Each draws configurations (`replicates.summarise` rows), never single seeds, and takes its
numbers from `rules.comparison`; every figure carries a legend (the browser test reads it)
and stays within a 1400-px page however many configurations and hyperparameters it shows.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from vaelab.orchestration.report.tables import EFFECT_PARAMS, short_name
from vaelab.rules import comparison
from vaelab.vocab import metrics

# No figure is wider than this (inches): at the report's 110 dpi, 1265 px of a 1400-px page.
MAX_WIDTH = 11.5
EFFECT_PANEL = (3.7, 2.9)  # one hyperparameter's panel, inches
EFFECT_COLUMNS = 3
EFFECT_WRAP = 45  # characters of legend a panel's width holds
# A numeric axis spanning this ratio or more is drawn on a log scale (learning rates).
LOG_RATIO = 100
# A legend entry wraps at this many characters.
LEGEND_WRAP = 70
# A parallel axis names at most this many of its values.
AXIS_TICKS = 6
# How each collapse flag is drawn on the rate–distortion plane: colour, marker, legend name.
_TICK = {"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1}  # over the lines
FLAG_STYLES = {
    "": ("tab:blue", "o", "active"),
    "partial": ("tab:orange", "s", "partial collapse"),
    "collapsed": ("tab:red", "x", "collapsed"),
}


def axis_label(param: str) -> str:
    """A hyperparameter's axis label: its short name, and what its values count where known."""
    unit = EFFECT_PARAMS.get(param)
    return f"{short_name(param)} ({unit})" if unit else short_name(param)


def _positions(values: pd.Index) -> tuple[np.ndarray, list[str], bool]:
    """Where a hyperparameter's values sit on an axis, their tick labels, and a log scale."""
    numbers = pd.to_numeric(pd.Series(values), errors="coerce")
    if numbers.notna().all() and not isinstance(values[0], str):
        log = numbers.min() > 0 and numbers.max() / numbers.min() >= LOG_RATIO
        return numbers.to_numpy(dtype=float), [f"{v:g}" for v in numbers], bool(log)
    return np.arange(len(values), dtype=float), [str(v) for v in values], False


def effect_panels(configs: pd.DataFrame, params: Sequence[str], by: str, kind: str) -> Figure:
    """The mean of `by` at each value of each hyperparameter, with its 95% interval.

    One panel per hyperparameter, sharing the objective's axis so effects compare by eye;
    `configs`: a group's ranked configurations (rules.comparison.effects).
    """
    columns = min(EFFECT_COLUMNS, len(params))
    rows = math.ceil(len(params) / columns)
    width, height = EFFECT_PANEL
    fig = Figure(figsize=(width * columns, height * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    lone = False
    for ax, param in zip(axes, params, strict=False):
        effect = comparison.effects(configs, param)
        x, ticks, log = _positions(effect.index)
        spread = np.vstack([effect["mean"] - effect["low"], effect["high"] - effect["mean"]])
        ax.errorbar(x, effect["mean"], yerr=spread, fmt="-o", capsize=4, markersize=5)
        lone |= bool(effect["low"].isna().any())
        ax.set_xscale("log" if log else "linear")
        ax.set_xticks(x, ticks, minor=False)
        ax.set_xlabel(axis_label(param))
        ax.grid(alpha=0.3)
        for value, mean, count in zip(x, effect["mean"], effect["configurations"], strict=True):
            ax.annotate(
                f"{count}",
                (value, mean),
                xytext=(4, 4),
                textcoords="offset points",
                fontsize=6,
                color="0.4",
            )
    for ax in axes[len(params) :]:
        ax.set_visible(False)
    for ax in axes[::columns]:
        ax.set_ylabel(metrics.label(by, kind))
    said = "mean over the configurations at a value, 95% interval; beside it: how many"
    handles = [Line2D([], [], marker="o", linestyle="-", label=said)]
    if lone:
        alone = "no bar: a single configuration, with a single seed"
        handles.append(Line2D([], [], marker="o", linestyle="", label=alone))
    for handle in handles:  # a single panel's legend stacks, each entry within its width
        handle.set_label(textwrap.fill(handle.get_label(), EFFECT_WRAP * columns))
    fig.legend(
        handles=handles,
        fontsize=7,
        loc="outside lower center",
        ncols=min(columns, 2),
        frameon=False,
    )
    fig.suptitle(f"{by} against each hyperparameter", fontsize=9)
    return fig


def parallel_coordinates(
    configs: pd.DataFrame, params: Sequence[str], by: str, kind: str
) -> Figure:
    """Each configuration a line across its hyperparameters' axes, coloured by mean `by`.

    Each axis spans its own values (numbers to scale, categories evenly); the last is the
    objective. The best configuration is drawn on top, thick, and named in the legend.
    """
    done = configs[configs["rank"].notna()].sort_values("mean", ascending=False)
    names = [*params, "mean"]
    scaled, tick_sets = [], []
    for name in names:
        column = done[name if name == "mean" else f"params.{name}"]
        position, ticks = _scaled(column)
        scaled.append(position)
        tick_sets.append(ticks)
    lines = np.column_stack(scaled)
    width = min(MAX_WIDTH, 1.7 * len(names) + 1.6)
    fig = Figure(figsize=(width, 4.0), layout="constrained")
    ax = fig.subplots()
    norm = Normalize(float(done["mean"].min()), float(done["mean"].max()))
    colours = colormaps["viridis_r"]  # the best (lowest) bright, the worst dark
    x = np.arange(len(names))
    for row, mean in zip(lines, done["mean"], strict=True):
        ax.plot(x, row, color=colours(norm(mean)), linewidth=1.2, alpha=0.85)
    best = done.iloc[-1]
    settings = ", ".join(f"{short_name(p)}={best[f'params.{p}']}" for p in params)
    named = textwrap.fill(f"best: {settings} (mean {best['mean']:.2f})", LEGEND_WRAP)
    ax.plot(x, lines[-1], color="black", linewidth=2.5, zorder=3, label=named)
    ax.plot([], [], color=colours(0.5), label=f"{len(done)} configurations, coloured by mean")
    for index, ticks in enumerate(tick_sets):
        ax.axvline(index, color="0.3", linewidth=0.8)
        for position, text in ticks:
            ax.text(index + 0.03, position, text, fontsize=7, va="center", zorder=4, bbox=_TICK)
    label = metrics.label(by, kind)
    titles = [axis_label(p) for p in params] + [f"mean {label}"]
    ax.set_xticks(x, [textwrap.fill(t, 18) for t in titles], fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(names) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=colours), ax=ax, label=f"mean {label}")
    fig.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    ax.set_title(f"Configurations across their hyperparameters, coloured by mean {by}", fontsize=9)
    return fig


def _scaled(column: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """A column placed on [0, 1] and the ticks that name its values there."""
    numbers = pd.to_numeric(column, errors="coerce")
    if numbers.notna().all():
        values = numbers.to_numpy(dtype=float)
        low, high = values.min(), values.max()
        log = low > 0 and high / low >= LOG_RATIO
        scale = np.log if log else (lambda v: v)
        span = scale(high) - scale(low) or 1.0
        placed = (scale(values) - scale(low)) / span
        shown = sorted(set(values))
        if len(shown) > AXIS_TICKS:
            shown = list(np.quantile(values, np.linspace(0, 1, AXIS_TICKS)))
        return placed, [((scale(v) - scale(low)) / span, f"{v:.4g}") for v in shown]
    categories = sorted(column.astype(str).unique())
    step = 1 / max(len(categories) - 1, 1)
    where = {c: i * step for i, c in enumerate(categories)}
    return column.astype(str).map(where).to_numpy(dtype=float), [(where[c], c) for c in categories]


def rate_distortion(panels: Sequence[tuple[str, str, pd.DataFrame]]) -> Figure:
    """KL against reconstruction on validation digits, one panel per comparable group.

    `panels`: (group label, loss kind, one row per configuration with `reconstruction`, `kl`
    and `flag`). The Pareto front (no configuration lower on both) is ringed and joined; each
    group has its own axes, in its own units.
    """
    width = min(4.6, MAX_WIDTH / len(panels))
    fig = Figure(figsize=(width * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (label, kind, plane) in zip(axes, panels, strict=True):
        plane = plane.dropna(subset=["reconstruction", "kl"])
        for flag, (colour, marker, name) in FLAG_STYLES.items():
            rows = plane[plane["flag"].eq(flag)]
            if len(rows):
                ax.scatter(
                    rows["reconstruction"],
                    rows["kl"],
                    c=colour,
                    marker=marker,
                    label=f"{name} ({len(rows)})",
                    zorder=2,
                )
        front = plane[comparison.pareto_front(plane["reconstruction"], plane["kl"])]
        front = front.sort_values("reconstruction")
        ax.plot(
            front["reconstruction"],
            front["kl"],
            "-",
            color="0.3",
            drawstyle="steps-post",
            linewidth=1,
            zorder=1,
        )
        ax.scatter(
            front["reconstruction"],
            front["kl"],
            s=130,
            facecolors="none",
            edgecolors="black",
            label=f"Pareto front ({len(front)})",
            zorder=3,
        )
        ax.set_xlabel(metrics.label(metrics.name("val", "reconstruction"), kind))
        ax.set_ylabel(metrics.label(metrics.name("val", "kl"), kind))
        ax.set_title(textwrap.fill(label, 50), fontsize=9)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    return fig
