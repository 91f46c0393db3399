"""Keras `fit`: how the functional and subclass styles train, one `fit` call per epoch."""

from __future__ import annotations

import time
from collections.abc import Callable

import keras
import numpy as np
from keras import ops

from vaelab.engines.base import Job, epoch_metrics, non_finite_message
from vaelab.engines.batches import (
    batch_size_for,
    batched,
    epoch_inputs,
    epoch_orders,
    gathered,
    resident,
)
from vaelab.vae.sizes import EVAL_BATCH
from vaelab.vocab import metrics
from vaelab.vocab.errors import NonFiniteLossError
from vaelab.vocab.metrics import TERMS

# epoch (1-based), {"train/total": ..., "val/kl": ..., "time/epoch_seconds": ...} -> stop here?
EpochCallback = Callable[[int, dict[str, float]], bool]


def raise_if_non_finite(epoch: int, values: dict[str, float]) -> None:
    message = non_finite_message(epoch, values)
    if message:
        raise NonFiniteLossError(message)


def compile_model(model: keras.Model, job: Job) -> keras.optimizers.Optimizer:
    """Ready the model to train: compiled with a fresh Adam at the job's learning rate.

    A model compiled before (a reused one, see `models.reseed`) keeps its compiled step:
    Adam's state is zeroed and its learning rate set instead, so nothing is traced again.
    """
    optimizer = getattr(model, "_vaelab_optimizer", None)
    if optimizer is None or model.steps_per_execution != job.steps_per_execution:
        optimizer = keras.optimizers.Adam(learning_rate=job.learning_rate)
        model.compile(optimizer=optimizer, steps_per_execution=job.steps_per_execution)
        model._vaelab_optimizer = optimizer
        return optimizer
    for variable in optimizer.variables:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    optimizer.learning_rate.assign(job.learning_rate)
    model.stop_training = False
    return optimizer


def state_arrays(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> dict:
    """Everything that fixes what the next epoch computes, by position.

    The model's variables (weights and its sampling stream's state) and the optimiser's
    (iteration, learning rate, moments). By position, not Keras's paths: a subclass model's
    layer names depend on what the process built before, its variables' order does not.
    """
    arrays = {f"model/{i:03d}": ops.convert_to_numpy(v) for i, v in enumerate(model.variables)}
    arrays.update(
        {f"optimizer/{i:03d}": ops.convert_to_numpy(v) for i, v in enumerate(optimizer.variables)}
    )
    return arrays


def load_state(model: keras.Model, optimizer: keras.optimizers.Optimizer, arrays: dict) -> None:
    """Put a saved state back (`state_arrays`) into a model built and compiled as it was."""
    optimizer.build(model.trainable_variables)
    for prefix, variables in (("model", model.variables), ("optimizer", optimizer.variables)):
        saved = sorted(k for k in arrays if k.startswith(f"{prefix}/"))
        if len(saved) != len(variables):
            raise ValueError(
                f"the checkpoint holds {len(saved)} {prefix} arrays, the model has "
                f"{len(variables)}: it was saved by another architecture"
            )
        for key, variable in zip(saved, variables, strict=True):
            variable.assign(arrays[key])


class _EpochReporter(keras.callbacks.Callback):
    """Turns Keras logs into our metric names, times epochs and stops on NaN."""

    def __init__(self, on_epoch: EpochCallback):
        super().__init__()
        self.on_epoch = on_epoch
        self.epoch = 1
        self.epoch_start = 0.0
        self.stop = False

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if logs and "total" in logs:
            raise_if_non_finite(self.epoch, {metrics.name("train", "total"): float(logs["total"])})

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_start
        val = {name: logs[f"val_{name}"] for name in TERMS}
        values = epoch_metrics(logs, val, seconds)
        raise_if_non_finite(epoch + 1, values)
        self.stop = self.on_epoch(epoch + 1, values)


def train_with_fit(
    model: keras.Model, x_train: np.ndarray, x_val: np.ndarray, job: Job, on_epoch: EpochCallback
) -> None:
    """The functional and subclass styles: Keras fit, one call per epoch in `epoch_orders`.

    One `fit` call per epoch gives each epoch exactly its own batches (Keras's multi-step
    execution would otherwise run on into the next epoch's); the compiled step is reused.
    Between calls, `on_epoch` may end training after that epoch. A job with a saved state
    starts from it, at the epoch after the one it holds.
    """
    optimizer = compile_model(model, job)
    if job.start is not None:
        load_state(model, optimizer, job.start.arrays)
    validation = batched(x_val, EVAL_BATCH)
    orders = epoch_orders(len(x_train), job.epochs, job.seed, job.shuffle)
    reporter = _EpochReporter(on_epoch)
    images = resident(x_train, job.resample_pixels)
    for epoch, order in enumerate(orders, start=1):
        if job.start is not None and epoch <= job.start.epoch:
            continue
        reporter.epoch_start = time.perf_counter()  # the epoch's data is part of its time
        if images is not None:
            data = gathered(images, order, job.batch_size)
        else:
            inputs = epoch_inputs(x_train, order, epoch, job.seed, job.resample_pixels)
            data = batched(inputs, job.batch_size)
        model.fit(
            data,
            batch_size=batch_size_for(data, job.batch_size),
            initial_epoch=epoch - 1,
            epochs=epoch,
            shuffle=False,
            validation_data=validation,
            validation_batch_size=batch_size_for(validation, EVAL_BATCH),
            callbacks=[reporter],
            verbose=0,
        )
        if reporter.stop:
            return
