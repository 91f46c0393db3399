"""What a finished job is measured by: mean loss terms, pictures, the importance-weighted estimate.

The same for every engine: the digits a job's figures show and the prior draws it decodes
(`PictureDigits`, `prior_draws`), and the estimate's arithmetic (`vae.importance`). The
functions here that take a Keras model are how the solo engine measures one model; the
packed engine measures its members in one vmapped program (`packed.finish`).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from vaelab.engines.batches import batch_size_for, batched
from vaelab.vae.importance import chunk_log_sum, negative_log_mean_exp
from vaelab.vae.plots import Pictures
from vaelab.vae.sizes import EVAL_BATCH, iw_layout
from vaelab.vocab.metrics import TERMS


@dataclass(frozen=True)
class PictureDigits:
    """The test digits a job's figures show, whichever engine trained it."""

    originals: np.ndarray  # reconstructed for the reconstructions figure
    points: np.ndarray  # encoded for the latent map (and counted for active units)
    labels: np.ndarray  # the points' digits

    @classmethod
    def of(
        cls, x_test: np.ndarray, y_test: np.ndarray, n_images: int, n_latent_points: int
    ) -> PictureDigits:
        n_points = min(n_latent_points, len(x_test))
        return cls(x_test[:n_images], x_test[:n_points], y_test[:n_points])

    def pictures(self, reconstructions, prior_samples, z_mean) -> Pictures:
        """The figures' arrays, from what the model made of these digits and the prior draws."""
        return Pictures(
            originals=self.originals,
            reconstructions=reconstructions,
            prior_samples=prior_samples,
            z_mean=z_mean,
            labels=self.labels,
        )


def prior_draws(seed: int, count: int, latent_dim: int) -> np.ndarray:
    """The z ~ N(0, I) a job decodes for its samples figure: its own, from its seed."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype("float32")


def evaluate(model: keras.Model, x: np.ndarray) -> dict[str, float]:
    """Mean loss terms over a dataset, the same computation for every style."""
    data = batched(x, EVAL_BATCH)
    results = model.evaluate(
        data, batch_size=batch_size_for(data, EVAL_BATCH), return_dict=True, verbose=0
    )
    return {name: float(results[name]) for name in TERMS}


def encode_means(model: keras.Model, x: np.ndarray) -> np.ndarray:
    z_mean, _, _ = model.encoder(x)
    return ops.convert_to_numpy(z_mean)


def decode(model: keras.Model, z: np.ndarray) -> np.ndarray:
    return ops.convert_to_numpy(model.decoder(z))


def pictures(
    model: keras.Model,
    x_test: np.ndarray,
    y_test: np.ndarray,
    latent_dim: int,
    n_images: int,
    n_latent_points: int,
    seed: int,
) -> Pictures:
    """Reconstruct the first test digits, decode prior draws, encode digits for the map."""
    digits = PictureDigits.of(x_test, y_test, n_images, n_latent_points)
    return digits.pictures(
        reconstructions=ops.convert_to_numpy(model(digits.originals)["reconstruction"]),
        prior_samples=decode(model, prior_draws(seed, n_images, latent_dim)),
        z_mean=encode_means(model, digits.points),
    )


class ImportanceWeighted(keras.Model):
    """log sum_k w_k over one chunk of `chunk` importance samples per digit, as a Keras model.

    So that `predict` compiles it on whatever backend trains: one traced function, not
    thousands of eager ops. Samples past `valid` (the last chunk of an estimate that does not
    divide evenly) are masked out; the noise stream runs on from chunk to chunk.
    """

    def __init__(self, vae: keras.Model, chunk: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self.vae, self.chunk = vae, chunk
        self.noise = keras.random.SeedGenerator(seed)
        self.valid = keras.Variable(chunk, dtype="int32", trainable=False, name="valid")

    def call(self, x):
        z_mean, z_log_var, _ = self.vae.encoder(x)
        shape = (self.chunk, ops.shape(z_mean)[0], ops.shape(z_mean)[1])
        eps = keras.random.normal(shape, seed=self.noise)
        return chunk_log_sum(x, z_mean, z_log_var, eps, self.vae.decoder, self.valid)


# Decodes per compiled step, digits per step at most, and steps per compiled call. A step's
# memory grows with its rows (XLA on a CPU keeps many rows x pixels intermediates); 2,500 is
# as fast as larger steps on both backends (docs/benchmarks.md). K = 5: 500 digits a step.
_IW_ROWS, _IW_DIGITS, _IW_BATCHES_PER_CALL = 2_500, 1250, 2


def importance_weighted_bound(model: keras.Model, x: np.ndarray, samples: int, seed: int) -> float:
    """-log p(x) estimated with `samples` importance samples per digit, mean over `x`, in nats.

    On binary pixels this is an upper bound on the negative log-likelihood, tighter than
    the negative ELBO and tightening as `samples` grows. On intensities it is the same
    formula applied to fractional targets: not a likelihood (see `metrics`). Computed in
    chunks of samples (`sizes.iw_layout`) whose log-sum-exps are combined, so its memory
    does not grow with `samples`.
    """
    layout = iw_layout(samples, _IW_ROWS, _IW_DIGITS)
    estimator = _estimator(model, layout.chunk, seed)
    data = batched(x, layout.digits)
    total = np.full(len(x), -np.inf)
    for chunk in range(layout.chunks):
        estimator.valid.assign(min(layout.chunk, samples - chunk * layout.chunk))
        total = np.logaddexp(total, estimator.predict(data, verbose=0).astype(np.float64))
    return float(np.mean(negative_log_mean_exp(total, samples)))


# The estimators built for models still alive, by chunk size: a model reused by the next
# run of a sweep (`solo.build_model`) reuses its estimator's compiled `predict` too.
_ESTIMATORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _estimator(model: keras.Model, chunk: int, seed: int) -> ImportanceWeighted:
    """The model's estimator with the noise state a new one with this seed would have."""
    built = _ESTIMATORS.setdefault(model, {})
    if chunk not in built:
        built[chunk] = ImportanceWeighted(model, chunk, seed)
        built[chunk].compile(steps_per_execution=_IW_BATCHES_PER_CALL)
        return built[chunk]
    state = built[chunk].noise.state
    state.assign(np.array([seed, 0]).astype(state.dtype))
    return built[chunk]
