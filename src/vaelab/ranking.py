"""Which runs may be ranked against each other, in what order, and which is best. Pure pandas.

Used by the sweep summary and the report alike, so the two can never name different best
runs. Runs are ranked only within a comparable group: the same objective (loss and its
weights) on the same data and digits. A collapsed posterior is never best, and among equal
values the earliest run wins (then the smaller run id), which the report says as "tied with".

The frames here have MLflow's `search_runs` columns: run_id, status, start_time, `params.*`,
`metrics.*`, `tags.*`.
"""

from __future__ import annotations

import math

import pandas as pd

from vaelab import metrics

# Settings that change what the objective measures, or on which digits it is measured.
COMPARABILITY = (
    "loss.reconstruction",
    "loss.pixel_reduction",
    "loss.kl_reduction",
    "loss.beta",
    "data.validation_size",
    "data.test_limit",
)
TIE_BREAK = ("start_time", "run_id")
TIE_BREAK_RULE = "equal values: the earlier run ranks first (then the smaller run id)"


def column(frame: pd.DataFrame, name: str, default: object = math.nan) -> pd.Series:
    """A column of the frame, or a column of `default` when no run has it (older runs)."""
    return frame[name] if name in frame else pd.Series(default, index=frame.index, dtype=object)


def metric(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(column(frame, f"metrics.{name}"), errors="coerce")


def is_collapsed(frame: pd.DataFrame, kl_threshold: float) -> pd.Series:
    """Posterior collapse: no active latent unit, or (older runs) a test KL of about zero."""
    units = metric(frame, metrics.ACTIVE_UNITS)
    kl = metric(frame, metrics.name(metrics.FINAL_SPLIT, "kl"))
    return units.eq(0) | (units.isna() & kl.lt(kl_threshold))


def comparable_groups(frame: pd.DataFrame) -> pd.Series:
    """A label per run naming its comparable group; "all runs" when all runs compare.

    The label is the loss preset's name, with the settings that tell groups apart added
    only where two groups share a preset (e.g. `elbo` on intensities and on binary pixels).
    """
    keys = [f"params.{k}" for k in COMPARABILITY if f"params.{k}" in frame]
    values = frame[keys].astype(str) if keys else pd.DataFrame(index=frame.index)
    differing = [k for k in keys if values[k].nunique() > 1]
    if not differing:
        return pd.Series("all runs", index=frame.index)
    loss = "loss " + column(frame, "params.loss.name", "?").astype(str)
    signature = values[differing].apply(tuple, axis=1)
    shared = loss.groupby(loss).transform(lambda names: signature[names.index].nunique() > 1)
    detail = values[differing].apply(
        lambda row: ", ".join(f"{k.removeprefix('params.')}={v}" for k, v in row.items()), axis=1
    )
    return loss.where(~shared.astype(bool), loss + " (" + detail + ")")


def rank(frame: pd.DataFrame, by: str, kl_threshold: float) -> pd.DataFrame:
    """The frame sorted for display, with group, rank and tie columns.

    with `group`, `rank` (within the group, finished and not collapsed runs only),
    `collapsed` and `tied_with` columns. Groups come largest first (their values are in
    different units: no order between them means anything); within a group, ranked runs
    by the metric (lower is better), then the rest (collapsed, failed, running) as they
    started.
    """
    ranked = frame.copy()
    ranked["group"] = comparable_groups(frame)
    ranked["collapsed"] = is_collapsed(frame, kl_threshold)
    value = metric(frame, by)
    rankable = ranked["status"].eq("FINISHED") & ~ranked["collapsed"] & value.notna()
    ranked = ranked.assign(_value=value.where(rankable), _unranked=~rankable)
    size = ranked.groupby("group")["run_id"].transform("size")
    ranked = ranked.assign(_group_size=-size)
    ranked = ranked.sort_values(
        ["_group_size", "group", "_unranked", "_value", *TIE_BREAK], na_position="last"
    )
    ranked["rank"] = ranked.groupby("group").cumcount() + 1
    ranked["rank"] = ranked["rank"].where(~ranked["_unranked"]).astype("Int64")
    ranked["tied_with"] = _ties(ranked)
    return ranked.drop(columns=["_value", "_unranked", "_group_size"]).reset_index(drop=True)


def _ties(ranked: pd.DataFrame) -> pd.Series:
    """For each ranked run, the other runs of its group with exactly the same value."""
    ties = pd.Series("", index=ranked.index, dtype=object)
    for _, group in ranked[ranked["_value"].notna()].groupby(["group", "_value"]):
        if len(group) > 1:
            for index in group.index:
                others = [r for i, r in group["run_id"].items() if i != index]
                ties[index] = ", ".join(others)
    return ties


def best(ranked: pd.DataFrame) -> pd.DataFrame:
    """The best run of each comparable group (rows of a `rank` result with rank 1)."""
    return ranked[ranked["rank"].eq(1)]
