"""What a trained model is judged by at the end of a run, beyond the loss."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops


@dataclass(frozen=True)
class Pictures:
    """The arrays behind the run's figures."""

    originals: np.ndarray
    reconstructions: np.ndarray
    prior_samples: np.ndarray
    z_mean: np.ndarray
    labels: np.ndarray


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


def active_units(z_mean: np.ndarray, threshold: float) -> int:
    """Latent dimensions whose posterior mean varies across inputs (Burda et al., 2015).

    A unit is active when Cov_x(E_q[z_u | x]) exceeds the threshold (0.01 in the paper);
    zero active units is a collapsed posterior, whatever the loss says.
    """
    return int((z_mean.var(axis=0) > threshold).sum())


def _log_normal(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi) + log_var + (z - mean) ** 2 / np.exp(log_var)).sum(-1)


def importance_weighted_nll(
    model: keras.Model, x: np.ndarray, samples: int, seed: int, batch_size: int = 500
) -> float:
    """Test negative log-likelihood in nats per image, by importance sampling (IWAE bound).

    log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k, z_k ~ q(z|x),
    with the Bernoulli likelihood of the `elbo` loss. Tighter than the ELBO as k grows.
    """
    rng = np.random.default_rng(seed)
    binary = x  # intensities in [0, 1] treated as Bernoulli means, as the ELBO loss does
    totals = []
    for start in range(0, len(x), batch_size):
        xb = binary[start : start + batch_size]
        mean, log_var, _ = (ops.convert_to_numpy(t) for t in model.encoder(xb))
        eps = rng.standard_normal((samples, *mean.shape)).astype("float32")
        z = mean + np.exp(0.5 * log_var) * eps  # (k, n, d)
        x_hat = decode(model, z.reshape(-1, z.shape[-1])).reshape(samples, len(xb), -1)
        x_hat = np.clip(x_hat, 1e-7, 1 - 1e-7)
        log_px_z = (xb * np.log(x_hat) + (1 - xb) * np.log(1 - x_hat)).sum(-1)
        log_pz = _log_normal(z, np.zeros_like(z), np.zeros_like(z))
        log_qz = _log_normal(z, mean, log_var)
        log_w = log_px_z + log_pz - log_qz
        peak = log_w.max(axis=0)
        log_px = peak + np.log(np.exp(log_w - peak).mean(axis=0))
        totals.append(-log_px)
    return float(np.concatenate(totals).mean())
