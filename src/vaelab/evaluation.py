"""What a trained model is judged by at the end of a run, beyond the loss."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from vaelab.losses import log_importance_weights, negative_log_mean_exp
from vaelab.plots import Pictures


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
    originals = x_test[:n_images]
    reconstructions = ops.convert_to_numpy(model(originals)["reconstruction"])
    prior = np.random.default_rng(seed).standard_normal((n_images, latent_dim)).astype("float32")
    n_points = min(n_latent_points, len(x_test))
    return Pictures(
        originals=originals,
        reconstructions=reconstructions,
        prior_samples=decode(model, prior),
        z_mean=encode_means(model, x_test[:n_points]),
        labels=y_test[:n_points],
    )


def importance_weighted_bound(
    model: keras.Model, x: np.ndarray, samples: int, seed: int, batch_size: int = 250
) -> float:
    """-log p(x) estimated with `samples` importance samples per digit, mean over `x`, in nats.

    On binary pixels this is an upper bound on the negative log-likelihood, tighter than
    the negative ELBO and tightening as `samples` grows. On intensities it is the same
    formula applied to fractional targets: not a likelihood (see `metrics`).
    """
    rng = np.random.default_rng(seed)
    totals = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        mean, log_var, _ = (ops.convert_to_numpy(t) for t in model.encoder(xb))
        eps = rng.standard_normal((samples, *mean.shape)).astype("float32")
        z = mean + np.exp(0.5 * log_var) * eps  # (k, n, units)
        x_hat = ops.reshape(model.decoder(z.reshape(-1, z.shape[-1])), (samples, len(xb), -1))
        log_w = log_importance_weights(xb, x_hat, z, mean, log_var)
        totals.append(ops.convert_to_numpy(negative_log_mean_exp(log_w)))
    return float(np.concatenate(totals).mean())
