"""Members of different sizes in one program: weights padded to the group's sizes, and masks.

A member's arrays are zero-padded to the group's largest sizes; its masks are 1 on its own
weights and 0 on padding, so that padded units get no gradient and stay exactly zero.
"""

from __future__ import annotations

import numpy as np

from vaelab.engines.base import Job
from vaelab.vae.models import DENSE_NAMES

# `models.dense_weights` lists each layer's kernel and bias in DENSE_NAMES order: the
# encoder's three layers come first, and z_mean's bias is the array shaped like the latent
# units (its mask is the member's latent mask).
ENCODER_ARRAYS = 2 * DENSE_NAMES.index("decoder_hidden")
LATENT_BIAS = 2 * DENSE_NAMES.index("z_mean") + 1


def pad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    padded = np.zeros(shape, dtype=np.float32)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    return padded


def crop(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return array[tuple(slice(0, n) for n in shape)]


def shapes(pixels: int, hidden: int, latent: int) -> list[tuple[int, ...]]:
    """Shapes of the 10 arrays of `models.dense_weights` at the given sizes."""
    return [
        (pixels, hidden), (hidden,),
        (hidden, latent), (latent,),
        (hidden, latent), (latent,),
        (latent, hidden), (hidden,),
        (hidden, pixels), (pixels,),
    ]  # fmt: skip


def masks(pixels: int, hidden: int, latent: int, job: Job) -> list[np.ndarray]:
    """1 where a weight of the padded arrays is the member's own, 0 where it is padding."""
    h = (np.arange(hidden) < job.intermediate_dim).astype(np.float32)
    z = (np.arange(latent) < job.latent_dim).astype(np.float32)
    x = np.ones(pixels, np.float32)
    return [
        np.outer(x, h), h,
        np.outer(h, z), z,
        np.outer(h, z), z,
        np.outer(z, h), h,
        np.outer(h, x), x,
    ]  # fmt: skip
