"""Each configuration's current attempt among the runs a sweep made of it.

A run killed and then redone by a relaunch, or trained again with force=true, is superseded:
the sweep is judged by what each configuration gave, while the store keeps every attempt.
Pure pandas over `search_runs` columns, so that the sweep summary (run records) and the report
(a runs frame) select the same runs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from vaelab.edges import tracking
from vaelab.rules import ranking
from vaelab.vocab.tags import CONFIG_HASH, OVERRIDES


def current_attempts(runs: list[tracking.RunRecord]) -> list[tracking.RunRecord]:
    """One run per configuration (see `current_attempt_ids`), in the order given."""
    current = set(current_attempt_ids(records_frame(runs)))
    return [run for run in runs if run.run_id in current]


def current_attempt_ids(frame: pd.DataFrame) -> list[str]:
    """One run per configuration: its first FINISHED attempt if any, else its latest.

    The ids come oldest first.
    """
    if frame.empty:
        return []
    key = frame["run_id"].astype(object)
    for tag in (OVERRIDES, CONFIG_HASH):  # each wins over the one before: hash, overrides, id
        value = ranking.column(frame, f"tags.{tag}").astype(object)
        key = value.where(value.notna() & value.ne(""), key)
    runs = frame.assign(_key=key).sort_values(["start_time", "run_id"], kind="stable")
    finished = runs[runs["status"].eq("FINISHED")].drop_duplicates("_key", keep="first")
    rest = runs[~runs["_key"].isin(finished["_key"])].drop_duplicates("_key", keep="last")
    return list(runs.loc[runs.index.isin(finished.index.union(rest.index)), "run_id"])


def records_frame(runs: list[tracking.RunRecord]) -> pd.DataFrame:
    """Records in the shape of MLflow's `search_runs`, for the pure ranking functions."""
    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "status": run.status,
            "start_time": run.start_time,
        }
        row.update({f"params.{k}": v for k, v in run.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.metrics.items()})
        row.update({f"tags.{k}": v for k, v in run.tags.items()})
        rows.append(row)
    columns = ["run_id", "status", "start_time"]
    return pd.DataFrame(rows, columns=None if rows else columns)


def overrides_of(row: pd.Series) -> str:
    """A runs-frame row's overrides: what tells a user which configuration it is."""
    value = row.get(f"tags.{OVERRIDES}", "")
    return "" if isinstance(value, float) else str(value)
