"""The sentences a user reads: on the console, in a sweep's summary, on a pruned run's page.

Message strings live with the console, not in the code that decides: one place to read and
reword what vaelab says, the same words whichever engine, launcher or entry point got there.
Each function builds a line from plain values and records; its caller decides the level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from vaelab.edges import tracking
from vaelab.edges.config import Config
from vaelab.rules import comparison, identity, replicates
from vaelab.rules.lifecycle.attempts import overrides_of
from vaelab.rules.lifecycle.claims import claim_expiry
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.lifecycle.summary import Summary
from vaelab.rules.naming import run_name
from vaelab.vocab import metrics

# -- a run ----------------------------------------------------------------------------------


def run_started(run_id: str, style: str, device: str, train_rows: int) -> str:
    return f"Run {run_id}: style={style} on {device}, {train_rows} training images"


def describe_epoch(epoch: int, epochs: int, values: Mapping[str, float]) -> str:
    """The console line of a run's epoch, the same for every style and engine."""
    train, val = (
        {t: values[metrics.name(split, t)] for t in metrics.TERMS} for split in metrics.EPOCH_SPLITS
    )
    seconds = values.get(metrics.EPOCH_SECONDS, values.get(metrics.GROUP_EPOCH_SECONDS, 0.0))
    return (
        f"epoch {epoch}/{epochs}  train/total {train['total']:.3f} (reconstruction "
        f"{train['reconstruction']:.3f} + kl {train['kl']:.3f})  val/total {val['total']:.3f}  "
        f"{seconds:.1f} s"
    )


def describe_result(run_id: str, final: Mapping[str, float], latent_dim: int, browse: str) -> str:
    """The line a user reads when a run ends: its headline numbers, named, and where to look.

    `browse`: the run's page on the server that holds it, or `make ui` (`ui.browse_hint`).
    """
    names = (metrics.OBJECTIVES[0], metrics.TEST_METRICS[0], metrics.NLL_BOUND_IW, metrics.IW_BCE)
    shown = [f"{name} {final[name]:.3f}" for name in names if name in final]
    if metrics.ACTIVE_UNITS in final:
        shown.append(f"active units {int(final[metrics.ACTIVE_UNITS])} / {latent_dim}")
    return f"Run {run_id} FINISHED: {', '.join(shown)} (browse: {browse})"


def run_write_failed(sweep_id: str, run_id: str, error: BaseException) -> str:
    return f"[sweep {sweep_id}] run {run_id} FAILED: {error}"


def checkpoint_not_written(run_id: str, epoch: int, error: BaseException) -> str:
    return (
        f"Run {run_id}: the checkpoint of epoch {epoch} could not be written ({error}); the "
        "run goes on, resumable from its previous checkpoint"
    )


def run_pruned(sweep_id: str, run_id: str, epoch: int) -> str:
    return f"[sweep {sweep_id}] run {run_id} pruned at epoch {epoch}"


def pruned_marks(config: Config, epoch: int, sweep_id: str) -> tuple[str, str]:
    """A pruned run's name and description in the MLflow UI, which would read "Finished".

    The name keeps the run's (`... 3ep ...` is what it was set to train) and says where it
    stopped; the description, on the run's page, says by what and what its numbers are.
    """
    note = (
        f"Pruned at epoch {epoch} of {config.train.epochs} by the "
        f"{config.sweep.pruner.value} pruner (sweep {sweep_id}): its numbers are those of "
        f"{epoch} epoch{'s' if epoch != 1 else ''}, not a whole run's; it has no test "
        "metrics and is never ranked."
    )
    return f"{run_name(config)} pruned@{epoch}", note


# -- claims and resumes ---------------------------------------------------------------------


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


def not_resuming(store: tracking.Store, live: tracking.RunRecord) -> str:
    """The line a single run prints when it starts anew beside a live attempt."""
    age, expires = claim_expiry(store, live)
    return (
        f"Run {live.run_id} of this configuration is RUNNING (heartbeat {age:.0f} s ago), so "
        f"this launch trains a new run; if that process is dead, its claim expires at "
        f"{expires} (tracking.stale_after_s={store.stale_after_s:g}) and the same command "
        f"then resumes it"
    )


def resuming(run_id: str, epoch: int, from_checkpoint: bool) -> str:
    """A killed run carried on: where it starts again, and from what."""
    source = f"its checkpoint of epoch {epoch}" if from_checkpoint else "no valid checkpoint: anew"
    return f"Resuming run {run_id} at epoch {epoch + 1} ({source})"


def resumed_elsewhere(run_id: str) -> str:
    return f"Skipping: run {run_id} was resumed by another process"


# -- a group --------------------------------------------------------------------------------


def group_started(sweep_id: str, group: str, runs: int, device: str) -> str:
    return f"[sweep {sweep_id}] packed group {group}: {runs} runs on {device}"


def group_failed(sweep_id: str, group: str, error: BaseException) -> str:
    return f"[sweep {sweep_id}] group {group} failed: {error}"


def group_submitted(
    sweep_id: str, group: str, runs: int, cpus: float, gpus: int, memory: int
) -> str:
    """A packed group sent to a Ray cluster as one task, with what it asked for."""
    return (
        f"[sweep {sweep_id}] packed group {group}: {runs} runs sent to Ray as one task "
        f"({cpus:g} CPU, {gpus} GPU, {memory / 2**20:.0f} MiB)"
    )


def group_returned(sweep_id: str, group: str, runs: int, failed: int) -> str:
    """A packed group's Ray task ended: its jobs are recorded now, whatever the others do."""
    done = runs - failed
    return f"[sweep {sweep_id}] packed group {group}: back from Ray, {done} of {runs} runs done"


