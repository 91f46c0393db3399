"""Training: Keras `fit` for the functional and subclass styles, and the hand-written loop.

The one backend-specific module. The custom loop exists twice, with GradientTape on
TensorFlow and `jax.grad` + `optimizer.stateless_apply` on JAX, because a GradientTape loop
is what the notebook teaches and JAX is what the GPU machine has. Both compile a chunk of
`steps_per_execution` batches into one call over data resident in memory and report
progress between chunks. Every path sees the same batches (`epoch_orders`, one seeded
permutation per epoch), reports per-epoch means weighted by batch size under the same names,
and stops with `NonFiniteLossError` the moment a loss is NaN or inf.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from vaelab import metrics
from vaelab.data import binarize
from vaelab.errors import NonFiniteLossError
from vaelab.metrics import TERMS

log = logging.getLogger(__name__)

SUPPORTED_BACKENDS = ("tensorflow", "jax")

# epoch (1-based), {"train/total": ..., "val/kl": ..., "time/epoch_seconds": ...}
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    steps_per_execution: int
    seed: int
    shuffle: bool
    # Dynamic binarisation: Bernoulli pixels drawn anew from the intensities every epoch.
    resample_pixels: bool


def check_backend(style: str) -> str:
    """Refuse a backend/style pair that has no implementation, before any work is done."""
    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"style={style} is not implemented for KERAS_BACKEND={backend}; use "
            f"KERAS_BACKEND=tensorflow (the default) or KERAS_BACKEND=jax."
        )
    return backend


class _NotRetracing(logging.Filter):
    """Drop TensorFlow's "excessive retracing" warning; keep its other warnings.

    Each run of a sweep builds a new model, so Keras's functions are traced again by design.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "retracing" not in record.getMessage()


def _drop_retracing_warnings(logger: logging.Logger) -> None:
    if not any(isinstance(f, _NotRetracing) for f in logger.filters):
        logger.addFilter(_NotRetracing())


def configure_backend(seed: int, deterministic: bool) -> str:
    """Seed every generator, set determinism and GPU memory sharing; name the device."""
    backend = keras.backend.backend()
    device = "CPU"
    if backend == "tensorflow":
        import tensorflow as tf

        _drop_retracing_warnings(logging.getLogger("tensorflow"))
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


def non_finite_message(epoch: int, values: dict[str, float]) -> str | None:
    """What to say when a loss is NaN or inf at this epoch; None when all are finite."""
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if not bad:
        return None
    return (
        f"non-finite loss at epoch {epoch} ({', '.join(f'{k}={v}' for k, v in bad.items())}); "
        "lower train.learning_rate or check the data"
    )


def _raise_if_non_finite(epoch: int, values: dict[str, float]) -> None:
    message = non_finite_message(epoch, values)
    if message:
        raise NonFiniteLossError(message)


def epoch_metrics(train: dict[str, float], val: dict[str, float], seconds: float) -> dict:
    """One epoch's numbers under the shared names (train/*, val/*, time/epoch_seconds)."""
    values = {metrics.name("train", t): float(train[t]) for t in TERMS}
    values.update({metrics.name("val", t): float(val[t]) for t in TERMS})
    values[metrics.EPOCH_SECONDS] = seconds
    return values


def describe_epoch(epoch: int, epochs: int, values: dict[str, float]) -> str:
    """The console line of an epoch, the same for every style and engine."""
    train, val = (
        {t: values[metrics.name(split, t)] for t in TERMS} for split in metrics.EPOCH_SPLITS
    )
    return (
        f"epoch {epoch}/{epochs}  train/total {train['total']:.3f} (reconstruction "
        f"{train['reconstruction']:.3f} + kl {train['kl']:.3f})  val/total {val['total']:.3f}  "
        f"{values[metrics.EPOCH_SECONDS]:.1f} s"
    )


def epoch_orders(n: int, epochs: int, seed: int, shuffle: bool) -> np.ndarray:
    """The order in which every style visits the n training images, one row per epoch."""
    rng = np.random.default_rng(seed)
    rows = [rng.permutation(n) if shuffle else np.arange(n) for _ in range(epochs)]
    return np.stack(rows).astype(np.int32)


def epoch_inputs(
    x: np.ndarray, order: np.ndarray, epoch: int, settings: TrainSettings
) -> np.ndarray:
    """The epoch's training images in its order.

    under dynamic binarisation, new pixels drawn from the intensities with the run's
    seed and the epoch.
    """
    images = x[order]
    if settings.resample_pixels:
        images = binarize(images, np.random.default_rng([settings.seed, epoch]))
    return images


# Digits per batch where a model is only measured (validation, test). Each digit gets one
# sampling draw whatever the batch, so the batch decides speed and which draw a digit gets,
# not what is measured: 500 took 0.04 s for the 10,000 test digits here, 64 took 0.06 s.
EVAL_BATCH = 500


