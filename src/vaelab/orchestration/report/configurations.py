"""A comparable group's configurations: their table, importance, figures and sentences.

A group's runs are folded first (`rules.comparison.collapse`: a hyperparameter that changes no
number is said once and its runs shown once), then summarised per configuration
(`rules.replicates.summarise`); every table, figure and sentence here reads that one summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from vaelab.orchestration.report import comparison_figures, figures, render, tables
from vaelab.rules import comparison, importance, replicates
from vaelab.vocab import metrics


@dataclass
class GroupConfigurations:
    """One comparable group, folded and summarised per configuration."""

    group: tables.ComparableGroup
    folded: comparison.Collapsed
    summary: pd.DataFrame  # replicates.summarise of the folded runs

    @property
    def ranked(self) -> pd.DataFrame:
        return self.summary[self.summary["rank"].notna()]

    @property
    def params(self) -> list[str]:
        """The hyperparameters whose values differ between the ranked configurations."""
        return [
            p
            for p in comparison.hyperparameters(self.folded.runs)
            if f"params.{p}" in self.ranked and self.ranked[f"params.{p}"].nunique() > 1
        ]

    def among(self, several: bool) -> str:
        return f" ({self.group.label})" if several else ""


def of_group(group: tables.ComparableGroup, by: str) -> GroupConfigurations:
    folded = comparison.collapse(group.table, by)
    return GroupConfigurations(group, folded, replicates.summarise(folded.runs, by))


def lines(items: Sequence[GroupConfigurations], by: str) -> list[str]:
    """What the groups add to the summary: what changes no number, where no importance."""
    several = len(items) > 1
    said = []
    for item in items:
        among = item.among(several)
        said += [e.sentence(by, item.group.label if several else "") for e in item.folded.found]
        if len(item.ranked):
            why = importance.too_few(len(item.ranked), item.params)
            if why:
                said.append(f"Hyperparameter importance{among}: {why}.")
    return said


def table_views(
    item: GroupConfigurations, by: str, varying: Sequence[str], runs: render.TableView
) -> list[render.TableView]:
    """The group's configurations, its hyperparameters' importance, then its runs.

    Configurations are shown when some ran with several seeds or some runs were folded;
    importance where it can be estimated.
    """
    group, folded = item.group, item.folded
    if not (replicates.has_replicates(folded.runs) or folded.found):
        return [runs]
    named = f": {group.label}" if group.label != "all runs" else ""
    shown = [p for p in varying if p not in {e.param for e in folded.found}]
    kept = tables.ComparableGroup(group.label, group.kind, folded.runs)
    folds = "".join(f" {e.sentence(by)}" for e in folded.found)
    description = (
        f"One row per configuration; its runs differ only in their seed.{folds} "
        f"{replicates.INTERVAL_RULE}. {replicates.INDISTINGUISHABLE_RULE}. "
        f"{metrics.describe(group.kind)}"
    )
    views = [
        render.TableView(
            f"Configurations ranked by the mean of {by}{named}",
            description,
            tables.configuration_rows(kept, by, shown),
        )
    ]
    if (view := importance_view(item, by)) is not None:
        views.append(view)
    return [*views, runs]


def importance_view(item: GroupConfigurations, by: str) -> render.TableView | None:
    """Each hyperparameter's fANOVA share; None where there are too few configurations."""
    params = item.params
    if not len(item.ranked) or importance.too_few(len(item.ranked), params):
        return None
    found = importance.importances(item.ranked, params)
    named = f": {item.group.label}" if item.group.label != "all runs" else ""
    rows = pd.DataFrame(
        {
            "hyperparameter": [tables.short_name(p) for p in found],
            f"importance for mean {by} (share, sums to 1)": list(found.values()),
        }
    )
    description = f"{importance.METHOD}, over {len(item.ranked)} ranked configurations."
    return render.TableView(f"Hyperparameter importance{named}", description, rows)


def group_figures(
    item: GroupConfigurations, number: int, by: str, several: bool
) -> list[render.Figure]:
    """A group's effect panels (every hyperparameter that varies) and parallel coordinates."""
    ranked, params, among = item.ranked, item.params, item.among(several)
    if not params:
        return []
    drawn = [
        figures.chart(
            f"effects_{number}",
            f"Mean {by} at each value of each hyperparameter that varies, over the "
            f"{len(ranked)} ranked configurations{among}: at each value, the mean of the "
            "configurations' means with its 95% interval (Student's t over those "
            "configurations, the other settings averaged; where a value has a single "
            "configuration, the interval over its seeds).",
            comparison_figures.effect_panels(ranked, params, by, item.group.kind),
        )
    ]
    if len(params) >= 2 and len(ranked) >= 2:
        drawn.append(
            figures.chart(
                f"parallel_coordinates_{number}",
                f"Each of the {len(ranked)} ranked configurations{among} as a line through its "
                f"hyperparameters' values, ending at its mean {by} and coloured by it (the "
                "best drawn thick).",
                comparison_figures.parallel_coordinates(ranked, params, by, item.group.kind),
            )
        )
    return drawn


def plane(item: GroupConfigurations) -> pd.DataFrame:
    """Per configuration: mean validation reconstruction and KL, and its worst collapse flag."""
    runs = item.folded.runs
    means = {
        term: replicates.summarise(runs, metrics.name("val", term)).set_index("configuration")
        for term in ("reconstruction", "kl")
    }
    flags = runs.set_index("run_id")["flag"]
    worst = means["kl"]["run_ids"].map(
        lambda ids: (
            "collapsed"
            if flags[ids].eq("collapsed").any()
            else ("partial" if flags[ids].eq("partial").any() else "")
        )
    )
    return pd.DataFrame(
        {
            "reconstruction": means["reconstruction"]["mean"],
            "kl": means["kl"]["mean"],
            "flag": worst,
        }
    )


def plane_figure(items: Sequence[GroupConfigurations]) -> render.Figure | None:
    """The rate–distortion plane of the groups that measured both terms, or None."""
    panels = [(i.group.label, i.group.kind, plane(i)) for i in items]
    panels = [p for p in panels if p[2][["reconstruction", "kl"]].notna().all(axis=1).any()]
    if not panels:
        return None
    return figures.chart(
        "rate_distortion",
        "The rate–distortion plane: each configuration's mean validation KL (the rate) "
        "against its mean validation reconstruction term (the distortion), one panel per "
        "group of comparable runs in its own units; the Pareto front (no configuration "
        "lower on both) ringed and joined; configurations with a replicate whose posterior "
        "collapsed (no active unit) or partly collapsed are marked.",
        comparison_figures.rate_distortion(panels),
    )
