"""Which images every engine trains on, in which order, in which batches.

Every style and engine sees the same batches: one seeded permutation per epoch
(`epoch_orders`), the same binarisation draws, the same split into equal batches. Evaluation
batch sizes decide speed only, never what is measured.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from vaelab.vae.data import binarize


class EpochOrders(Sequence[np.ndarray]):
    """The order in which every style visits the n training images: item k is epoch k + 1's.

    Epoch k's order is the k-th permutation drawn from one generator seeded with the run's
    seed, a function of (seed, epoch), computed when an engine asks for it: nothing is built
    for epochs not trained, so `train.epochs=1000000000` costs nothing up front (built
    eagerly, it allocated for 27 s). The draws cannot be skipped (numpy's shuffle rejects and
    redraws a varying number of values), so an epoch after the last one asked draws on from
    there and an earlier one starts again from the seed; a resumed run pays its skipped
    epochs' draws once.
    """

    def __init__(self, n: int, epochs: int, seed: int, shuffle: bool):
        self.n, self.epochs, self.seed, self.shuffle = n, epochs, seed, shuffle
        self._rng = np.random.default_rng(seed)
        self._drawn = 0  # permutations drawn from `_rng`; the last is `_last`
        self._last = np.arange(n, dtype=np.int32)
        self._last.flags.writeable = False  # handed out as it is: nobody may reorder it

    def __len__(self) -> int:
        return self.epochs

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        k = operator.index(index)
        k = k + self.epochs if k < 0 else k
        if not 0 <= k < self.epochs:
            raise IndexError(f"epoch index {index} out of range for {self.epochs} epochs")
        if not self.shuffle:
            return self._last
        if k < self._drawn - 1:
            self._rng, self._drawn = np.random.default_rng(self.seed), 0
        while self._drawn <= k:
            self._last = self._rng.permutation(self.n).astype(np.int32)
            self._last.flags.writeable = False
            self._drawn += 1
        return self._last


def epoch_orders(n: int, epochs: int, seed: int, shuffle: bool) -> EpochOrders:
    """Every epoch's order of the n training images, each computed when it is asked for."""
    return EpochOrders(n, epochs, seed, shuffle)


def epoch_inputs(
    x: np.ndarray, order: np.ndarray, epoch: int, seed: int, resample_pixels: bool
) -> np.ndarray:
    """The epoch's training images in its order.

    Under dynamic binarisation, new pixels drawn from the intensities with the run's seed and
    the epoch.
    """
    images = x[order]
    if resample_pixels:
        images = binarize(images, np.random.default_rng([seed, epoch]))
    return images


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


def batched(x: np.ndarray, batch_size: int) -> Any:
    """`x` in batches, in its order, as `fit`, `evaluate` and `predict` take it.

    On TensorFlow a tf.data pipeline of plain slices: given numpy arrays, Keras builds a
    parallel gather that TensorFlow's op-determinism pass rewrites into an op with an unknown
    attribute, which logs an ERROR line at every epoch. On JAX the array itself.
    """
    if keras.backend.backend() != "tensorflow":
        return x
    import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

    return _without_autotune(tf.data.Dataset.from_tensor_slices(x).batch(batch_size))


def batch_size_for(data: Any, batch_size: int) -> int | None:
    """The `batch_size` argument Keras wants beside `data` (none for a batched pipeline)."""
    return batch_size if isinstance(data, np.ndarray) else None


def _without_autotune(dataset: Any) -> Any:
    """A tf.data pipeline without its autotuner (and the rewrites that come with it).

    Tearing down an autotuned iterator, as `fit` does at the end of each call, stalled it in
    about one epoch out of three (docs/benchmarks.md); a pipeline of slices and one gather
    has nothing to tune.
    """
    import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_optimization.apply_default_optimizations = False
    return dataset.with_options(options)


def resident(x: np.ndarray, resample_pixels: bool) -> Any:
    """The training images held once as a TensorFlow tensor, for `gathered`.

    None where each epoch needs its own array (JAX, or new pixels drawn every epoch).
    """
    if keras.backend.backend() != "tensorflow" or resample_pixels:
        return None
    import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

    return tf.constant(x)


def gathered(images: Any, order: np.ndarray, batch_size: int) -> Any:
    """An epoch's batches gathered from resident images: only the order is new each epoch.

    A plain (sequential) map: Keras's parallel one is what TensorFlow's op-determinism pass
    rewrites into an op with an unknown attribute (see `batched`). No prefetch and no
    autotuner: on a CPU they overlap nothing, since the gather runs on the cores that train.
    """
    import tensorflow as tf  # here: a JAX process that trains nothing never pays it (~4 s)

    rows = tf.data.Dataset.from_tensor_slices(order).batch(batch_size)
    return _without_autotune(rows.map(lambda index: tf.gather(images, index)))
