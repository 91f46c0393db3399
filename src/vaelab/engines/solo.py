"""The solo engine: each job trained on its own, by Keras `fit` or by the hand-written loop.

A solo run is a batch of one; a batch of several (a rerun of a sweep) trains them in turn,
and a job that fails does not stop the next. Models are reused within a process: one built
earlier for the same architecture, sizes and loss is re-seeded (`models.reseed`) and its
compiled training step with it, so a sweep over seeds or learning rates traces once.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from vaelab.engines import backend, evaluation
from vaelab.engines.base import Checkpoint, Events, Job, Outcome
from vaelab.engines.fit import state_arrays, train_with_fit
from vaelab.engines.loop import train_with_loop
from vaelab.vae.data import Pools
from vaelab.vae.models import build_vae, reseed
from vaelab.vocab.errors import interrupt_behind

# Models built in this process, by what fixes their compiled training step; the most
# recently used last.
_MODELS: dict[tuple, keras.Model] = {}
_MODELS_KEPT = 8


def build_model(job: Job) -> keras.Model:
    """The job's model, as built from its seed (reused and re-seeded when one exists)."""
    key = (job.architecture, job.input_dim, job.intermediate_dim, job.latent_dim, job.loss)
    model = _MODELS.pop(key, None)
    if model is None:
        model = build_vae(
            job.architecture,
            job.input_dim,
            job.intermediate_dim,
            job.latent_dim,
            job.seed,
            job.loss,
        )
    else:
        reseed(model, job.seed)
    _MODELS[key] = model
    while len(_MODELS) > _MODELS_KEPT:
        _MODELS.pop(next(iter(_MODELS)))
    return model


def measure(model: keras.Model, job: Job, data: Pools, history: dict[str, list[float]]) -> Outcome:
    """Everything a finished job is judged by, at its last epoch."""
    x_test, y_test = data.x_test, data.y_test
    pictures = evaluation.pictures(
        model, x_test, y_test, job.latent_dim, job.n_images, job.n_latent_points, job.seed
    )
    iw = None
    if job.iw_samples > 0:
        iw = evaluation.importance_weighted_bound(model, x_test, job.iw_samples, job.seed)
    val_points = data.val_pool[data.val_rows[: job.n_latent_points]]
    return Outcome(
        history=history,
        test=evaluation.evaluate(model, x_test),
        iw_estimate=iw,
        pictures=pictures,
        val_z_mean=evaluation.encode_means(model, val_points),
        model=model,
    )


def history_copy(history: dict[str, list[float]]) -> dict[str, list[float]]:
    return {name: list(values) for name, values in history.items()}


class SoloEngine:
    """Trains each job alone, in turn (see the module docstring)."""

    name = "solo"
    groups_jobs = False  # each job is its own group
    warms_up_model_logging = False  # each run logs its model as it comes (measured: packed)

    def device(self) -> str:
        return backend.device_name()

    def train(self, jobs: Sequence[Job], data: Pools, events: Events) -> None:
        x_train, x_val = data.train_pool[data.train_rows], data.val_pool[data.val_rows]
        for index, job in enumerate(jobs):
            reached = [0]
            try:
                self._train(index, job, x_train, x_val, data, events, reached)
            except Exception as error:  # this job's failure: the next one still trains
                if (interrupt := interrupt_behind(error)) is not None:  # a signal, not a failure
                    raise interrupt from error
                events.job_failed(index, reached[0] + 1, error)

    @staticmethod
    def _train(
        index: int,
        job: Job,
        x_train: np.ndarray,
        x_val: np.ndarray,
        data: Pools,
        events: Events,
        reached: list[int],
    ) -> None:
        backend.configure_backend(job.seed, job.deterministic)
        model = build_model(job)
        history = {k: list(v) for k, v in job.start.history.items()} if job.start else {}
        stopped = []

        def on_epoch(epoch: int, values: dict[str, float]) -> bool:
            reached[0] = epoch
            for name, value in values.items():
                history.setdefault(name, []).append(value)
            events.epoch_ended(index, epoch, values)
            if job.saves_at(epoch):
                arrays = state_arrays(model, model._vaelab_optimizer)
                events.saved(
                    index, Checkpoint(epoch, SoloEngine.name, arrays, history_copy(history))
                )
            if epoch < job.epochs and events.should_stop(index, epoch):
                stopped.append(epoch)
                return True
            return False

        trainer = train_with_loop if job.loop else train_with_fit
        trainer(model, x_train, x_val, job, on_epoch)
        if stopped:
            events.job_stopped(index, stopped[0])
        else:
            events.job_trained(index, history_copy(history))
            events.job_finished(index, measure(model, job, data, history))
