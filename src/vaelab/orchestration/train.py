"""The one training path: submissions in, one `RunResult` each out, whatever the engine.

`train_and_evaluate(cfg)` is one run (the CLI, a sweep's job, a rerun, a notebook): a batch
of one on the solo engine. `train_batch(submissions, ...)` is a packed launcher's batch on the
packed engine. Both go the same way: every config and the data are checked before the store
is touched (`checks`), each submission becomes a `PlannedRun` (its identity), configurations
a sweep already has are skipped and killed ones resumed (`skipping`), the rest are grouped
(`grouping`), and each group is trained by its engine while one recorder (`rules.recorder`)
turns the engine's events into runs. A group that fails fails its own runs only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from vaelab.edges import process, progress, ray_task, tracking
from vaelab.edges.config import Config, Submission, as_dict, to_run_config
from vaelab.engines import backend
from vaelab.engines.base import Engine, ForwardedEvents
from vaelab.engines.solo import SoloEngine
from vaelab.orchestration import checks, engine_inputs, overheads
from vaelab.orchestration.group_bar import GroupBar, bar_title
from vaelab.orchestration.grouping import group_tags, groups
from vaelab.orchestration.skipping import sort_out
from vaelab.orchestration.stores import StoreCache
from vaelab.rules import console, identity
from vaelab.rules.lifecycle import children
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.naming import environment_tags, run_name
from vaelab.rules.recorder import Recorder
from vaelab.rules.runs import PlannedRun, RunResult
from vaelab.vae import data as mnist_data
from vaelab.vocab.errors import RunFailed, interrupt_behind
from vaelab.vocab.tags import CODE_HASH, DEVICE, PACK_GROUP

log = logging.getLogger(__name__)

__all__ = ["prepare", "train_and_evaluate", "train_batch"]

# What a job ended with: its result (None: it had no run) and the error that FAILED it.
Trained = tuple[RunResult | None, BaseException | None]


def train_and_evaluate(
    cfg: DictConfig | Config,
    overrides: Sequence[str] = (),
    sweep: SweepContext | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> RunResult:
    """Train one VAE as the config says, record it, return what it measured.

    A run that fails after its run opened raises `RunFailed` from the error (it is recorded).
    """
    config = cfg if isinstance(cfg, Config) else to_run_config(cfg)
    submitted = [Submission(config, list(overrides))]
    outcomes = _train(submitted, sweep, SoloEngine(), extra_tags=extra_tags)
    result, error = outcomes[0]
    if error is not None:
        raise RunFailed(result.run_id if result else "?", error) from error
    return result


def train_batch(
    submissions: Sequence[Submission],
    context: SweepContext,
    engine: Engine,
    memory_fraction: float,
    max_group_size: int | None = None,
    mnist: mnist_data.Mnist | None = None,
) -> list[RunResult | None]:
    """Train a batch on one engine (packed: in groups); None for a job whose run FAILED.

    `mnist`: the verified data when a caller has it (a Ray task: from the object store).
    """
    budget = int(memory_fraction * backend.memory_for_training())
    outcomes = _train(
        submissions, context, engine, budget=budget, max_group_size=max_group_size, mnist=mnist
    )
    return [None if error is not None else result for result, error in outcomes]


@dataclass
class Batch:
    """A batch checked and identified, what it skips settled: what its groups train from."""

    planned: list[PlannedRun]
    todo: list[int]  # the jobs to train; the others are skipped, their results in `outcomes`
    outcomes: list[Trained]
    mnist: mnist_data.Mnist
    environment: dict[str, str]
    stores: StoreCache


def prepare(
    submissions: Sequence[Submission],
    context: SweepContext | None,
    engine: Engine,
    extra_tags: Mapping[str, str] | None = None,
    mnist: mnist_data.Mnist | None = None,
) -> Batch:
    """Check everything, identify each job, skip what is held (a Ray driver plans from this)."""
    configs = [s.config for s in submissions]
    framework = checks.check_runnable(configs)  # part of a run's identity: it changes the numbers
    mnist = mnist or engine_inputs.load_mnist(configs[0])  # verified before any run exists...
    checks.check_splits(configs, mnist)  # ...and every job's split: a bad one refuses the batch
    environment = environment_tags(mnist.sha256, framework)
    code = environment[CODE_HASH]
    extra = {**ray_task.task_tags(), **(extra_tags or {})}  # a Ray task's runs say which
    planned = [
        PlannedRun(
            s.config, s.overrides, identity.config_hash(as_dict(s.config), code, framework), extra
        )
        for s in submissions
    ]
    stores = StoreCache(patient=context is not None)
    outcomes: list[Trained] = [(None, None)] * len(submissions)
    todo, skipped = sort_out(planned, stores, context, engine.name)
    for i, result in skipped.items():
        outcomes[i] = (result, None)
    return Batch(planned, todo, outcomes, mnist, environment, stores)


def _train(
    submissions: Sequence[Submission],
    context: SweepContext | None,
    engine: Engine,
    budget: int | None = None,
    max_group_size: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
    mnist: mnist_data.Mnist | None = None,
) -> list[Trained]:
    """Check everything, skip what is held, train the rest group by group."""
    batch = prepare(submissions, context, engine, extra_tags, mnist)
    planned, outcomes = batch.planned, batch.outcomes
    overheads.freeze_long_lived_objects()
    plan = groups(engine, planned, batch.todo, batch.mnist, budget, max_group_size)
    for number, group in enumerate(plan):
        members = [planned[i] for i in group]
        tags = group_tags(engine, context, members, number)
        store = batch.stores.of(members[0].config)
        trained = _train_group(
            store, context, engine, members, batch.environment, tags, batch.mnist
        )
        for i, outcome in zip(group, trained, strict=True):
            outcomes[i] = outcome
    return outcomes


def _train_group(
    store: tracking.Store,
    context: SweepContext | None,
    engine: Engine,
    planned: Sequence[PlannedRun],
    environment: dict[str, str],
    tags: dict[str, str],
    mnist: mnist_data.Mnist,
) -> list[Trained]:
    """Train one group and record each run; a failure of the group fails only its runs."""
    started = time.perf_counter()
    sweep_id = context.sweep_id if context else "-"
    with process.captured_log() as log_path, process.sigterm_as_interrupt():
        recorder = Recorder(store, context, planned, environment, log_path)
        try:
            pools = engine_inputs.group_data(planned[0].config, mnist)
            sizes = (len(pools.train_rows), len(pools.val_rows), len(pools.x_test))
            kept = recorder.open_runs(tags, sizes)
            if kept:
                _announce(engine, planned, kept, tags, recorder, sizes)
                trained = [engine_inputs.planned_job(planned[i]) for i in kept]
                if engine.warms_up_model_logging:
                    kept_planned = [planned[i] for i in kept]
                    recorder.warm_up(overheads.model_logging_warm_up(trained, kept_planned, pools))
                title = bar_title(recorder, kept)
                shown = GroupBar(ForwardedEvents(recorder, kept), trained, sizes[0], title)
                with shown, progress.logs_above_bars():
                    engine.train(trained, pools, shown)
            recorder.wait()
        except Exception as error:  # the group's runs are FAILED; later groups go on
            if (interrupt := interrupt_behind(error)) is not None:  # a signal, not a failure
                with process.interrupts_held():
                    recorder.abort(interrupt)
                raise interrupt from error
            log.error(console.group_failed(sweep_id, tags.get(PACK_GROUP, ""), error))
            with process.interrupts_held():
                recorder.abort(error)
            if context is None:
                raise
            _record_missing_runs(store, context, recorder, planned, error)
        except BaseException as error:  # Ctrl-C, SIGTERM: every unfinished run is KILLED
            with process.interrupts_held():  # a second signal waits until they are
                recorder.abort(error)
            raise
    _log_timing(engine, tags, len(planned), time.perf_counter() - started)
    runs = recorder.runs
    return [
        (runs.results.get(i) or _failed_result(recorder, i), runs.errors.get(i))
        for i in range(len(planned))
    ]


def _failed_result(recorder: Recorder, i: int) -> RunResult | None:
    """A FAILED run's id (its numbers are not the run's result): None if it had no run."""
    run_id = recorder.runs.created.get(i)
    return RunResult(run_id, {}) if run_id else None


def _announce(
    engine: Engine,
    planned: Sequence[PlannedRun],
    kept: Sequence[int],
    tags: Mapping[str, str],
    recorder: Recorder,
    sizes: tuple[int, int, int],
) -> None:
    """The line a user reads when a group's runs start: the group, or each run alone."""
    if engine.groups_jobs:
        log.info(
            console.group_started(recorder.sweep_id, tags[PACK_GROUP], len(kept), tags[DEVICE])
        )
        return
    for i in kept:
        run_id, style = recorder.runs.open[i].run_id, planned[i].config.style.name.value
        log.info(console.run_started(run_id, style, tags[DEVICE], sizes[0]))


def _log_timing(engine: Engine, tags: Mapping[str, str], runs: int, seconds: float) -> None:
    timing = getattr(engine, "timing", None)
    if timing is None:
        return
    log.info(
        console.group_timing(
            tags.get(PACK_GROUP), runs, seconds, timing.setup, timing.training, timing.evaluation
        )
    )


def _record_missing_runs(
    store: tracking.Store,
    context: SweepContext,
    recorder: Recorder,
    planned: Sequence[PlannedRun],
    error: Exception,
) -> None:
    """A FAILED child for each job of a failed group that had no run yet."""
    for i, plan in enumerate(planned):
        if i not in recorder.runs.created and i not in recorder.runs.results:
            children.record_early_failure(
                store, context, run_name(plan.config), plan.overrides, error
            )
            recorder.runs.errors.setdefault(i, error)
