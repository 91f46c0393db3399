"""A sweep summed up: its children counted by status, each configuration's attempt ranked."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from vaelab.edges import tracking
from vaelab.rules import ranking, replicates
from vaelab.rules.lifecycle.attempts import current_attempts, records_frame
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.claims import live_children

STATUSES = ("FINISHED", "PRUNED", "FAILED", "KILLED", "RUNNING")


@dataclass(frozen=True)
class Summary:
    sweep_id: str
    objective: str
    ranked: pd.DataFrame  # ranking.rank of the current attempts
    counts: dict[str, int]
    training_elsewhere: int = 0  # RUNNING children with a fresh heartbeat

    @property
    def best(self) -> pd.DataFrame:
        """The run standing for each group's best (its best configuration's, with replicates)."""
        return replicates.best_runs(self.ranked, self.objective)

    @property
    def configurations(self) -> pd.DataFrame:
        """One row per configuration: its replicates' statistics (`replicates.summarise`)."""
        return replicates.summarise(self.ranked, self.objective)

    @property
    def failed(self) -> pd.DataFrame:
        return self.ranked[self.ranked["status"].isin(["FAILED", "KILLED"])]


def summarise(store: tracking.Store, sweep_id: str, objective: str) -> Summary:
    """Counts by status and the ranking of each configuration's current attempt."""
    every = children_of(store, sweep_id)
    runs = current_attempts(every)
    ranked = ranking.rank(records_frame(runs), objective)  # a pruned run reads PRUNED
    statuses = list(ranked["status"]) if len(ranked) else []
    counts = {status: statuses.count(status) for status in STATUSES}
    counts["SUPERSEDED"] = len(every) - len(runs)
    live = len(live_children(store, sweep_id))
    return Summary(sweep_id, objective, ranked, counts, live)
