"""The one writer of runs: engines report events, the recorder turns them into MLflow runs.

Whichever engine trained a job (solo or packed), its run is opened here (params, tags, the
config and overrides a rerun needs, the dataset input), gets its epochs as they end, its
results when it finishes (test and quality metrics, figures, the model) and its status, each
written once. Runs are opened when their group starts, so an interrupt marks every unfinished
one KILLED; a run whose loss turns non-finite, or whose writes fail (a full disk), is FAILED on
its own while the others go on. Writes go through a few threads while training goes on
(`rules.writers`), so that dozens of runs ending at once do not queue behind one another; a
run's writes happen in its order and its end comes last. What is written is spelled out
elsewhere: names and tags (`naming`), numbers (`run_metrics`), figures, the writes themselves
(`run_writes`), resumes (`resume`), pruning (`trials`) and the lines a user reads (`console`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from vaelab.edges import process, tracking, ui
from vaelab.edges.config import Config
from vaelab.engines.base import Checkpoint
from vaelab.rules import console, figures, pruning, resume, run_metrics, run_writes
from vaelab.rules.lifecycle import children, claims
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.naming import dataset_identity, input_texts, run_name, run_params, run_tags
from vaelab.rules.runs import GroupRuns, PlannedRun, RunResult
from vaelab.rules.trials import Trials
from vaelab.rules.writers import OrderedWriters
from vaelab.vocab.errors import KilledRun, note_killed
from vaelab.vocab.tags import DATA_SHA256, ENGINE, PRUNE_TRIAL

log = logging.getLogger(__name__)

# Threads that write a group's runs while the main thread trains and draws. Most of that work
# holds Python's lock (MLflow's client, Keras serialisation), so more threads only contend
# (docs/benchmarks.md); what they overlap is the store's I/O, compression and compilation.
_WRITERS = 2


@dataclass
class _Epochs:
    """Each run's epochs as the recorder wrote them."""

    pending: dict[int, Future] = field(default_factory=dict)  # each run's last epoch write
    reached: dict[int, int] = field(
        default_factory=dict
    )  # last epoch written: an interrupt says it
    logged: dict[int, frozenset[int]] = field(default_factory=dict)  # a resumed run's, before


