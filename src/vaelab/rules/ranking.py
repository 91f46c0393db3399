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
from collections.abc import Mapping

import pandas as pd

from vaelab.vocab import metrics
from vaelab.vocab.tags import PRUNED

# Settings that change what the objective measures, or on which digits it is measured:
# the loss and its weights; continuous or binarised pixels (a training loss against a bound
# on -log p(x)); which digits are held out for validation (split_seed, validation_size) and
# tested (test_limit); the draw of the binarised validation and test pixels (binarize_seed).
COMPARABILITY = (
    "loss.reconstruction",
    "loss.pixel_reduction",
    "loss.kl_reduction",
    "loss.beta",
    "data.binarize",
    "data.binarize_seed",
    "data.split_seed",
    "data.validation_size",
    "data.test_limit",
)
# What a run that logged no such setting (older code) is grouped under: unknown settings
# compare with nothing, but the run is still shown.
UNKNOWN = "?"
# Runs without a validation active-unit count (older code) are called collapsed below this
# validation KL in nats. A rule of ranking, not a hyperparameter of a run: the sweep's
# summary, the sweeper's value and the report all judge with it.
COLLAPSE_KL = 0.01
TIE_BREAK = ("start_time", "run_id")
TIE_BREAK_RULE = "equal values: the earlier run ranks first (then the smaller run id)"


def column(frame: pd.DataFrame, name: str, default: object = math.nan) -> pd.Series:
    """A column of the frame, or a column of `default` when no run has it (older runs)."""
    return frame[name] if name in frame else pd.Series(default, index=frame.index, dtype=object)


def metric(frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(column(frame, f"metrics.{name}"), errors="coerce")


def is_collapsed(frame: pd.DataFrame) -> pd.Series:
    """Posterior collapse, judged on validation digits only (test numbers never choose).

    No active latent unit on the validation digits, or (runs of older code, which did not
    count them) a last validation KL of about zero.
    """
    units = metric(frame, metrics.VAL_ACTIVE_UNITS)
    kl = metric(frame, metrics.name("val", "kl"))
    return units.eq(0) | (units.isna() & kl.lt(COLLAPSE_KL))


class Pruned(float):
    """What a sweeper receives for a run its pruner stopped: infinite, and marked as such.

    Never a minimum, and a search records the trial as pruned rather than failed.
    """

    def __new__(cls, epoch: int) -> Pruned:
        value = super().__new__(cls, math.inf)
        value.epoch = epoch
        return value


def sweeper_value(values: Mapping[str, float], objective: str) -> float:
    """What a sweeper minimises: the objective, or inf for a run that ranking would never pick.

    A collapsed posterior, a missing or non-finite objective: so the sweeper's best is always
    a run the sweep's summary could name best.
    """
    frame = pd.DataFrame([{f"metrics.{name}": value for name, value in values.items()}])
    value = values.get(objective, math.nan)
    if is_collapsed(frame).iloc[0] or not math.isfinite(value):
        return math.inf
    return float(value)


def comparable_groups(frame: pd.DataFrame) -> pd.Series:
    """A label per run naming its comparable group; "all runs" when all runs compare.

    The label is the loss preset's name, with the settings that tell groups apart added
    only where two groups share a preset (e.g. `elbo` on intensities and on binary pixels).
    """
    keys = [f"params.{k}" for k in COMPARABILITY if f"params.{k}" in frame]
    values = _labels(frame[keys]) if keys else pd.DataFrame(index=frame.index)
    differing = [k for k in keys if values[k].nunique() > 1]
    if not differing:
        return pd.Series("all runs", index=frame.index)
    loss = "loss " + _labels(column(frame, "params.loss.name", UNKNOWN))
    signature = values[differing].apply(tuple, axis=1)
    shared = loss.groupby(loss).transform(lambda names: signature[names.index].nunique() > 1)
    detail = values[differing].apply(
        lambda row: ", ".join(f"{k.removeprefix('params.')}={v}" for k, v in row.items()), axis=1
    )
    return loss.where(~shared.astype(bool), loss + " (" + detail + ")")


def _labels(values: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """Settings as text, a missing one as UNKNOWN.

    Pandas 3 keeps NaN through `astype(str)`, and a NaN group label would drop the run from
    every groupby (the report's tables and figures) while it stayed in table.csv.
    """
    return values.astype(object).where(values.notna(), UNKNOWN).astype(str)


def rank(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """The frame sorted for display, with `group`, `rank`, `collapsed` and `tied_with` columns.

    `rank` counts within the group, finished and not collapsed runs only; a run its sweep's
    pruner stopped reads PRUNED and is never ranked. Groups come largest first (their values
    are in different units: no order between them means anything); within a group, ranked
    runs by the metric (lower is better), then the rest (collapsed, pruned, failed, running)
    as they started.
    """
    ranked = frame.copy()
    ranked["group"] = comparable_groups(frame)
    ranked["collapsed"] = is_collapsed(frame)
    pruned = column(frame, f"tags.{PRUNED}").notna()
    ranked["status"] = ranked["status"].where(~pruned, "PRUNED")  # its numbers: fewer epochs
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
