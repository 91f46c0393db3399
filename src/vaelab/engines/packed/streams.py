"""A member's random streams: its key folded with what each draw is for, never with the group.

Each use of randomness folds its `Stream` into the member's key, then the epoch and step; a
latent unit's noise folds in the unit's index and, in evaluation, the digit's index too. So a
member draws the same numbers however far its group pads it and however its digits are batched.
"""

from __future__ import annotations

from enum import IntEnum

import jax
import jax.numpy as jnp
import numpy as np


class Stream(IntEnum):
    """Folded into a member's key to give each use of randomness its own stream."""

    NOISE = 0  # the sampling noise of training steps
    PIXELS = 1  # dynamic binarisation's draws
    EVAL = 2  # the sampling noise of validation and test passes
    IW = 3  # the importance samples of the estimate
    PICTURES = 4  # the reconstructions of the figures


def fold(keys: jnp.ndarray, *numbers: int | np.ndarray) -> jnp.ndarray:
    """Each member's key (as key data) folded with the numbers in turn.

    A number is the same for every member, or an array of one per member (its epoch).
    """
    columns = [jnp.broadcast_to(jnp.asarray(n), (keys.shape[0],)) for n in numbers]

    def fold_member(key_data, *own):
        key = jax.random.wrap_key_data(key_data)
        for number in own:
            key = jax.random.fold_in(key, number)
        return jax.random.key_data(key)

    return jax.vmap(fold_member)(keys, *columns)


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
