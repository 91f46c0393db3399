"""A sweep's parent run: found or created when the sweep starts (or is relaunched).

The parent records what the sweep is (its definition, size and objective) and, at the end,
its verdict (`lifecycle.verdict`). Starting also clears the children a dead process left
RUNNING, so that a relaunch resumes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from vaelab.edges import tracking
from vaelab.rules import console
from vaelab.rules.lifecycle.claims import first, mark_stale_children
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.vocab.tags import PARENT, SWEEP_ID, SWEEP_OBJECTIVE, SWEEP_ROLE, SWEEP_SIZE

log = logging.getLogger(__name__)

PARENTS_FILTER = f"tags.`{SWEEP_ROLE}` = '{PARENT}'"
SWEEP_ID_COLUMN = f"tags.{SWEEP_ID}"


def parent_filter(sweep_id: str) -> str:
    """The MLflow filter that selects a sweep's parent run."""
    return f"tags.`{SWEEP_ID}` = '{sweep_id}' and {PARENTS_FILTER}"


def parent_of(store: tracking.Store, sweep_id: str) -> tracking.RunRecord | None:
    found = tracking.find_runs(store, {SWEEP_ID: sweep_id, SWEEP_ROLE: PARENT})
    return found[0] if found else None


def start_sweep(
    store: tracking.Store,
    sweep_id: str,
    definition: Mapping[str, Any],
    total: int,
    objective: str,
    run_name: str | None = None,
) -> SweepContext:
    """Find this sweep's parent run (a relaunch) or create it, and clear its dead children.

    Two processes launching the same sweep at once both find no parent and both create one:
    each then keeps the earliest (`claims.first`) and withdraws its own if it is not that one.
    """
    tags = {
        SWEEP_ID: sweep_id,
        SWEEP_ROLE: PARENT,
        SWEEP_SIZE: total,
        SWEEP_OBJECTIVE: objective,
        **definition,
    }
    existing = parent_of(store, sweep_id)
    if existing is None:
        made = tracking.create_run(store, run_name or f"sweep-{sweep_id}", tags).run_id
        existing = first(tracking.find_runs(store, {SWEEP_ID: sweep_id, SWEEP_ROLE: PARENT}))
        if existing.run_id != made:
            tracking.delete_run(store, made)
    else:
        tracking.reopen_run(store, existing.run_id)
        tracking.update_run(store, existing.run_id, tags=tags)
    parent_id = existing.run_id
    stale = mark_stale_children(store, sweep_id)
    log.info(console.sweep_started(sweep_id, total, parent_id, len(stale)))
    return SweepContext(sweep_id, parent_id, total, objective)
