"""The life of a sweep in the run store: one owner for its runs, its tags and its verdict.

A sweep is one parent run whose children are its configurations. This module starts it
(finds or creates the parent, marks children that a dead process left RUNNING as KILLED),
tells a job whether its configuration already FINISHED, records a job that failed before its
run existed, and at the end counts, ranks and closes. The Hydra callback, the packed
launcher, the rerun of a sweep and the report all go through it, and every tag name a sweep
writes is spelled here once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vaelab.edges import tracking
from vaelab.rules import ranking
from vaelab.vocab import metrics
from vaelab.vocab.errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_ID = "sweep.id"
SWEEP_ROLE = "sweep.role"
PARENT = "parent"
CHILD = "child"
CONFIG_HASH = "config_hash"
OVERRIDES = "hydra.overrides"
RERUN_OF = "rerun_of"
STALE = "stale"
# How a child was trained: "solo" (its own process or job) or "packed" (with its group).
ENGINE = "engine"
PACK_GROUP = "pack.group"
BEST_RUN = "sweep.best_run_id"
# The parent's record of what the sweep is: its definition, size and objective.
SWEEP_OVERRIDES = "sweep.overrides"
SWEEPER = "sweep.sweeper"
LAUNCHER = "sweep.launcher"
SWEEP_SIZE = "sweep.size"
SWEEP_OBJECTIVE = "sweep.objective"
CONTEXT_FILE = "vaelab_sweep.json"
STATUSES = ("FINISHED", "PRUNED", "FAILED", "KILLED", "RUNNING")


@dataclass(frozen=True)
class SweepContext:
    """What each job of a sweep needs to know about the sweep it belongs to."""

    sweep_id: str
    parent_run_id: str
    total: int
    objective: str = metrics.OBJECTIVES[0]


class SweepFailed(SystemExit):
    """Raised at the end of a sweep in which some runs failed, so the exit code says so."""


def child_tags(context: SweepContext | None, config_hash: str) -> dict[str, str]:
    if context is None:
        return {CONFIG_HASH: config_hash}
    return {CONFIG_HASH: config_hash, SWEEP_ID: context.sweep_id, SWEEP_ROLE: CHILD}


def children(store: tracking.Store, sweep_id: str, status: str | None = None):
    return tracking.find_runs(store, {SWEEP_ID: sweep_id, SWEEP_ROLE: CHILD}, status)


def parent(store: tracking.Store, sweep_id: str) -> tracking.RunRecord | None:
    found = tracking.find_runs(store, {SWEEP_ID: sweep_id, SWEEP_ROLE: PARENT})
    return found[0] if found else None


def children_filter(sweep_id: str) -> str:
    """The MLflow filter that selects a sweep's children (for `tracking.runs_frame`)."""
    return f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{SWEEP_ROLE}` = '{CHILD}'"


PARENTS_FILTER = f"tags.`{SWEEP_ROLE}` = '{PARENT}'"


def parent_filter(sweep_id: str) -> str:
    """The MLflow filter that selects a sweep's parent run."""
    return f"tags.`{SWEEP_ID}` = '{sweep_id}' and {PARENTS_FILTER}"


SWEEP_ID_COLUMN = f"tags.{SWEEP_ID}"


def start(
    store: tracking.Store,
    sweep_id: str,
    definition: Mapping[str, Any],
    total: int,
    objective: str,
    run_name: str | None = None,
) -> SweepContext:
    """Find this sweep's parent run (a relaunch) or create it, and clear its dead children.

    Two processes launching the same sweep at once both find no parent and both create one:
    each then keeps the earliest (`_first`) and withdraws its own if it is not that one.
    """
    tags = {
        SWEEP_ID: sweep_id,
        SWEEP_ROLE: PARENT,
        SWEEP_SIZE: total,
        SWEEP_OBJECTIVE: objective,
        **definition,
    }
    existing = parent(store, sweep_id)
    if existing is None:
        made = tracking.create_run(store, run_name or f"sweep-{sweep_id}", tags).run_id
        existing = _first(tracking.find_runs(store, {SWEEP_ID: sweep_id, SWEEP_ROLE: PARENT}))
        if existing.run_id != made:
            tracking.delete_run(store, made)
    else:
        tracking.reopen_run(store, existing.run_id)
        tracking.update_run(store, existing.run_id, tags=tags)
    parent_id = existing.run_id
    stale = mark_stale_children(store, sweep_id)
    log.info(
        "Sweep %s: %d runs, parent run %s%s",
        sweep_id,
        total,
        parent_id,
        f"; {len(stale)} stale RUNNING runs marked KILLED" if stale else "",
    )
    return SweepContext(sweep_id, parent_id, total, objective)


def _first(runs: Sequence[tracking.RunRecord]) -> tracking.RunRecord:
    """The run that holds a claim among rival ones: the earliest started, then the lowest id."""
    return min(runs, key=lambda run: (run.start_time, run.run_id))


def mark_stale_children(store: tracking.Store, sweep_id: str) -> list[str]:
    """Children left RUNNING by a dead process (heartbeat older than the store's timeout).

    A RUNNING child with a fresh heartbeat belongs to a live process (another launch of the
    same sweep, another machine): it is left alone.
    """
    now = time.time()
    stale = [r for r in children(store, sweep_id, "RUNNING") if tracking.is_stale(store, r, now)]
    for run in stale:
        age = tracking.heartbeat_age(run.tags, run.start_time, now)
        tracking.update_run(store, run.run_id, tags={STALE: "true"})
        tracking.close_run(
            store,
            run.run_id,
            "KILLED",
            error=f"left RUNNING by a process that died (no heartbeat for {age:.0f} s); relaunched",
        )
    return [run.run_id for run in stale]


def live_children(store: tracking.Store, sweep_id: str) -> list[tracking.RunRecord]:
    """Children some process is training now: RUNNING with a fresh heartbeat."""
    now = time.time()
    return [r for r in children(store, sweep_id, "RUNNING") if not tracking.is_stale(store, r, now)]


def holder(
    store: tracking.Store,
    context: SweepContext | None,
    config_hash: str,
    force: bool = False,
    mine: str | None = None,
) -> tracking.RunRecord | None:
    """The run that holds this configuration of the sweep, when it is not `mine`; else None.

    A run that FINISHED it (unless `force`), or a live one (RUNNING, fresh heartbeat) in this
    process or another. Asked before a run is created (skip at once), and again once it is
    (`mine`): two processes that created runs for the same configuration at once both see
    both, and only the earlier (`_first`) trains; the other withdraws its run. So every
    configuration trains once and nothing alive is killed. Outside a sweep: None.
    """
    if context is None:
        return None
    rivals = tracking.find_runs(store, {SWEEP_ID: context.sweep_id, CONFIG_HASH: config_hash})
    finished = [r for r in rivals if r.status == "FINISHED"]
    if finished and not force:
        return finished[-1]
    now = time.time()
    live = [r for r in rivals if r.status == "RUNNING" and not tracking.is_stale(store, r, now)]
    first = _first(live) if live else None
    return None if first is None or first.run_id == mine else first


def resumable(
    store: tracking.Store, context: SweepContext | None, config_hash: str, engine: str
) -> tracking.RunRecord | None:
    """The newest attempt at this configuration that was killed before it finished.

    KILLED (Ctrl-C, SIGTERM, marked stale), or RUNNING with a stale heartbeat (a SIGKILL
    outside a sweep), trained by the same engine (only it can read its checkpoints): a
    relaunch carries it on in the same run. Outside a sweep, among runs of no sweep.
    """
    found = tracking.find_runs(store, {CONFIG_HASH: config_hash})
    if context is None:
        found = [r for r in found if SWEEP_ID not in r.tags]
    else:
        found = [r for r in found if r.tags.get(SWEEP_ID) == context.sweep_id]
    now = time.time()
    dead = [
        r
        for r in found
        if r.tags.get(ENGINE) == engine
        and (r.status == "KILLED" or tracking.is_stale(store, r, now))
    ]
    return max(dead, key=lambda r: (r.start_time, r.run_id)) if dead else None


def live_attempt(store: tracking.Store, config_hash: str, engine: str) -> tracking.RunRecord | None:
    """Outside a sweep, a RUNNING attempt at this configuration whose heartbeat is fresh.

    A single run is never skipped (training the same configuration twice on purpose is
    legitimate), but a relaunch right after a SIGKILL would otherwise start anew silently:
    this is the run it could have resumed, had its claim expired.
    """
    found = tracking.find_runs(store, {CONFIG_HASH: config_hash}, status="RUNNING")
    now = time.time()
    live = [
        r
        for r in found
        if SWEEP_ID not in r.tags
        and r.tags.get(ENGINE) == engine
        and not tracking.is_stale(store, r, now)
    ]
    return max(live, key=lambda r: (r.start_time, r.run_id)) if live else None


def claim_expiry(store: tracking.Store, run: tracking.RunRecord) -> tuple[float, str]:
    """The age of a run's heartbeat, and the clock time at which its claim expires."""
    age = tracking.heartbeat_age(run.tags, run.start_time)
    expires = time.strftime(
        "%H:%M:%S", time.localtime(time.time() + max(store.stale_after_s - age, 0))
    )
    return age, expires


def not_resuming(store: tracking.Store, live: tracking.RunRecord) -> str:
    """The line a single run prints when it starts anew beside a live attempt."""
    age, expires = claim_expiry(store, live)
    return (
        f"Run {live.run_id} of this configuration is RUNNING (heartbeat {age:.0f} s ago), so "
        f"this launch trains a new run; if that process is dead, its claim expires at "
        f"{expires} (tracking.stale_after_s={store.stale_after_s:g}) and the same command "
        f"then resumes it"
    )


def skipping(store: tracking.Store, context: SweepContext, held_by: tracking.RunRecord) -> str:
    """The line a user reads when a job trains nothing: finished, or training elsewhere."""
    if held_by.status == "FINISHED":
        return (
            f"Skipping: this configuration already FINISHED in sweep {context.sweep_id} as run "
            f"{held_by.run_id} (force=true trains it again)"
        )
    age, expires = claim_expiry(store, held_by)
    return (
        f"Skipping: run {held_by.run_id} is training this configuration (heartbeat {age:.0f} s "
        f"ago); if its process is dead, its claim expires at {expires} "
        f"(tracking.stale_after_s={store.stale_after_s:g}) and a relaunch then takes it over"
    )


def write_context(sweep_dir: Path, context: SweepContext) -> None:
    """Leave the context beside Hydra's multirun.yaml, where every launcher's jobs can read it."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / CONTEXT_FILE).write_text(json.dumps(asdict(context)))


def read_context(sweep_dir: Path) -> SweepContext:
    path = sweep_dir / CONTEXT_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: the sweep callback did not run. Keep "
            "`hydra.callbacks.vaelab_sweep` in conf/config.yaml."
        )
    return SweepContext(**json.loads(path.read_text()))


def record_early_failure(
    store: tracking.Store,
    context: SweepContext,
    run_name: str,
    overrides: Sequence[str],
    error: BaseException,
) -> str:
    """A FAILED child for a job that failed before its run existed.

    (bad config, bad data), so that the sweep's summary and exit code account for every
    job.
    """
    tags = {SWEEP_ID: context.sweep_id, SWEEP_ROLE: CHILD, OVERRIDES: " ".join(overrides)}
    run = tracking.create_run(store, run_name, tags, parent_run_id=context.parent_run_id)
    run.end("FAILED", f"{type(error).__name__}: {error}")
    return run.run_id


def current_attempts(runs: list[tracking.RunRecord]) -> list[tracking.RunRecord]:
    """One run per configuration (see `current_attempt_ids`), in the order given."""
    current = set(current_attempt_ids(records_frame(runs)))
    return [run for run in runs if run.run_id in current]


def current_attempt_ids(frame: pd.DataFrame) -> list[str]:
    """One run per configuration: its first FINISHED attempt if any, else its latest.

    A run killed and then redone by a relaunch, or trained again with force=true, is
    superseded: the sweep is judged by what each configuration gave, while the store keeps
    every attempt. Pure pandas over `search_runs` columns, so that the sweep summary (run
    records) and the report (a runs frame) select the same runs; the ids come oldest first.
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


@dataclass(frozen=True)
class Summary:
    sweep_id: str
    objective: str
    ranked: pd.DataFrame  # ranking.rank of the current attempts
    counts: dict[str, int]
    training_elsewhere: int = 0  # RUNNING children with a fresh heartbeat

    @property
    def best(self) -> pd.DataFrame:
        return ranking.best(self.ranked)

    @property
    def failed(self) -> pd.DataFrame:
        return self.ranked[self.ranked["status"].isin(["FAILED", "KILLED"])]


def summarise(store: tracking.Store, sweep_id: str, objective: str) -> Summary:
    """Counts by status and the ranking of each configuration's current attempt."""
    every = children(store, sweep_id)
    runs = current_attempts(every)
    ranked = ranking.rank(records_frame(runs), objective)  # a pruned run reads PRUNED
    statuses = list(ranked["status"]) if len(ranked) else []
    counts = {status: statuses.count(status) for status in STATUSES}
    counts["SUPERSEDED"] = len(every) - len(runs)
    live = len(live_children(store, sweep_id))
    return Summary(sweep_id, objective, ranked, counts, live)


def format_table(summary: Summary) -> str:
    """One line per run, best first within each comparable group: what a user reads."""
    objective, ranked = summary.objective, summary.ranked
    several = ranked["group"].nunique() > 1
    lines = []
    for group, rows in ranked.groupby("group", sort=False):
        if several:
            lines.append(f"-- {group}")
        test = metrics.TEST_TOTAL
        lines.append(f"{'status':<9} {objective:>11} {test:>11}  {'run_id':<32}  overrides")
        for _, row in rows.iterrows():
            lines.append(
                f"{row['status']:<9} {_value(row, objective):>11.4f} "
                f"{_value(row, metrics.TEST_TOTAL):>11.4f}  {row['run_id']}  {_overrides(row)}"
            )
    return "\n".join(lines)


def _value(row: pd.Series, name: str) -> float:
    value = pd.to_numeric(row.get(f"metrics.{name}", math.nan), errors="coerce")
    return float(value)


def finish(store: tracking.Store, context: SweepContext) -> Summary:
    """Write the verdict to the parent (counts, best per group, summary.txt) and close it."""
    summary = summarise(store, context.sweep_id, context.objective)
    tags = {f"sweep.count.{k.lower()}": v for k, v in summary.counts.items()}
    best = summary.best
    run_metrics = {}
    if len(best) == 1:
        row = best.iloc[0]
        tags.update({BEST_RUN: row["run_id"], "sweep.best_overrides": _overrides(row)})
        run_metrics = {f"best/{context.objective}": float(row[f"metrics.{context.objective}"])}
    if len(best) > 1:
        for index, (_, row) in enumerate(best.iterrows(), start=1):
            tags[f"{BEST_RUN}.group{index}"] = f"{row['run_id']} ({row['group']})"
    table = format_table(summary)
    tracking.update_run(
        store,
        context.parent_run_id,
        tags=tags,
        metrics=run_metrics,
        texts={"summary.txt": table + "\n"},
    )
    if summary.training_elsewhere:
        log.info(
            "Sweep %s: %d run(s) still training in another process; the sweep's parent stays "
            "RUNNING until the last process finishes it",
            context.sweep_id,
            summary.training_elsewhere,
        )
        return summary
    status = "FAILED" if len(summary.failed) else "FINISHED"
    tracking.close_run(store, context.parent_run_id, status)
    return summary


def _overrides(row: pd.Series) -> str:
    value = row.get(f"tags.{OVERRIDES}", "")
    return "" if isinstance(value, float) else str(value)


def verdict(summary: Summary) -> str:
    """What the user reads when a sweep ends: counts, the table, the best of each group."""
    counts = ", ".join(f"{n} {s.lower()}" for s, n in summary.counts.items() if n)
    lines = [f"\nSweep {summary.sweep_id}: {counts}", format_table(summary)]
    several = summary.ranked["group"].nunique() > 1
    for _, row in summary.best.iterrows():
        among = f" among {row['group']}" if several else ""
        ties = f"; tied with {row['tied_with']}" if row["tied_with"] else ""
        lines.append(
            f"Best by {summary.objective}{among}: {row['run_id']} ({_overrides(row)}){ties}"
        )
    return "\n".join(lines)


def raise_if_failed(summary: Summary) -> None:
    failed = summary.failed
    if len(failed):
        names = ", ".join(f"{r['run_id']} ({_overrides(r)})" for _, r in failed.iterrows())
        raise SweepFailed(f"{len(failed)} run(s) of sweep {summary.sweep_id} failed: {names}")
