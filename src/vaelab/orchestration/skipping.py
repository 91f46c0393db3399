"""Which planned runs train: a sweep's held configurations are skipped, killed runs resumed.

Asked of the store before any run of the batch opens: a configuration that already FINISHED
in the sweep (or trains in a live process) is skipped with the holder's result; one whose
earlier attempt was killed carries that run on from its newest valid checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging

from vaelab.edges import tracking
from vaelab.orchestration.stores import StoreCache
from vaelab.rules import checkpoints, console
from vaelab.rules.lifecycle import claims
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.runs import PlannedRun, Resumed, RunResult
from vaelab.vocab import metrics

log = logging.getLogger(__name__)


def sort_out(
    planned: list[PlannedRun], stores: StoreCache, context: SweepContext | None, engine: str
) -> tuple[list[int], dict[int, RunResult]]:
    """The jobs to train (each planned run given what it resumes) and the skipped ones' results."""
    todo, skipped = [], {}
    for i, plan in enumerate(planned):
        store = stores.of(plan.config)
        held = claims.holder(
            store, context, plan.config_hash, plan.config.force, claimant=plan.extra_tags
        )
        if held is None:
            planned[i] = dataclasses.replace(plan, resumed=resumed(store, context, plan, engine))
            todo.append(i)
        else:
            log.info(console.skipping(store, context, held))
            skipped[i] = RunResult(held.run_id, held.metrics, skipped=True)
    return todo, skipped


def resumed(
    store: tracking.Store, context: SweepContext | None, plan: PlannedRun, engine: str
) -> Resumed | None:
    """A killed attempt at this configuration to carry on, with its newest valid checkpoint."""
    run = claims.resumable(store, context, plan.config_hash, engine, plan.extra_tags)
    if run is None:
        live = None if context else claims.live_attempt(store, plan.config_hash, engine)
        if live is not None:
            log.info(console.not_resuming(store, live))
        return None
    saved = tracking.artifact_paths(store, run.run_id, checkpoints.DIRECTORY)
    checkpoint = checkpoints.newest_valid(
        saved, lambda path: tracking.read_artifact_bytes(store, run.run_id, path), run.run_id
    )
    logged = {step for step, _ in tracking.metric_history(store, run.run_id, metrics.OBJECTIVES[0])}
    return Resumed(run, checkpoint, frozenset(logged))
