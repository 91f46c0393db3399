"""A sweep's children in the store: the tags that make a run one, finding them, early failures."""

from __future__ import annotations

from collections.abc import Sequence

from vaelab.edges import tracking
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.vocab.tags import CHILD, CONFIG_HASH, OVERRIDES, SWEEP_ID, SWEEP_ROLE


def child_tags(context: SweepContext | None, config_hash: str) -> dict[str, str]:
    """What makes a run its sweep's child (outside a sweep: its configuration's hash only)."""
    if context is None:
        return {CONFIG_HASH: config_hash}
    return {CONFIG_HASH: config_hash, SWEEP_ID: context.sweep_id, SWEEP_ROLE: CHILD}


def children_of(
    store: tracking.Store, sweep_id: str, status: str | None = None
) -> list[tracking.RunRecord]:
    return tracking.find_runs(store, {SWEEP_ID: sweep_id, SWEEP_ROLE: CHILD}, status)


def children_filter(sweep_id: str) -> str:
    """The MLflow filter that selects a sweep's children (for `tracking.runs_frame`)."""
    return f"tags.`{SWEEP_ID}` = '{sweep_id}' and tags.`{SWEEP_ROLE}` = '{CHILD}'"


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