class Recorder:
    """Turns one group's events into its runs (see the module docstring).

    Implements `engines.base.Events`; `runs` (`GroupRuns`) is what the group left: its open,
    created, finished and failed runs by job.
    """

    def __init__(
        self,
        store: tracking.Store,
        context: SweepContext | None,
        planned: Sequence[PlannedRun],
        environment: Mapping[str, str],
        log_path: Path,
    ):
        self.store, self.context, self.planned = store, context, planned
        self.environment, self.log_path = environment, log_path
        self.runs = GroupRuns()
        self.writers = OrderedWriters(
            _WRITERS, "vaelab-record", lambda i: i in self.runs.open, self._write_failed
        )
        # Every figure is drawn on this one thread (matplotlib wants one), beside the main
        # thread's work: a group's loss curves while it is measured, its other figures while
        # the next runs' results are computed and written.
        self.drawing = ThreadPoolExecutor(1, thread_name_prefix="vaelab-draw")
        self.curves: dict[int, Future] = {}  # each run's loss curves, drawn or being drawn
        # Figures by what they show: runs of one computation (a packed lane's twins) show the
        # same history and the same pictures, drawn once.
        self.drawn: dict[tuple, tuple[Future, object]] = {}
        self.epochs = _Epochs()
        self.trials = Trials(self.sweep_id, context.max_epochs if context else None)
        self.checkpoint_files: dict[int, list[str]] = {}  # each run's, once listed
        self.test_digits = 0  # the group's, once its runs open

    @property
    def sweep_id(self) -> str:
        return self.context.sweep_id if self.context else "-"

    # -- opening -------------------------------------------------------------------------

    def open_runs(self, tags: Mapping[str, Any], sizes: tuple[int, int, int]) -> list[int]:
        """Every job's RUNNING run, its inputs queued; the jobs this process may train.

        `tags`: what every run of the group carries (engine, device, its group). `sizes`:
        its training, validation and test digits. A job whose configuration another process
        claimed first (`claims.holder`) has its run withdrawn and its result is the other
        run's (skipped).
        """
        kept, self.test_digits = [], sizes[2]
        parent = self.context.parent_run_id if self.context else None
        resumed = self._resume_runs()
        for i, plan in enumerate(self.planned):
            config = plan.config
            if plan.resumed is not None:
                if i in resumed:
                    kept.append(i)
                continue
            params, locations = run_params(config)
            tags_of_run = {
                **run_tags(config, self.environment, plan.overrides, tags[ENGINE]),
                **locations,
                **tags,
                **children.child_tags(self.context, plan.config_hash),
                **plan.extra_tags,
            }
            with process.interrupts_held():  # created and known, or not created at all
                run = tracking.create_run(self.store, run_name(config), tags_of_run, params, parent)
                held = claims.holder(
                    self.store, self.context, plan.config_hash, config.force, run.run_id,
                    claimant=plan.extra_tags,
                )  # fmt: skip
                if held is not None:
                    tracking.delete_run(self.store, run.run_id)
                else:
                    self.runs.open[i], self.runs.created[i] = run, run.run_id
            if held is not None:
                log.info(console.skipping(self.store, self.context, held))
                self.runs.results[i] = RunResult(held.run_id, held.metrics, skipped=True)
                continue
            kept.append(i)
            texts = input_texts(config, plan.overrides)
            write = partial(run_writes.write_inputs, run, config, texts, sizes, self.environment)
            self.writers.write(i, write)
        for i in kept:
            self._join_pruning(i)
            if self.planned[i].config.tracking.system_metrics:
                self.runs.open[i].monitor_system()
        return kept

    def _join_pruning(self, i: int) -> None:
        """The run's trial in its comparable group's pruning study (the one it had, if any)."""
        plan = self.planned[i]
        if self.context is None or not pruning.enabled(plan.config):
            return
        earlier = plan.resumed.run.tags.get(PRUNE_TRIAL) if plan.resumed else None
        trial = self.trials.join(i, plan.config, earlier)
        self.writers.write(i, partial(self.runs.open[i].set_tags, {PRUNE_TRIAL: trial.number}))

    def _resume_runs(self) -> set[int]:
        """Claim the killed runs this group carries on, in the same MLflow runs (`resume`)."""
        claimed = resume.claim(self.store, self.planned, self.runs)
        for i in claimed:
            write = partial(self.writers.write, i)
            self.epochs.logged[i] = resume.backfill(
                self.planned[i].resumed, self.runs.open[i], write
            )
        return set(claimed)

    # -- engines.base.Events --------------------------------------------------------------

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        """Log the epoch, overlapping the next one's training (it waits for the last epoch's)."""
        if job in self.epochs.pending:
            wait([self.epochs.pending[job]])
        if (run := self.runs.open.get(job)) is None:  # its run failed meanwhile
            return
        self.trials.report(job, epoch, values)
        if epoch in self.epochs.logged.get(job, ()):  # a resumed run's epoch, logged before
            return
        write = partial(run.log, dict(values), epoch, heartbeat=True)
        self.epochs.pending[job] = self.writers.write(job, write)
        self.epochs.reached[job] = epoch
        if len(self.planned) == 1:
            epochs = self.planned[job].config.train.epochs
            log.info(console.describe_epoch(epoch, epochs, values))

    def saved(self, job: int, checkpoint: Checkpoint) -> None:
        """Write the checkpoint after the epoch's numbers, then drop the ones beyond the kept."""
        if (run := self.runs.open.get(job)) is not None:
            kept = self.planned[job].config.train.checkpoints_kept
            known = self.checkpoint_files.setdefault(job, [])
            write = partial(run_writes.write_checkpoint, self.store, run, checkpoint, kept, known)
            self.writers.write(job, write)

    def should_stop(self, job: int, epoch: int) -> bool:
        """Whether the sweep's pruner stops the run at this epoch (never without a pruner)."""
        return self.trials.should_stop(job, epoch)

    def job_stopped(self, job: int, epoch: int) -> None:
        """Pruned at this epoch: ended FINISHED, tagged with the epoch, never measured."""
        self.trials.pruned(job)
        if (run := self.runs.open.get(job)) is None:
            return
        log.info(console.run_pruned(self.sweep_id, run.run_id, epoch))
        name, note = console.pruned_marks(self.planned[job].config, epoch, self.sweep_id)
        self.writers.write(job, partial(run_writes.mark_pruned, run, epoch, name, note))
        self.end(job, "FINISHED", result=RunResult(run.run_id, {}, pruned_at=epoch))

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None:
        """FAILED with its error (the traceback goes to the run's error.txt, not the console)."""
        self.runs.errors[job] = error
        self.trials.finished(job, None)
        self.curves.pop(job, None)
        self.end(job, "FAILED", error)

    def job_trained(self, job: int, history: Mapping[str, list[float]]) -> None:
        """Its loss curves drawn now, while the engine measures it (compiled code, mostly)."""
        self.curves[job] = self._curves(self.planned[job].config, history)

    def _curves(self, config: Config, history: Mapping[str, list[float]]) -> Future:
        key = ("curves", figures.curves_shown(config, history))
        return self._draw(key, figures.curve_figures, config, history)

    def _draw(self, key: tuple, draw: Callable[..., Mapping[str, object]], *args: Any) -> Future:
        """The figures `draw(*args)` makes as PNG files, drawn once per key (`drawn`)."""
        if key not in self.drawn:  # the arguments kept with it: an id in a key stays theirs
            self.drawn[key] = (self.drawing.submit(_pngs, draw, *args), args)
        return self.drawn[key][0]

    def job_finished(self, job: int, outcome: Any) -> None:
        """Its results computed here, its figures drawn on the drawing thread, then written."""
        config = self.planned[job].config
        try:
            final = final_metrics(config, outcome, self.test_digits)
        except Exception as error:  # this run's failure, not the group's
            self.runs.errors[job] = error
            self.end(job, "FAILED", error)
            return
        if (run := self.runs.open.get(job)) is None:
            return
        self.trials.finished(job, final.get(config.objective))
        curves = self.curves.pop(job, None) or self._curves(config, outcome.history)
        pictures = self._draw(
            ("pictures", id(outcome.pictures)), figures.picture_figures, outcome.pictures
        )
        dataset = dataset_identity(config, self.environment[DATA_SHA256])

        def write() -> None:
            try:
                pngs = {**pictures.result(), **curves.result()}
            except CancelledError:  # the group is aborting: `abort` ends the run
                return
            run_writes.write_results(run, config, outcome, final, pngs, dataset)

        self.writers.write(job, write)
        browse = ui.browse_hint(self.store.uri, self.store.experiment_id, run.run_id)
        said = console.describe_result(run.run_id, final, config.model.latent_dim, browse)
        self.end(job, "FINISHED", result=RunResult(run.run_id, final), said=said)

    # -- ending ---------------------------------------------------------------------------

    def warm_up(self, work: Callable[[], object]) -> None:
        """Work that only makes later writes faster: queued now, its failure only logged."""
        self.writers.warm_up(work)

    def _write_failed(self, i: Hashable, error: Exception) -> None:
        """A write of run i raised: the run ends FAILED, the others go on."""
        log.error(console.run_write_failed(self.sweep_id, self.runs.open[i].run_id, error))
        self.runs.errors.setdefault(i, error)
        tracking.end_runs([self.runs.open[i]], error, self.log_path)
        del self.runs.open[i]

    def end(
        self,
        i: int,
        status: str,
        error: BaseException | None = None,
        result: RunResult | None = None,
        said: str | None = None,
    ) -> None:
        """Queue the end of run i, after its writes; it leaves `open` once it has ended.

        `said`: the line a user reads once it has (a run alone in its group says its result).
        """

        def ended() -> None:
            run = self.runs.open[i]
            if status == "FINISHED":
                run.log_artifacts(self.log_path.parent)
            run.end(status, error)
            if result is not None:
                self.runs.results[i] = result
            del self.runs.open[i]
            if said and len(self.planned) == 1:
                log.info(said)

        self.writers.write(i, ended)

    def _killed(self, i: int) -> KilledRun:
        reached = self.epochs.reached.get(i, max(self.epochs.logged.get(i, ()), default=0))
        epochs, sweep = self.planned[i].config.train.epochs, self.context
        return KilledRun(self.runs.open[i].run_id, reached, epochs, sweep and sweep.sweep_id)

    def wait(self) -> None:
        """Until every queued write is done."""
        self.writers.wait()
        self.drawing.shutdown()

    def abort(self, error: BaseException) -> None:
        """Drop the queued writes, let those under way end, and end every open run.

        KILLED for an interrupt, FAILED for an error. The epochs that ended are written first:
        what finished before the signal is kept.
        """
        wait(list(self.epochs.pending.values()))
        # Writes stop before the drawings are cancelled: a results write woken by the
        # cancellation returns, and the run's end queued behind it must not then run.
        self.writers.stopping()
        self.drawing.shutdown(wait=False, cancel_futures=True)
        self.writers.stop()
        for i in self.runs.open:
            self.runs.errors.setdefault(i, error)
        if isinstance(error, KeyboardInterrupt):  # the entry point's last line names them
            note_killed(error, [self._killed(i) for i in self.runs.open])
        tracking.end_runs(list(self.runs.open.values()), error, self.log_path)
        self.runs.open.clear()


def _pngs(draw: Callable[..., Mapping[str, object]], *args: Any) -> dict[str, bytes]:
    return figures.as_pngs(draw(*args))


def final_metrics(config: Config, outcome: Any, test_digits: int) -> dict[str, float]:
    """A finished run's final metrics."""
    quality = run_metrics.quality_metrics(
        config,
        outcome.pictures.z_mean,
        outcome.val_z_mean,
        test_digits,
        outcome.test["total"],
        outcome.iw_estimate if run_metrics.wants_iw_estimate(config) else None,
    )
    return run_metrics.final_metrics(outcome.history, outcome.test, quality)
