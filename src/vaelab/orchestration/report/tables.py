"""The report's logic, as plain functions over pandas DataFrames: no store, no drawing.

Inputs have MLflow's `search_runs` columns (run_id, status, start_time, `params.*`,
`metrics.*`, `tags.*`); each function is tested on small hand-made frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from vaelab.rules import identity, ranking, replicates
from vaelab.vocab import metrics
from vaelab.vocab.tags import ERROR_TAG, HEARTBEAT_TAG, PRUNED

# What the values of these hyperparameters count, for their axis labels (every hyperparameter
# that varies has an effect panel; the others' axes carry their name alone).
EFFECT_PARAMS = {
    "model.latent_dim": "latent units",
    "model.intermediate_dim": "hidden units",
    "train.epochs": "epochs",
}
# What a figure of one run's pictures always names, varying or not: a reader looking at
# reconstructions wants the architecture without decoding the table.
DESCRIBED_PARAMS = ("style.name", "model.latent_dim", "model.intermediate_dim")
# The importance-weighted estimate, under its name on binary and on continuous pixels.
IW_METRICS = (metrics.NLL_BOUND_IW, metrics.IW_BCE)
# Epoch times, by the metric they average and the column and header that show them: a solo
# run's own epoch, and a packed run's share of its group's epoch (not the same quantity, so
# never one column).
EPOCH_TIMES = {
    metrics.EPOCH_SECONDS: ("epoch_seconds", "epoch time, mean after the 1st (s)"),
    metrics.EPOCH_SECONDS_PER_MODEL: (
        "epoch_seconds_per_model",
        "packed: group's epoch time per model, mean after the 1st (s)",
    ),
}
# Shown in the table by their last part (`latent_dim`); the full names are in table.csv.
_SHORT = ("model.", "train.", "style.", "loss.", "data.")


def short_name(param: str) -> str:
    """`model.latent_dim` -> `latent_dim`; `loss.name` -> `loss` (the preset's name)."""
    if param.endswith(".name"):
        return param.removesuffix(".name")
    for prefix in _SHORT:
        if param.startswith(prefix):
            return param.removeprefix(prefix)
    return param


def status_with_staleness(frame: pd.DataFrame, stale_after_s: float, now: float) -> pd.Series:
    """MLflow's status, except that a RUNNING run silent for too long is called STALE.

    A process killed outright (SIGKILL, a lost machine) cannot close its run; its heartbeat
    (a tag renewed every epoch) stops, and that is how it is told from a live one.
    """
    last = pd.to_numeric(ranking.column(frame, f"tags.{HEARTBEAT_TAG}"), errors="coerce")
    started = pd.to_datetime(frame["start_time"], utc=True).astype("int64") / 1e9
    silent = now - last.fillna(started)
    stale = frame["status"].eq("RUNNING") & silent.gt(stale_after_s)
    return frame["status"].where(~stale, "STALE")


def varying_params(frame: pd.DataFrame) -> list[str]:
    """The params that differ between the selected runs (locations excluded), sorted."""
    params = {
        c.removeprefix("params."): frame[c].dropna() for c in frame if c.startswith("params.")
    }
    return sorted(identity.varying(params))


def mean_epoch_seconds(history: Sequence[tuple[int, float]]) -> float:
    """Mean epoch time over the epochs after the first (which includes compilation)."""
    later = [seconds for step, seconds in history if step > 1]
    return sum(later) / len(later) if later else math.nan


def active_units_text(frame: pd.DataFrame) -> pd.Series:
    """Active units on the validation digits (what collapse is judged by) as `k / latent_dim`."""
    units = ranking.metric(frame, metrics.VAL_ACTIVE_UNITS)
    dims = pd.to_numeric(ranking.column(frame, "params.model.latent_dim"), errors="coerce")

    def text(k: float, d: float) -> str:
        if math.isnan(k):
            return "–"
        return f"{int(k)} / {int(d)}" if not math.isnan(d) else f"{int(k)}"

    return pd.Series([text(k, d) for k, d in zip(units, dims, strict=True)], index=frame.index)


def collapse_flags(frame: pd.DataFrame, partial_fraction: float) -> pd.Series:
    """Flag each run "collapsed" (no active unit), "partial" (too few active) or not at all.

    On validation digits, as ranking judges collapse.
    """
    collapsed = ranking.is_collapsed(frame)
    units = ranking.metric(frame, metrics.VAL_ACTIVE_UNITS)
    dims = pd.to_numeric(ranking.column(frame, "params.model.latent_dim"), errors="coerce")
    partial = ~collapsed & (units / dims).lt(partial_fraction)
    flags = pd.Series("", index=frame.index, dtype=object)
    flags[partial] = "partial"
    flags[collapsed] = "collapsed"
    return flags


@dataclass(frozen=True)
class ComparableGroup:
    """One comparable group of runs: ranked among themselves, drawn in their own table."""

    label: str
    kind: str  # metrics.LIKELIHOOD, CONTINUOUS_ELBO or OTHER_LOSS
    table: pd.DataFrame


def build_table(
    frame: pd.DataFrame,
    by: str,
    partial_fraction: float,
    stale_after_s: float,
    now: float,
    epoch_times: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """Every run with its status, rank within its group, flags and derived columns.

    `epoch_times`: for each metric of EPOCH_TIMES, each run's mean (`mean_epoch_seconds`).
    """
    frame = frame.assign(status=status_with_staleness(frame, stale_after_s, now))
    table = ranking.rank(frame, by)
    # A pruned run was stopped before it was measured: no flag is inferred for it.
    table["flag"] = collapse_flags(table, partial_fraction).where(table["status"].ne("PRUNED"), "")
    table["active"] = active_units_text(table)
    for name, (column, _) in EPOCH_TIMES.items():
        seconds = (epoch_times or {}).get(name, {})
        table[column] = [seconds.get(run_id, math.nan) for run_id in table["run_id"]]
    table["kind"] = [metrics.loss_kind(params_of(row)) for _, row in table.iterrows()]
    return table


def params_of(row: pd.Series) -> dict[str, str]:
    return {k.removeprefix("params."): v for k, v in row.items() if k.startswith("params.")}


def groups(table: pd.DataFrame) -> list[ComparableGroup]:
    """The table split into its comparable groups, in ranking order."""
    return [
        ComparableGroup(str(label), rows["kind"].iloc[0], rows)
        for label, rows in table.groupby("group", sort=False)
    ]


def display_columns(
    group: ComparableGroup, by: str, varying: Sequence[str]
) -> list[tuple[str, str]]:
    """(column, header) pairs for the report's table: few enough for a 1400-px page."""
    kind = group.kind
    shown = [("rank", "rank"), ("run", "run"), ("status", "status")]
    shown += [(f"params.{p}", short_name(p)) for p in varying if p not in ranking.COMPARABILITY]
    for name in (by, metrics.TEST_TOTAL, metrics.TEST_KL):
        if (f"metrics.{name}", metrics.label(name, kind)) not in shown:
            shown.append((f"metrics.{name}", metrics.label(name, kind)))
    for name in IW_METRICS:
        if f"metrics.{name}" in group.table and group.table[f"metrics.{name}"].notna().any():
            shown.append((f"metrics.{name}", metrics.label(name, kind)))
    shown.append(("active", metrics.label(metrics.VAL_ACTIVE_UNITS)))
    if "best_epoch" in group.table and group.table["best_epoch"].astype(bool).any():
        shown.append(("best_epoch", f"best epoch of {by} where not the last: its value"))
    times = [
        (c, h) for c, h in EPOCH_TIMES.values() if c in group.table and group.table[c].notna().any()
    ]
    shown += times or [next(iter(EPOCH_TIMES.values()))]
    shown.append(("note", "note"))
    return shown


def configuration_rows(group: ComparableGroup, by: str, varying: Sequence[str]) -> pd.DataFrame:
    """A group's configurations as the report shows them, ranked by the mean of `by`.

    One row per configuration (its replicates differ only in their seed): the settings that
    vary, n, the mean with its 95% interval, whether the best cannot be told from it, and
    what became of each replicate. Headers name what each number is.
    """
    summary = replicates.summarise(group.table, by)
    label = metrics.label(by, group.kind)
    shown = [
        p for p in varying if p not in ranking.COMPARABILITY and p not in replicates.REPLICATE_KEYS
    ]
    rows = {"rank": summary["rank"]}
    for param in shown:
        column = f"params.{param}"
        rows[short_name(param)] = summary.get(column, "(varies)")
    rows["n (seeds finished)"] = summary["n"]
    rows[f"{label}: mean ± 95% interval"] = summary.apply(replicates.interval_text, axis=1)
    rows["≈ best"] = summary["indistinguishable"].map(
        lambda same: "–" if same is pd.NA else ("yes" if same else "no")
    )
    rows["replicates"] = summary["replicates"]
    return pd.DataFrame(rows)


def notes(table: pd.DataFrame, folded: Mapping[str, str] | None = None) -> pd.Series:
    """Flags and ties in words, for the table's last column.

    `folded`: per run id, what stands in place of a tie for runs that differ only in a
    hyperparameter that changes no number (`rules.comparison.Collapsed.notes`).
    """

    def note(row: pd.Series) -> str:
        parts = [row["flag"]] if row["flag"] else []
        if row["status"] == "PRUNED":
            stopped = row.get(f"tags.{PRUNED}")
            planned = row.get("params.train.epochs", "?")
            parts.append(f"pruned: its numbers are epoch {stopped}'s of {planned}")
        if (folded or {}).get(row["run_id"]):
            parts.append(folded[row["run_id"]])
        elif row["tied_with"]:
            parts.append(f"tied with {', '.join(r[:8] for r in row['tied_with'].split(', '))}")
        return "; ".join(parts)

    return table.apply(note, axis=1) if len(table) else pd.Series(dtype=object)


def best_epoch_text(found: tuple[int, float, int] | None) -> str:
    """`rules.comparison.best_epochs`' finding for a run as the table shows it: "2 of 3: 150.20"."""
    if found is None:
        return ""
    step, value, last = found
    return f"{step} of {last}: {value:.2f}"


def distinct_best(table: pd.DataFrame, by: str, k: int) -> pd.DataFrame:
    """The best k ranked runs of the first group, one per distinct result.

    runs with equal numbers (functional and subclass are bit-identical) show the same
    pictures.
    """
    first = table[table["group"].eq(table["group"].iloc[0]) & table["rank"].notna()]
    values = [ranking.metric(first, name).round(6).astype(str) for name in (by, metrics.TEST_TOTAL)]
    key = values[0] + " " + values[1]
    return first.loc[~key.duplicated()].head(k)


def identical_runs(histories: Mapping[str, Sequence[tuple[int, float]]]) -> list[list[str]]:
    """Runs whose curves are the same point for point, grouped (each run in one group)."""
    by_curve: dict[tuple, list[str]] = {}
    for run_id, history in histories.items():
        by_curve.setdefault(tuple(history), []).append(run_id)
    return list(by_curve.values())


def with_split(table: pd.DataFrame) -> pd.DataFrame:
    """The runs that measured both test terms (a failed or older run may have neither)."""
    reconstruction = ranking.metric(table, metrics.TEST_RECONSTRUCTION)
    return table[reconstruction.notna() & ranking.metric(table, metrics.TEST_KL).notna()]


def failures(table: pd.DataFrame) -> pd.DataFrame:
    failed = table[table["status"].isin(["FAILED", "KILLED", "STALE"])]
    error = ranking.column(failed, f"tags.{ERROR_TAG}", "").fillna("")
    return pd.DataFrame(
        {
            "run_id": failed["run_id"],
            "status": failed["status"],
            "error": error.replace("", "(no error recorded)"),
        }
    )


def run_label(row: pd.Series, varying: Sequence[str]) -> str:
    """A run named by what varies among the runs it is shown with, and its id's start.

    The settings of its comparable group (the loss) are said by the group, not repeated.
    """
    return _named(row, _shown(varying))


def run_description(row: pd.Series, varying: Sequence[str]) -> str:
    """A run named by its architecture (DESCRIBED_PARAMS) and whatever else varies."""
    others = [p for p in _shown(varying) if p not in DESCRIBED_PARAMS]
    return _named(row, [*DESCRIBED_PARAMS, *others])


def _shown(varying: Sequence[str]) -> list[str]:
    """The varying params that name a run, seed last; not its group's settings."""
    shown = [p for p in varying if p not in ("seed", "loss.name", *ranking.COMPARABILITY)]
    return [*shown, "seed"] if "seed" in varying else shown


def _named(row: pd.Series, params: Sequence[str]) -> str:
    settings = ", ".join(f"{short_name(p)}={row.get(f'params.{p}')}" for p in params)
    return f"{row['run_id'][:8]} ({settings})" if settings else row["run_id"][:8]


def iw_lines(table: pd.DataFrame) -> list[str]:
    """K (importance samples per digit) for each group that has an IW estimate, and only those.

    A group without one (the notebook's MSE, or older runs) is not said to have K samples.
    """
    lines = []
    several = table["group"].nunique() > 1
    for group in groups(table):
        estimated = pd.concat(
            [ranking.metric(group.table, name).notna() for name in IW_METRICS], axis=1
        ).any(axis=1)
        if not estimated.any():
            continue
        samples = ranking.column(group.table[estimated], "params.eval.iw_samples")
        k = ", ".join(sorted(set(samples.fillna(ranking.UNKNOWN).astype(str))))
        among = f" ({group.label})" if several else ""
        lines.append(
            f"The importance-weighted estimate{among} uses K = {k} samples per digit, on the "
            "same test digits."
        )
    return lines


def summary_lines(
    title: str,
    table: pd.DataFrame,
    varying: Sequence[str],
    by: str,
    superseded: Sequence[str] = (),
    folded: Mapping[str, str] | None = None,
) -> list[str]:
    """What was compared, how it was ranked, what is best and what collapsed, in words.

    `folded`: as for `notes`; the best run's identical twins are not called ties.
    """
    start = pd.to_datetime(table["start_time"], utc=True).min()
    end = pd.to_datetime(ranking.column(table, "end_time", pd.NaT), utc=True).max()
    end = start if pd.isna(end) else end
    commits = sorted(set(ranking.column(table, "tags.git.commit", "").dropna()) - {""})
    counts = table["status"].value_counts().to_dict()
    digits = ranking.metric(table, metrics.TEST_DIGITS).dropna()
    lines = [
        f"Compared: {title}; {len(table)} runs "
        f"({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}).",
        f"When: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC. Code: "
        f"{', '.join(c[:10] for c in commits) or 'unknown'}.",
        f"Varying: {', '.join(varying) or 'nothing'}.",
        f"Ranked by {by} (lower is better) within groups of comparable runs (same loss, same "
        f"data and digits); a collapsed run is never ranked; {ranking.TIE_BREAK_RULE}.",
    ]
    if superseded:
        lines.append(superseded_line(superseded))
    if len(digits):
        counts_text = ", ".join(str(int(d)) for d in sorted(set(digits)))
        lines.append(f"Test numbers average over {counts_text} test digits.")
    lines += iw_lines(table)
    for _, row in replicates.best_runs(table, by).iterrows():
        among = f" among {row['group']}" if table["group"].nunique() > 1 else ""
        ties = f", tied with {row['tied_with']}" if row["tied_with"] else ""
        ties = f"; {folded[row['run_id']]}" if (folded or {}).get(row["run_id"]) else ties
        value = ranking.metric(table.loc[[row.name]], by).iloc[0]
        lines.append(f"Best{among}: {run_label(row, varying)} with {by} = {value:.4f}{ties}.")
    measured = table["status"].eq("FINISHED")  # a pruned or failed run was never measured
    flags = table["flag"][measured]
    lines.append(
        f"Posterior collapse: {int(flags.eq('collapsed').sum())} of {int(measured.sum())} "
        "measured runs (finished: pruned and failed runs are not measured) have no active "
        f"latent unit on the validation digits; {int(flags.eq('partial').sum())} are "
        "partially collapsed."
    )
    return lines


def superseded_line(superseded: Sequence[str]) -> str:
    """Why some runs of a sweep are left out: the sweep's summary judges the same attempts."""
    return (
        f"Superseded: {len(superseded)} other attempt(s) of configurations of this sweep are "
        "neither ranked nor shown, as in the sweep's summary (a configuration counts by its "
        "first FINISHED run, else its latest: a killed run a relaunch redid, or a second run "
        f"trained with force=true): {', '.join(r[:8] for r in superseded)}."
    )


def sweep_title(sweep_id: str | None, count: int) -> str:
    return f"sweep {sweep_id}" if sweep_id else f"the latest {count} runs"
