"""A member's random streams: its key folded with what each draw is for, never with the group.

Each use of randomness folds its `Stream` into the member's key, then the epoch and step; a
latent unit's noise folds in the unit's index and, in evaluation, the digit's index too. So a
member draws the same numbers however far its group pads it and however its digits are batched.
"""

from __future__ import annotations

from enum import IntEnum

import jax
import jax.numpy as jnp


class Stream(IntEnum):
    """Folded into a member's key to give each use of randomness its own stream."""

    NOISE = 0  # the sampling noise of training steps
    PIXELS = 1  # dynamic binarisation's draws
    EVAL = 2  # the sampling noise of validation and test passes
    IW = 3  # the importance samples of the estimate
    PICTURES = 4  # the reconstructions of the figures


def unit_noise(key, units: int, shape: tuple[int, ...]):
    """Standard normal noise (*shape, units); unit j's comes from the key folded with j."""
    unit_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(units))
    return jnp.moveaxis(jax.vmap(lambda k: jax.random.normal(k, shape))(unit_keys), 0, -1)


def digit_noise(key, digits, units: int, samples: tuple[int, ...] = ()):
    """Noise (*samples, digits, units); digit d's comes from the key folded with d.

    So a digit's noise is the same however the digits are batched.
    """
    noise = jax.vmap(lambda d: unit_noise(jax.random.fold_in(key, d), units, samples))(digits)
    return jnp.moveaxis(noise, 0, len(samples))
