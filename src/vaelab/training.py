"""Training: Keras `fit` for the functional and subclass styles, and the hand-written loop.

The one backend-specific module. The custom loop exists twice, with GradientTape on
TensorFlow and `jax.grad` + `optimizer.stateless_apply` on JAX, because a GradientTape loop
is what the notebook teaches and JAX is what the GPU machine has. Both compile a chunk of
`steps_per_execution` batches into one call over data resident in memory and report
progress between chunks. Every path reports per-epoch means weighted by batch size under
the same names, and stops with `NonFiniteLossError` the moment a loss is NaN or inf.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np

from vaelab.models import TERMS

log = logging.getLogger(__name__)

SUPPORTED_BACKENDS = ("tensorflow", "jax")

# epoch (1-based), {"train/total": ..., "val/kl": ..., "time/epoch_seconds": ...}
EpochCallback = Callable[[int, dict[str, float]], None]


class NonFiniteLossError(FloatingPointError):
    """Training produced NaN or inf; the run must stop and be marked FAILED."""


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    steps_per_execution: int
    seed: int
    shuffle: bool = True


def check_backend(style: str) -> str:
    """Refuse a backend/style pair that has no implementation, before any work is done."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"style={style} is not implemented for KERAS_BACKEND={backend}; use "
            f"KERAS_BACKEND=tensorflow (the default) or KERAS_BACKEND=jax."
        )
    return backend


def configure_backend(seed: int, deterministic: bool) -> str:
    """Seed every generator, set determinism and GPU memory sharing; name the device."""
    backend = keras.backend.backend()
    device = "CPU"
    if backend == "tensorflow":
        import tensorflow as tf

        # Each run of a sweep builds a new model, so Keras's functions are traced again by
        # design; TensorFlow's "excessive retracing" warning about it is noise.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        gpus = tf.config.list_physical_devices("GPU")
        for gpu in gpus:
            # Several runs of a sweep share one card only if none grabs all its memory.
            # RuntimeError: already initialised by an earlier run in this process; keep it.
            with contextlib.suppress(RuntimeError):
                tf.config.experimental.set_memory_growth(gpu, True)
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            device = f"GPU: {details.get('device_name', gpus[0].name)}"
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        else:
            tf.config.experimental.disable_op_determinism()
    elif backend == "jax":
        import jax

        first = jax.devices()[0]
        if first.platform != "cpu":
            device = f"GPU: {first.device_kind}"
    keras.utils.set_random_seed(seed)
    return device


def _raise_if_non_finite(epoch: int, metrics: dict[str, float]) -> None:
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
            "lower train.learning_rate or check the data"
        )


def _epoch_metrics(train: dict[str, float], val: dict[str, float], seconds: float) -> dict:
    metrics = {f"train/{name}": float(train[name]) for name in TERMS}
    metrics.update({f"val/{name}": float(val[name]) for name in TERMS})
    metrics["time/epoch_seconds"] = seconds
    return metrics


def evaluate(model: keras.Model, x: np.ndarray, batch_size: int) -> dict[str, float]:
    """Mean loss terms over a dataset, the same computation for every style."""
    results = model.evaluate(x, batch_size=batch_size, return_dict=True, verbose=0)
    return {name: float(results[name]) for name in TERMS}


def compile_model(model: keras.Model, settings: TrainSettings) -> keras.optimizers.Optimizer:
    optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
    model.compile(optimizer=optimizer, steps_per_execution=settings.steps_per_execution)
    return optimizer


class _EpochReporter(keras.callbacks.Callback):
    """Turns Keras logs into our metric names, times epochs and stops on NaN."""

    def __init__(self, on_epoch: EpochCallback):
        super().__init__()
        self.on_epoch = on_epoch
        self.epoch = 1
        self.epoch_start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self.epoch_start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs and "total" in logs:
            _raise_if_non_finite(self.epoch, {"train/total": float(logs["total"])})

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_start
        val = {name: logs[f"val_{name}"] for name in TERMS}
        metrics = _epoch_metrics(logs, val, seconds)
        _raise_if_non_finite(epoch + 1, metrics)
        self.on_epoch(epoch + 1, metrics)


def train_with_fit(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    settings: TrainSettings,
    on_epoch: EpochCallback,
    verbose: int = 2,
) -> None:
    """The functional and subclass styles: Keras fit with validation every epoch."""
    compile_model(model, settings)
    model.fit(
        x_train,
        batch_size=settings.batch_size,
        epochs=settings.epochs,
        validation_data=(x_val,),
        shuffle=settings.shuffle,
        callbacks=[_EpochReporter(on_epoch)],
        verbose=verbose,
    )


@dataclass
class _Progress:
    """Logs how far an epoch has got at each quarter, so long epochs show life."""

    epoch: int
    epochs: int
    steps: int
    next_quarter: int = 1

    def update(self, step: int, running: dict[str, float]) -> None:
        if step * 4 >= self.next_quarter * self.steps:
            self.next_quarter = step * 4 // self.steps + 1
            log.info(
                "epoch %d/%d step %d/%d  total %.4f  reconstruction %.4f  kl %.4f",
                self.epoch,
                self.epochs,
                step,
                self.steps,
                running["total"],
                running["reconstruction"],
                running["kl"],
            )