def evaluate(model: keras.Model, x: np.ndarray) -> dict[str, float]:
    """Mean loss terms over a dataset, the same computation for every style."""
    data = batched(x, EVAL_BATCH)
    results = model.evaluate(
        data, batch_size=_batch_size_for(data, EVAL_BATCH), return_dict=True, verbose=0
    )
    return {name: float(results[name]) for name in TERMS}


def compile_model(model: keras.Model, settings: TrainSettings) -> keras.optimizers.Optimizer:
    """Ready the model to train: compiled with a fresh Adam at the settings' learning rate.

    A model compiled before (a reused one, see `models.reseed`) keeps its compiled step:
    Adam's state is zeroed and its learning rate set instead, so nothing is traced again.
    """
    optimizer = getattr(model, "_vaelab_optimizer", None)
    if optimizer is None or model.steps_per_execution != settings.steps_per_execution:
        optimizer = keras.optimizers.Adam(learning_rate=settings.learning_rate)
        model.compile(optimizer=optimizer, steps_per_execution=settings.steps_per_execution)
        model._vaelab_optimizer = optimizer
        return optimizer
    for variable in optimizer.variables:
        variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
    optimizer.learning_rate.assign(settings.learning_rate)
    model.stop_training = False
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

    def on_train_batch_end(self, batch, logs=None):
        if logs and "total" in logs:
            _raise_if_non_finite(self.epoch, {metrics.name("train", "total"): float(logs["total"])})

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self.epoch_start
        val = {name: logs[f"val_{name}"] for name in TERMS}
        values = epoch_metrics(logs, val, seconds)
        _raise_if_non_finite(epoch + 1, values)
        self.on_epoch(epoch + 1, values)


def batched(x: np.ndarray, batch_size: int) -> Any:
    """`x` in batches, in its order, as `fit` and `evaluate` take it.

    On TensorFlow a tf.data pipeline of plain slices: given numpy arrays, Keras builds a
    parallel gather that TensorFlow's op-determinism pass rewrites into an op with an unknown
    attribute, which logs an ERROR line at every epoch. On JAX the array itself.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf

    return _without_autotune(tf.data.Dataset.from_tensor_slices(x).batch(batch_size))


def _without_autotune(dataset: Any) -> Any:
    """A tf.data pipeline without its autotuner (and the rewrites that come with it).

    Tearing down an autotuned iterator, as `fit` does at the end of each call, stalled it for
    0.3-0.6 s in about one epoch out of three here (measured: 15 epochs, 2.3 s in all;
    without the autotuner 0.02 s). A pipeline of slices and one gather has nothing to tune.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


def _resident(x: np.ndarray, settings: TrainSettings) -> Any:
    """The training images held once as a TensorFlow tensor, for `_gathered`.

    None where each epoch needs its own array (JAX, or new pixels drawn every epoch).
    """
    if keras.backend.backend() != "tensorflow" or settings.resample_pixels:
        return None
    import tensorflow as tf

    return tf.constant(x)


def _gathered(images: Any, order: np.ndarray, batch_size: int) -> Any:
    """An epoch's batches gathered from resident images: only the order is new each epoch.

    A plain (sequential) map: Keras's parallel one is what TensorFlow's op-determinism pass
    rewrites into an op with an unknown attribute (see `batched`). No prefetch and no
    autotuner (`_without_autotune`): on a CPU they overlap nothing, since the gather runs
    on the cores that train.
    """
    import tensorflow as tf

    rows = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    return _without_autotune(rows.map(lambda index: tf.gather(images, index)))


def _batch_size_for(data: Any, batch_size: int) -> int | None:
    return batch_size if isinstance(data, np.ndarray) else None


