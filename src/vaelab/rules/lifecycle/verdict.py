"""The end of a sweep: its verdict written to the parent, the parent closed, the exit code."""

from __future__ import annotations

import logging

from vaelab.edges import tracking
from vaelab.rules import console
from vaelab.rules.lifecycle.attempts import overrides_of
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.lifecycle.summary import Summary, summarise
from vaelab.vocab.tags import BEST_OVERRIDES, BEST_RUN, SWEEP_COUNT_PREFIX

log = logging.getLogger(__name__)


class SweepFailed(SystemExit):
    """Raised at the end of a sweep in which some runs failed, so the exit code says so."""


def finish_sweep(store: tracking.Store, context: SweepContext) -> Summary:
    """Write the verdict to the parent (counts, best per group, summary.txt) and close it."""
    summary = summarise(store, context.sweep_id, context.objective)
    tags = {f"{SWEEP_COUNT_PREFIX}{k.lower()}": v for k, v in summary.counts.items()}
    best = summary.best
    run_metrics = {}
    if len(best) == 1:
        row = best.iloc[0]
        tags.update({BEST_RUN: row["run_id"], BEST_OVERRIDES: overrides_of(row)})
        run_metrics = {f"best/{context.objective}": float(row[f"metrics.{context.objective}"])}
    if len(best) > 1:
        for index, (_, row) in enumerate(best.iterrows(), start=1):
            tags[f"{BEST_RUN}.group{index}"] = f"{row['run_id']} ({row['group']})"
    table = console.format_table(summary)
    tracking.update_run(
        store,
        context.parent_run_id,
        tags=tags,
        metrics=run_metrics,
        texts={"summary.txt": table + "\n"},
    )
    if summary.training_elsewhere:
        log.info(console.still_training(context.sweep_id, summary.training_elsewhere))
        return summary
    status = "FAILED" if len(summary.failed) else "FINISHED"
    tracking.close_run(store, context.parent_run_id, status)
    return summary


def raise_if_failed(summary: Summary) -> None:
    if len(summary.failed):
        raise SweepFailed(console.failed_runs(summary))
