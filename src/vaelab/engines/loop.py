"""The hand-written training loop of the notebook's last section, on TensorFlow and on JAX.

It exists twice, with GradientTape on TensorFlow and `jax.grad` + `optimizer.stateless_apply`
on JAX, because a GradientTape loop is what the notebook teaches and JAX is what the GPU
machine has. Both compile a chunk of `steps_per_execution` batches into one call over data
resident in memory, report progress between chunks, see the batches `fit` sees and report
per-epoch means weighted by batch size under the same names.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import keras
import numpy as np

from vaelab.engines.base import Job, epoch_metrics
from vaelab.engines.batches import epoch_inputs, epoch_orders, equal_batches
from vaelab.engines.evaluation import evaluate
from vaelab.engines.fit import EpochCallback, compile_model, load_state, raise_if_non_finite
from vaelab.vocab import metrics
from vaelab.vocab.metrics import TERMS

log = logging.getLogger(__name__)


@dataclass
class _QuarterLog:
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


def _tensorflow_chunk_runner(model, optimizer, batch_size: int):
    """One compiled function that trains batches [first, last) of an epoch's images."""
    import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

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


def train_with_loop(
    model: keras.Model,
    x_train: np.ndarray,
    x_val: np.ndarray,
    job: Job,
    on_epoch: EpochCallback,
    verbose: int = 1,
) -> None:
    """The notebook's last section: a hand-written loop with its own progress and metrics.

    After each epoch, `on_epoch` may end training there; a job with a saved state starts
    from it.
    """
    optimizer = compile_model(model, job)  # compiled only so evaluate() can run
    if job.start is not None:
        load_state(model, optimizer, job.start.arrays)
    run_chunk, to_device = _chunk_runner(model, optimizer, job.batch_size)
    n = len(x_train)
    steps = math.ceil(n / job.batch_size)
    orders = epoch_orders(n, job.epochs, job.seed, job.shuffle)
    for epoch, order in enumerate(orders, start=1):
        if job.start is not None and epoch <= job.start.epoch:
            continue
        start = time.perf_counter()
        images = to_device(epoch_inputs(x_train, order, epoch, job.seed, job.resample_pixels))
        sums = np.zeros(len(TERMS))
        quarters = _QuarterLog(epoch, job.epochs, steps)
        for first, last in _chunks(steps, job.steps_per_execution):
            sums += run_chunk(images, first, last)
            seen = min(last * job.batch_size, n)
            running = dict(zip(TERMS, sums / seen, strict=True))
            raise_if_non_finite(epoch, {metrics.name("train", k): v for k, v in running.items()})
            if verbose:
                quarters.update(last, running)
        train = dict(zip(TERMS, sums / n, strict=True))
        val = evaluate(model, x_val)
        values = epoch_metrics(train, val, time.perf_counter() - start)
        raise_if_non_finite(epoch, values)
        if on_epoch(epoch, values):
            return