def _chunks(steps: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(first + size, steps)) for first in range(0, steps, size)]


def _tensorflow_chunk_runner(model, optimizer, x_train: np.ndarray, batch_size: int):
    """One compiled function that trains batches [first, last) of a shuffled epoch."""
    import tensorflow as tf

    images = tf.constant(x_train)
    n = x_train.shape[0]

    @tf.function(reduce_retracing=True)
    def run(order, first, last):
        sums = tf.zeros(len(TERMS))
        for step in tf.range(first, last):
            index = order[step * batch_size : tf.minimum((step + 1) * batch_size, n)]
            batch = tf.gather(images, index)
            with tf.GradientTape() as tape:
                terms = model.loss_terms(batch, model(batch, training=True))
            grads = tape.gradient(terms["total"], model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights, strict=True))
            size = tf.cast(tf.shape(batch)[0], tf.float32)
            sums += tf.stack([terms[name] for name in TERMS]) * size
        return sums

    def run_chunk(order: np.ndarray, first: int, last: int) -> np.ndarray:
        return run(tf.constant(order), tf.constant(first), tf.constant(last)).numpy()

    return run_chunk


def _jax_chunk_runner(model, optimizer, x_train: np.ndarray, batch_size: int):
    """The same contract on JAX: a `lax.scan` over stateless steps, state kept on device."""
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(x_train)
    n = x_train.shape[0]
    optimizer.build(model.trainable_variables)
    groups_of_variables = (
        model.trainable_variables,
        model.non_trainable_variables,
        optimizer.variables,
    )

    def loss_fn(trainable, non_trainable, batch):
        outputs, non_trainable = model.stateless_call(
            trainable, non_trainable, batch, training=True
        )
        terms = model.loss_terms(batch, outputs)
        return terms["total"], (terms, non_trainable)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def step(carry, batch):
        trainable, non_trainable, opt_vars = carry
        (_, (terms, non_trainable)), grads = grad_fn(trainable, non_trainable, batch)
        trainable, opt_vars = optimizer.stateless_apply(opt_vars, grads, trainable)
        stacked = jnp.stack([terms[name] for name in TERMS]) * batch.shape[0]
        return (trainable, non_trainable, opt_vars), stacked

    @jax.jit
    def run(carry, index):  # index: (steps, batch) of equal-sized batches
        carry, stacked = jax.lax.scan(step, carry, images[index])
        return carry, stacked.sum(axis=0)

    def run_chunk(order: np.ndarray, first: int, last: int) -> np.ndarray:
        sums = np.zeros(len(TERMS))
        stop = min(last * batch_size, n)
        full = (stop - first * batch_size) // batch_size
        groups = []
        if full:
            groups.append(order[first * batch_size : (first + full) * batch_size].reshape(full, -1))
        if (first + full) * batch_size < stop:  # the epoch's last, smaller batch
            groups.append(order[(first + full) * batch_size : stop].reshape(1, -1))
        # Read the state from the variables each time: Keras's own jitted evaluate() between
        # epochs may donate (free) the buffers an older copy would still point to.
        carry = tuple([v.value for v in variables] for variables in groups_of_variables)
        for index in groups:
            carry, chunk_sums = run(carry, jnp.asarray(index))
            sums += np.asarray(chunk_sums)
        for variables, values in zip(groups_of_variables, carry, strict=True):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        return sums

    return run_chunk


def train_with_custom_loop(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    settings: TrainSettings,
    on_epoch: EpochCallback,
    verbose: int = 2,
) -> None:
    """The notebook's last section: a hand-written loop with its own progress and metrics."""
    optimizer = compile_model(model, settings)  # compiled only so evaluate() can run
    runner = (_jax_chunk_runner if keras.backend.backend() == "jax" else _tensorflow_chunk_runner)(
        model, optimizer, x_train, settings.batch_size
    )
    rng = np.random.default_rng(settings.seed)
    n = len(x_train)
    steps = math.ceil(n / settings.batch_size)
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        order = (rng.permutation(n) if settings.shuffle else np.arange(n)).astype(np.int32)
        sums = np.zeros(len(TERMS))
        progress = _Progress(epoch, settings.epochs, steps)
        for first, last in _chunks(steps, settings.steps_per_execution):
            sums += runner(order, first, last)
            seen = min(last * settings.batch_size, n)
            running = dict(zip(TERMS, sums / seen, strict=True))
            _raise_if_non_finite(epoch, {f"train/{k}": v for k, v in running.items()})
            if verbose:
                progress.update(last, running)
        train = dict(zip(TERMS, sums / n, strict=True))
        val = evaluate(model, x_val, settings.batch_size)
        metrics = _epoch_metrics(train, val, time.perf_counter() - start)
        _raise_if_non_finite(epoch, metrics)
        on_epoch(epoch, metrics)