def group_task_lost(sweep_id: str, group: str, reason: str) -> str:
    """A group's Ray task that failed every retry: its runs wait for a relaunch to resume them."""
    return (
        f"[sweep {sweep_id}] group {group}: its Ray task failed and its retries are spent "
        f"({reason}); relaunch the sweep to resume its runs"
    )


def group_timing(
    group: str | None, runs: int, seconds: float, setup: float, training: float, evaluation: float
) -> str:
    """Where a packed group's time went; what is left over is the recorder's (logging)."""
    logging_seconds = seconds - setup - training - evaluation
    return (
        f"packed group {group}: {runs} runs in {seconds:.1f} s: setup {setup:.1f} s, training "
        f"{training:.1f} s, evaluation {evaluation:.1f} s, logging {logging_seconds:.1f} s"
    )


# -- a sweep --------------------------------------------------------------------------------


def sweep_started(sweep_id: str, total: int, parent_run_id: str, stale: int) -> str:
    marked = f"; {stale} stale RUNNING runs marked KILLED" if stale else ""
    return f"Sweep {sweep_id}: {total} runs, parent run {parent_run_id}{marked}"


def still_training(sweep_id: str, runs: int) -> str:
    return (
        f"Sweep {sweep_id}: {runs} run(s) still training in another process; the sweep's "
        "parent stays RUNNING until the last process finishes it"
    )


def format_table(summary: Summary) -> str:
    """One line per run, best first within each comparable group: what a user reads.

    Runs folded into another (`Summary.runs`: a hyperparameter that changes no number) are
    left out, and one line per such hyperparameter says so, as the report does.
    """
    objective, ranked = summary.objective, summary.runs
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
                f"{_value(row, metrics.TEST_TOTAL):>11.4f}  {row['run_id']}  {overrides_of(row)}"
            )
    return "\n".join([*lines, *no_effect_lines(summary.folded, objective)])


def no_effect_lines(folded: Mapping[str, comparison.Collapsed], by: str) -> list[str]:
    """The report's sentence for each hyperparameter that changes no number, per group."""
    several = len(folded) > 1
    return [
        effect.sentence(by, group if several else "")
        for group, collapsed in folded.items()
        for effect in collapsed.found
    ]


def _value(row: pd.Series, name: str) -> float:
    value = pd.to_numeric(row.get(f"metrics.{name}", math.nan), errors="coerce")
    return float(value)


def verdict(summary: Summary) -> str:
    """What the user reads when a sweep ends: counts, the table, the best of each group.

    With replicates, the configurations ranked by their mean come after the runs, and the
    best is the best configuration (its best replicate's run id), never the luckiest seed.
    """
    counts = ", ".join(f"{n} {s.lower()}" for s, n in summary.counts.items() if n)
    lines = [f"\nSweep {summary.sweep_id}: {counts}", format_table(summary)]
    several = summary.ranked["group"].nunique() > 1
    with_seeds = replicates.has_replicates(summary.runs)
    if with_seeds:
        lines.append(configurations_table(summary))
    notes = summary.notes  # "stands for ...": its identical runs are not called ties
    for _, row in summary.best.iterrows():
        among = f" among {row['group']}" if several else ""
        ties = f"; tied with {row['tied_with']}" if row["tied_with"] and not with_seeds else ""
        ties = f"; {notes[row['run_id']]}" if row["run_id"] in notes else ties
        what = " configuration (mean over its seeds), its best seed" if with_seeds else ""
        lines.append(
            f"Best{what} by {summary.objective}{among}: {row['run_id']} ({overrides_of(row)}){ties}"
        )
    return "\n".join(lines)


def configurations_table(summary: Summary) -> str:
    """One line per configuration, by mean within each comparable group, with its interval."""
    table = summary.configurations
    by_id = summary.ranked.set_index("run_id")
    # Neither the seed nor a folded hyperparameter names a configuration.
    hidden = {"seed"} | {
        key
        for collapsed in summary.folded.values()
        for effect in collapsed.found
        for key in (effect.param, effect.param.removesuffix(".name"))
    }
    lines = [
        f"Configurations by the mean of {summary.objective} over their seeds "
        f"({replicates.INTERVAL_RULE}; {replicates.INDISTINGUISHABLE_RULE}):"
    ]
    for group, rows in table.groupby("group", sort=False):
        if table["group"].nunique() > 1:
            lines.append(f"-- {group}")
        lines.append(f"{'rank':>4}  {'mean ± 95% interval (n)':<32} {'≈ best':<7} configuration")
        for _, row in rows.iterrows():
            rank = "–" if pd.isna(row["rank"]) else str(row["rank"])
            same = row["indistinguishable"]
            mark = "–" if same is pd.NA else ("yes" if same else "no")
            first = by_id.loc[row["run_ids"][0]]
            overrides = overrides_of(first).split()
            shown = " ".join(o for o in overrides if identity.override_key(o) not in hidden)
            lines.append(
                f"{rank:>4}  {replicates.interval_text(row):<32} {mark:<7} {shown} "
                f"[{row['replicates']}]"
            )
    return "\n".join(lines)


def failed_runs(summary: Summary) -> str:
    """The sweep's last line when some of its runs failed (its exit code says so too)."""
    failed = summary.failed
    names = ", ".join(f"{r['run_id']} ({overrides_of(r)})" for _, r in failed.iterrows())
    return f"{len(failed)} run(s) of sweep {summary.sweep_id} failed: {names}"
