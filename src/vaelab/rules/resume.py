"""Carrying on killed runs in the same MLflow runs: claims, then the epochs they never logged.

Two processes relaunched at once may both want the same killed run. Each reopens it with a
claim token; after a moment every claim is read back, and a run whose token another process
overwrote is left to it. A claimed run then logs the epochs its checkpoint holds but it never
logged (it died between the two).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial

from vaelab.edges import process, tracking
from vaelab.rules import console
from vaelab.rules.runs import GroupRuns, PlannedRun, Resumed, RunResult
from vaelab.vocab.tags import RAY_TASK_TAGS, RESUME_CLAIM, RESUME_COUNT, RESUMED_FROM, STALE

log = logging.getLogger(__name__)

# How long claims on runs to resume settle before they are read back (see `claim`).
CLAIM_SETTLE_S = 1.0


def claim(store: tracking.Store, planned: Sequence[PlannedRun], runs: GroupRuns) -> list[int]:
    """Reopen every planned run that resumes a killed one; the jobs whose claim held.

    Each reopened run is open in `runs` at once (an interrupt ends it); one lost to another
    process leaves `open` and its result is the other's (skipped).
    """
    tokens = {}
    for i, plan in enumerate(planned):
        if (resumed := plan.resumed) is None:
            continue
        tokens[i] = uuid.uuid4().hex
        epoch = resumed.checkpoint.epoch if resumed.checkpoint else 0
        earlier = resumed.run.tags.get(RESUMED_FROM, "")
        tags = {
            RESUME_CLAIM: tokens[i],
            RESUMED_FROM: f"{earlier},{epoch}" if earlier else str(epoch),
            RESUME_COUNT: int(resumed.run.tags.get(RESUME_COUNT, 0)) + 1,
            STALE: "",
            **dict.fromkeys(RAY_TASK_TAGS, ""),  # the Ray task carrying it now, if any
            **plan.extra_tags,
        }
        with process.interrupts_held():
            runs.open[i] = tracking.resume_run(store, resumed.run.run_id, tags)
        runs.created[i] = resumed.run.run_id
    if tokens:
        time.sleep(CLAIM_SETTLE_S)
    claimed = []
    for i, token in tokens.items():
        run = planned[i].resumed.run
        if tracking.get_run(store, run.run_id).tags.get(RESUME_CLAIM) != token:
            log.info(console.resumed_elsewhere(run.run_id))
            del runs.open[i]
            runs.results[i] = RunResult(run.run_id, {}, skipped=True)
            continue
        claimed.append(i)
    return claimed


def backfill(
    resumed: Resumed, run: tracking.Run, write: Callable[[Callable[[], object]], object]
) -> frozenset[int]:
    """Queue the epochs its checkpoint holds that the run never logged; the epochs now logged."""
    checkpoint = resumed.checkpoint
    epoch = checkpoint.epoch if checkpoint else 0
    log.info(console.resuming(resumed.run.run_id, epoch, checkpoint is not None))
    if checkpoint is None:
        return resumed.logged
    for step in range(1, epoch + 1):
        if step not in resumed.logged:
            values = {name: values[step - 1] for name, values in checkpoint.history.items()}
            write(partial(run.log, values, step))
    return resumed.logged | frozenset(range(1, epoch + 1))
