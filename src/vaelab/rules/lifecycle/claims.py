"""Who holds a configuration: finished runs, live ones (fresh heartbeat), and dead ones.

A run's heartbeat tells a live process from a dead one (`tracking.is_stale`). Every process
of a sweep asks here before it trains a configuration (`holder`: skip it), whether a killed
attempt waits to be carried on (`resumable`), and, when a sweep is relaunched, which RUNNING
children a dead process left behind (`mark_stale_children`). A Ray task's retry need not wait
for its dead attempt's heartbeat to age: the runs that attempt held are its own (`superseded`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from vaelab.edges import tracking
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.vocab.tags import CONFIG_HASH, ENGINE, RAY_TASK_ID, RAY_WORKER_ID, STALE, SWEEP_ID


def superseded(run: tracking.RunRecord, claimant: Mapping[str, str]) -> bool:
    """Whether an earlier attempt of the claimant's own Ray task held `run`: dead, however fresh.

    `claimant`: the tags of whoever asks (`edges.ray_task.task_tags`; empty outside Ray). Ray
    runs one attempt of a task at a time and retries it, in another worker, only once its
    owner saw the attempt's worker or node die; so the same task in another worker is a dead
    attempt, whose runs the retry takes over at once instead of waiting `stale_after_s` (the
    dead worker stops writing within a second of its raylet: measured, docs/design.md).
    """
    task = claimant.get(RAY_TASK_ID)
    return (
        bool(task)
        and run.tags.get(RAY_TASK_ID) == task
        and run.tags.get(RAY_WORKER_ID) != claimant.get(RAY_WORKER_ID)
    )


def first(runs: Sequence[tracking.RunRecord]) -> tracking.RunRecord:
    """The run that holds a claim among rival ones: the earliest started, then the lowest id."""
    return min(runs, key=lambda run: (run.start_time, run.run_id))


def mark_stale_children(store: tracking.Store, sweep_id: str) -> list[str]:
    """Children left RUNNING by a dead process (heartbeat older than the store's timeout).

    A RUNNING child with a fresh heartbeat belongs to a live process (another launch of the
    same sweep, another machine): it is left alone.
    """
    now = time.time()
    stale = [r for r in children_of(store, sweep_id, "RUNNING") if tracking.is_stale(store, r, now)]
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
    return [
        r for r in children_of(store, sweep_id, "RUNNING") if not tracking.is_stale(store, r, now)
    ]


def holder(
    store: tracking.Store,
    context: SweepContext | None,
    config_hash: str,
    force: bool = False,
    mine: str | None = None,
    claimant: Mapping[str, str] | None = None,
) -> tracking.RunRecord | None:
    """The run that holds this configuration of the sweep, when it is not `mine`; else None.

    A run that FINISHED it (unless `force`), or a live one (RUNNING, fresh heartbeat) in this
    process or another. Asked before a run is created (skip at once), and again once it is
    (`mine`): two processes that created runs for the same configuration at once both see
    both, and only the earlier (`first`) trains; the other withdraws its run. So every
    configuration trains once and nothing alive is killed. A run an earlier attempt of the
    `claimant`'s Ray task held is no holder (`superseded`). Outside a sweep: None.
    """
    if context is None:
        return None
    rivals = tracking.find_runs(store, {SWEEP_ID: context.sweep_id, CONFIG_HASH: config_hash})
    finished = [r for r in rivals if r.status == "FINISHED"]
    if finished and not force:
        return finished[-1]
    now = time.time()
    live = [
        r
        for r in rivals
        if r.status == "RUNNING"
        and not tracking.is_stale(store, r, now)
        and not superseded(r, claimant or {})
    ]
    earliest = first(live) if live else None
    return None if earliest is None or earliest.run_id == mine else earliest


def resumable(
    store: tracking.Store,
    context: SweepContext | None,
    config_hash: str,
    engine: str,
    claimant: Mapping[str, str] | None = None,
) -> tracking.RunRecord | None:
    """The newest attempt at this configuration that was killed before it finished.

    KILLED (Ctrl-C, SIGTERM, marked stale), RUNNING with a stale heartbeat (a SIGKILL
    outside a sweep), or held by a dead attempt of the `claimant`'s Ray task (`superseded`),
    trained by the same engine (only it can read its checkpoints): a relaunch or a retry
    carries it on in the same run. Outside a sweep, among runs of no sweep.
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
        and (
            r.status == "KILLED"
            or tracking.is_stale(store, r, now)
            or (r.status == "RUNNING" and superseded(r, claimant or {}))
        )
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
