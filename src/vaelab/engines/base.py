"""What every engine takes and what it reports: the one interface between training and records.

An engine trains a batch of jobs on data they share and reports through `Events`: each epoch
that ended (each job's numbers), each job that failed, and each job that finished (its Keras
model with the final weights, and what it was measured by). It never writes a run: one
recorder (`rules.recorder`) turns the events into MLflow runs, whichever engine sent them.
A solo run is a batch of one.

After every epoch an engine reports the job's state when it is due (`Events.saved`: resume),
asks `Events.should_stop` whether the job ends there (pruning), and a job may carry a saved
state to start from instead of its initial weights (`Job.start`). Engines know nothing of
MLflow, Hydra or the config: jobs are plain values, built from the config by the orchestration.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from vaelab.vocab import metrics
from vaelab.vocab.choices import Architecture
from vaelab.vocab.metrics import TERMS

if TYPE_CHECKING:  # the types only: importing the model's modules imports Keras
    from vaelab.vae.data import Pools
    from vaelab.vae.losses import LossSpec
    from vaelab.vae.plots import Pictures


@dataclass(frozen=True)
class Job:
    """One configuration to train, in plain values."""

    architecture: Architecture  # the Keras model that is built and logged
    loop: bool  # the hand-written loop (the notebook's custom_loop style), else Keras fit
    input_dim: int
    intermediate_dim: int
    latent_dim: int
    seed: int
    epochs: int
    batch_size: int
    learning_rate: float
    steps_per_execution: int
    shuffle: bool
    deterministic: bool
    resample_pixels: bool  # dynamic binarisation: new Bernoulli pixels every epoch
    loss: LossSpec
    n_images: int  # digits in the figures
    n_latent_points: int  # digits whose latent means are mapped and counted (active units)
    iw_samples: int  # K of the importance-weighted estimate; 0: none
    checkpoint_every: int = 0  # save the state every this many epochs (0: never)
    start: Checkpoint | None = None  # a saved state to resume from, else the initial weights

    def saves_at(self, epoch: int) -> bool:
        return self.checkpoint_every > 0 and epoch % self.checkpoint_every == 0


@dataclass(frozen=True)
class Checkpoint:
    """A job's state at the end of an epoch: what resumes it exactly (`rules.checkpoints`)."""

    epoch: int  # the last epoch it holds: training resumes at epoch + 1
    engine: str  # the engine that saved it, the only one that can resume from it
    arrays: dict[str, np.ndarray]  # the engine's named state (weights, optimiser, streams)
    history: dict[str, list[float]]  # each epoch's numbers, 1..epoch


@dataclass
class Outcome:
    """What a finished job ended with: everything measured at its last epoch."""

    history: dict[str, list[float]]
    test: dict[str, float]  # mean loss terms over the test digits
    iw_estimate: float | None
    pictures: Pictures
    val_z_mean: np.ndarray  # latent means of validation digits: active units
    model: Any  # the job's own Keras model, holding its final weights


class Events(Protocol):
    """Where an engine reports; the recorder implements it.

    After each epoch of a job: `epoch_ended`, then (when the job saves then) `saved`, then
    `should_stop`; a job told to stop is reported `job_stopped` and not measured. A job that
    trained its last epoch is reported `job_trained` with its history (what needs only that
    can start while the job is measured), then `job_finished` once measured.
    """

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None: ...

    def saved(self, job: int, checkpoint: Checkpoint) -> None: ...

    def should_stop(self, job: int, epoch: int) -> bool: ...

    def job_stopped(self, job: int, epoch: int) -> None: ...

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None: ...

    def job_trained(self, job: int, history: Mapping[str, list[float]]) -> None: ...

    def job_finished(self, job: int, outcome: Outcome) -> None: ...


class ForwardedEvents:
    """Events passed on to `inner`, each job renumbered through `jobs` when given.

    The one forwarding of the seven methods: an adapter (a group's view of the recorder, a
    progress bar, a test's collector) subclasses it and overrides only what it adds.
    """

    def __init__(self, inner: Events, jobs: Sequence[int] | None = None):
        self.inner, self.jobs = inner, jobs

    def _job(self, job: int) -> int:
        return job if self.jobs is None else self.jobs[job]

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        self.inner.epoch_ended(self._job(job), epoch, values)

    def saved(self, job: int, checkpoint: Checkpoint) -> None:
        self.inner.saved(self._job(job), checkpoint)

    def should_stop(self, job: int, epoch: int) -> bool:
        return self.inner.should_stop(self._job(job), epoch)

    def job_stopped(self, job: int, epoch: int) -> None:
        self.inner.job_stopped(self._job(job), epoch)

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None:
        self.inner.job_failed(self._job(job), epoch, error)

    def job_trained(self, job: int, history: Mapping[str, list[float]]) -> None:
        self.inner.job_trained(self._job(job), history)

    def job_finished(self, job: int, outcome: Outcome) -> None:
        self.inner.job_finished(self._job(job), outcome)


class Engine(Protocol):
    """Trains a batch of jobs that share `data`, reporting to `events`."""

    name: str  # what the runs' `engine` tag says: "solo" | "packed"
    # Trains several jobs as one program: the orchestration plans groups of jobs that may
    # share one (`rules.packing`), tags each run with its group and announces the group.
    groups_jobs: bool
    # Wants what the first logging of each model shape costs (docs/benchmarks.md) paid in a
    # writer thread while the group trains.
    warms_up_model_logging: bool

    def device(self) -> str: ...

    def train(self, jobs: Sequence[Job], data: Pools, events: Events) -> None: ...


def epoch_metrics(train: Mapping[str, float], val: Mapping[str, float], seconds: float) -> dict:
    """One epoch's numbers under the shared names (train/*, val/*, time/epoch_seconds)."""
    values = {metrics.name("train", t): float(train[t]) for t in TERMS}
    values.update({metrics.name("val", t): float(val[t]) for t in TERMS})
    values[metrics.EPOCH_SECONDS] = seconds
    return values


def non_finite_message(epoch: int, values: Mapping[str, float]) -> str | None:
    """What to say when a loss is NaN or inf at this epoch; None when all are finite."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if not bad:
        return None
    return (
        f"non-finite loss at epoch {epoch} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
        "lower train.learning_rate or check the data"
    )
