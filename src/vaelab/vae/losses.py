"""The VAE objective as pure `keras.ops` functions, so every backend, style and engine shares it.

The notebook's two styles reduce the terms differently (pixel-mean MSE against a latent-mean
or latent-sum KL); `LossSpec` makes each choice explicit so that a preset can reproduce either
cell exactly, and `elbo` gives a negative ELBO in nats. The functions take the choices as
numbers (`LossWeights`): plain floats for one model, or one value per configuration when a
packed sweep trains many models with different losses in one `jax.vmap`. A packed sweep also
pads smaller latent spaces to its largest: `latent_mask` marks the real units, and every
reduction over latent units counts only those. (What a model is measured by after training,
the importance-weighted estimate, is `vae.importance`.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from keras import ops

from vaelab.vocab.choices import Reconstruction, Reduction

# Keeps log() finite when a sigmoid output saturates at exactly 0 or 1 in float32.
BCE_EPSILON = 1e-7

_CHOICES = {
    "reconstruction": tuple(Reconstruction),
    "pixel_reduction": tuple(Reduction),
    "kl_reduction": tuple(Reduction),
}


@dataclass(frozen=True)
class LossWeights:
    """The objective's choices as numbers: 1.0 or 0.0 flags, and beta.

    Floats for one model; arrays with one value per configuration under `jax.vmap`.
    """

    bce: Any  # 1: Bernoulli negative log-likelihood; 0: squared error
    pixel_mean: Any  # 1: average over pixels; 0: sum
    kl_mean: Any  # 1: average over (real) latent units; 0: sum
    beta: Any


@dataclass(frozen=True)
class LossSpec:
    reconstruction: str  # "mse" | "bce"
    pixel_reduction: str  # "mean" | "sum" over the pixels
    kl_reduction: str  # "mean" | "sum" over latent dimensions
    beta: float

    def __post_init__(self) -> None:
        for field, allowed in _CHOICES.items():
            value = getattr(self, field)
            if value not in allowed:
                options = tuple(str(choice) for choice in allowed)
                raise ValueError(f"loss.{field}={value!r}: expected one of {options}")

    def weights(self) -> LossWeights:
        return LossWeights(
            bce=float(self.reconstruction == Reconstruction.bce),
            pixel_mean=float(self.pixel_reduction == Reduction.mean),
            kl_mean=float(self.kl_reduction == Reduction.mean),
            beta=float(self.beta),
        )


def _choose(flag: Any, if_one: Callable[[], Any], if_zero: Callable[[], Any]) -> Any:
    """A float flag computes one branch only; a traced per-configuration flag selects."""
    if isinstance(flag, int | float):
        return if_one() if flag else if_zero()
    return ops.where(flag > 0.5, if_one(), if_zero())


def reconstruction_per_example(x, x_hat, weights: LossWeights):
    """Squared error or Bernoulli negative log-likelihood, summed or averaged over pixels."""

    def bce():
        clipped = ops.clip(x_hat, BCE_EPSILON, 1.0 - BCE_EPSILON)
        return -(x * ops.log(clipped) + (1.0 - x) * ops.log(1.0 - clipped))

    per_pixel = _choose(weights.bce, bce, lambda: ops.square(x - x_hat))
    total = ops.sum(per_pixel, axis=-1)
    pixels = ops.cast(ops.shape(x)[-1], total.dtype)
    return _choose(weights.pixel_mean, lambda: total / pixels, lambda: total)


def kl_per_example(z_mean, z_log_var, weights: LossWeights, latent_mask=None):
    """KL(N(mu, sigma^2) || N(0, 1)) in closed form, over the real latent units."""
    per_unit = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    if latent_mask is None:
        total = ops.sum(per_unit, axis=-1)
        units = ops.cast(ops.shape(per_unit)[-1], total.dtype)
    else:
        total = ops.sum(per_unit * latent_mask, axis=-1)
        units = ops.sum(latent_mask)
    return _choose(weights.kl_mean, lambda: total / units, lambda: total)


def _batch_mean(values, size=None):
    """The mean over the batch; with `size`, over its first `size` rows (padding after them).

    A full batch (`size` its length) is averaged exactly as without `size`.
    """
    if size is None:
        return ops.mean(values)
    real = ops.arange(values.shape[0]) < size
    partial = ops.sum(ops.where(real, values, 0.0)) / ops.cast(size, values.dtype)
    return ops.where(size == values.shape[0], ops.mean(values), partial)


def vae_loss_terms(
    x, x_hat, z_mean, z_log_var, weights: LossWeights, latent_mask=None, size=None
) -> dict:
    """Batch-mean reconstruction, KL and their weighted total (what is optimised).

    `size`: the batch's real rows when it is padded (the packed engine pads an epoch's last,
    smaller batch so that one compiled program runs the whole epoch).
    """
    reconstruction = _batch_mean(reconstruction_per_example(x, x_hat, weights), size)
    kl = _batch_mean(kl_per_example(z_mean, z_log_var, weights, latent_mask), size)
    return {"total": reconstruction + weights.beta * kl, "reconstruction": reconstruction, "kl": kl}