def train_with_fit(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    settings: TrainSettings,
    on_epoch: EpochCallback,
) -> None:
    """The functional and subclass styles: Keras fit, one call per epoch in `epoch_orders`.

    One `fit` call per epoch gives each epoch exactly its own batches (Keras's multi-step
    execution would otherwise run on into the next epoch's); the compiled step is reused.
    """
    compile_model(model, settings)
    validation = batched(x_val, EVAL_BATCH)
    orders = epoch_orders(len(x_train), settings.epochs, settings.seed, settings.shuffle)
    reporter = _EpochReporter(on_epoch)
    resident = _resident(x_train, settings)
    for epoch, order in enumerate(orders, start=1):
        reporter.epoch_start = time.perf_counter()  # the epoch's data is part of its time
        if resident is not None:
            data = _gathered(resident, order, settings.batch_size)
        else:
            data = batched(epoch_inputs(x_train, order, epoch, settings), settings.batch_size)
        model.fit(
            data,
            batch_size=_batch_size_for(data, settings.batch_size),
            initial_epoch=epoch - 1,
            epochs=epoch,
            shuffle=False,
            validation_data=validation,
            validation_batch_size=_batch_size_for(validation, EVAL_BATCH),
            callbacks=[reporter],
            verbose=0,
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


def equal_batches(first: int, last: int, batch_size: int, n: int) -> list[tuple[int, int, int]]:
    """Batches [first, last) of n images as (start, stop, batches) runs of equal-sized batches.

    At most two: the full batches, then the epoch's last, smaller one. A compiled scan
    needs batches of one size.
    """
    stop = min(last * batch_size, n)
    full = (stop - first * batch_size) // batch_size
    tail = first * batch_size + full * batch_size
    runs = [(first * batch_size, tail, full)] if full else []
    return runs + ([(tail, stop, 1)] if tail < stop else [])


def _chunks(steps: int, size: int) -> list[tuple[int, int]]:
    return [(first, min(first + size, steps)) for first in range(0, steps, size)]


def _tensorflow_chunk_runner(model, optimizer, batch_size: int):
    """One compiled function that trains batches [first, last) of an epoch's images."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def run(images, first, last):
        n = tf.shape(images)[0]
        sums = tf.zeros(len(TERMS))
        for step in tf.range(first, last):
            batch = images[step * batch_size : tf.minimum((step + 1) * batch_size, n)]
            with tf.GradientTape() as tape:
                terms = model.loss_terms(batch, model(batch, training=True))
            grads = tape.gradient(terms["total"], model.trainable_weights)
            optimizer.apply_gradients(zip(grads, model.trainable_weights, strict=True))
            size = tf.cast(tf.shape(batch)[0], tf.float32)
            sums += tf.stack([terms[name] for name in TERMS]) * size
        return sums

    def run_chunk(images, first: int, last: int) -> np.ndarray:
        return run(images, tf.constant(first), tf.constant(last)).numpy()

    return run_chunk, tf.constant


def _jax_chunk_runner(model, optimizer, batch_size: int):
    """The same contract on JAX: a `lax.scan` over stateless steps, state kept on device."""
    import jax
    import jax.numpy as jnp

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
    def run(carry, batches):  # batches: (steps, batch, pixels), all of one size
        carry, stacked = jax.lax.scan(step, carry, batches)
        return carry, stacked.sum(axis=0)

    def run_chunk(images: np.ndarray, first: int, last: int) -> np.ndarray:
        groups = [
            images[start:stop].reshape(count, -1, images.shape[1])
            for start, stop, count in equal_batches(first, last, batch_size, len(images))
        ]
        # Read the state from the variables each time: Keras's own jitted evaluate() between
        # epochs may donate (free) the buffers an older copy would still point to.
        carry = tuple([v.value for v in variables] for variables in groups_of_variables)
        sums = np.zeros(len(TERMS))
        for batches in groups:
            carry, chunk_sums = run(carry, jnp.asarray(batches))
            sums += np.asarray(chunk_sums)
        for variables, values in zip(groups_of_variables, carry, strict=True):
            for variable, value in zip(variables, values, strict=True):
                variable.assign(value)
        return sums

    return run_chunk, np.asarray


def _chunk_runner(model: keras.Model, optimizer, batch_size: int):
    """The model's compiled chunk function, made once per model, optimizer and batch size."""
    key = (id(optimizer), batch_size)
    cached = getattr(model, "_vaelab_chunk_runner", None)
    if cached is None or cached[0] != key:
        make = _jax_chunk_runner if keras.backend.backend() == "jax" else _tensorflow_chunk_runner
        model._vaelab_chunk_runner = (key, make(model, optimizer, batch_size))
    return model._vaelab_chunk_runner[1]


def train_with_custom_loop(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    settings: TrainSettings,
    on_epoch: EpochCallback,
    verbose: int = 1,
) -> None:
    """The notebook's last section: a hand-written loop with its own progress and metrics."""
    optimizer = compile_model(model, settings)  # compiled only so evaluate() can run
    run_chunk, to_device = _chunk_runner(model, optimizer, settings.batch_size)
    n = len(x_train)
    steps = math.ceil(n / settings.batch_size)
    orders = epoch_orders(n, settings.epochs, settings.seed, settings.shuffle)
    for epoch, order in enumerate(orders, start=1):
        start = time.perf_counter()
        images = to_device(epoch_inputs(x_train, order, epoch, settings))
        sums = np.zeros(len(TERMS))
        progress = _Progress(epoch, settings.epochs, steps)
        for first, last in _chunks(steps, settings.steps_per_execution):
            sums += run_chunk(images, first, last)
            seen = min(last * settings.batch_size, n)
            running = dict(zip(TERMS, sums / seen, strict=True))
            _raise_if_non_finite(epoch, {metrics.name("train", k): v for k, v in running.items()})
            if verbose:
                progress.update(last, running)
        train = dict(zip(TERMS, sums / n, strict=True))
        val = evaluate(model, x_val)
        values = epoch_metrics(train, val, time.perf_counter() - start)
        _raise_if_non_finite(epoch, values)
        on_epoch(epoch, values)
