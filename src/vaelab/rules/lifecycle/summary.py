"""A sweep summed up: its children counted by status, each configuration's attempt ranked.

Its tables fold the runs of a hyperparameter that changes no number as the report does
(`rules.comparison.collapse`, group by group): the three styles are bit-identical by design,
so a sweep over `style` is said once to be a fidelity check, and its runs are shown and
ranked once rather than as ties. The best run is the one the report names: the first of its
identical runs stands for them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from vaelab.edges import tracking
from vaelab.rules import comparison, ranking, replicates
from vaelab.rules.lifecycle.attempts import current_attempts, records_frame
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.claims import live_children

STATUSES = ("FINISHED", "PRUNED", "FAILED", "KILLED", "RUNNING")


def fold(ranked: pd.DataFrame, by: str) -> dict[str, comparison.Collapsed]:
    """Each comparable group's runs with the hyperparameters that change no number folded.

    Per group, as the report folds them: a hyperparameter is judged on the runs it is ranked
    with. Keyed by the group's label, in the ranking's order of groups.
    """
    return {
        str(group): comparison.collapse(rows, by)
        for group, rows in ranked.groupby("group", sort=False)
    }


def folded_runs(ranked: pd.DataFrame, folded: Mapping[str, comparison.Collapsed]) -> pd.DataFrame:
    """The runs left after folding, in the ranking's order (a group's folded columns empty)."""
    if not folded:
        return ranked
    return pd.concat([collapsed.runs for collapsed in folded.values()])


@dataclass(frozen=True)
class Summary:
    sweep_id: str
    objective: str
    ranked: pd.DataFrame  # ranking.rank of the current attempts
    counts: dict[str, int]
    folded: dict[str, comparison.Collapsed]  # per comparable group (`fold`)
    training_elsewhere: int = 0  # RUNNING children with a fresh heartbeat

    @property
    def runs(self) -> pd.DataFrame:
        """The runs its tables show and rank: `ranked` less the runs folded into another."""
        return folded_runs(self.ranked, self.folded)

    @property
    def no_effect(self) -> list[tuple[str, comparison.NoEffect]]:
        """(group, hyperparameter) for each hyperparameter that changes no number."""
        return [(group, effect) for group, c in self.folded.items() for effect in c.found]

    @property
    def notes(self) -> dict[str, str]:
        """Per run id, what stands in place of a tie ("stands for ..."), as in the report."""
        return {run: said for c in self.folded.values() for run, said in c.notes().items()}

    @property
    def best(self) -> pd.DataFrame:
        """The run standing for each group's best (its best configuration's, with replicates)."""
        return replicates.best_runs(self.runs, self.objective)

    @property
    def configurations(self) -> pd.DataFrame:
        """One row per configuration: its replicates' statistics (`replicates.summarise`)."""
        return replicates.summarise(self.runs, self.objective)

    @property
    def failed(self) -> pd.DataFrame:
        return self.ranked[self.ranked["status"].isin(["FAILED", "KILLED"])]


def summarise(store: tracking.Store, sweep_id: str, objective: str) -> Summary:
    """Counts by status, the ranking of each configuration's current attempt, its folds."""
    every = children_of(store, sweep_id)
    runs = current_attempts(every)
    ranked = ranking.rank(records_frame(runs), objective)  # a pruned run reads PRUNED
    statuses = list(ranked["status"]) if len(ranked) else []
    counts = {status: statuses.count(status) for status in STATUSES}
    counts["SUPERSEDED"] = len(every) - len(runs)
    live = len(live_children(store, sweep_id))
    return Summary(sweep_id, objective, ranked, counts, fold(ranked, objective), live)
