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
