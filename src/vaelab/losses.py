"""The VAE objective as pure `keras.ops` functions, so every backend and style shares it.

The notebook's two styles reduce the terms differently (pixel-mean MSE against a latent-mean
or latent-sum KL); `LossSpec` makes each reduction explicit so that a preset can reproduce
either cell exactly, and `elbo` gives a true negative ELBO in nats.
"""

from __future__ import annotations

from dataclasses import dataclass

from keras import ops

# Keeps log() finite when a sigmoid output saturates at exactly 0 or 1 in float32.
_BCE_EPSILON = 1e-7


@dataclass(frozen=True)
class LossSpec:
    reconstruction: str = "bce"  # "mse" | "bce"
    pixel_reduction: str = "sum"  # "mean" | "sum" over the 784 pixels
    kl_reduction: str = "sum"  # "mean" | "sum" over latent dimensions
    beta: float = 1.0

    def __post_init__(self) -> None:
        for field, value, allowed in (
            ("reconstruction", self.reconstruction, ("mse", "bce")),
            ("pixel_reduction", self.pixel_reduction, ("mean", "sum")),
            ("kl_reduction", self.kl_reduction, ("mean", "sum")),
        ):
            if value not in allowed:
                raise ValueError(f"loss.{field}={value!r}: expected one of {allowed}")


def _reduce(values, how: str):
    return ops.mean(values, axis=-1) if how == "mean" else ops.sum(values, axis=-1)


def reconstruction_per_example(x, x_hat, kind: str, reduction: str):
    """Squared error or Bernoulli negative log-likelihood, reduced over pixels."""
    if kind == "mse":
        per_pixel = ops.square(x - x_hat)
    else:
        x_hat = ops.clip(x_hat, _BCE_EPSILON, 1.0 - _BCE_EPSILON)
        per_pixel = -(x * ops.log(x_hat) + (1.0 - x) * ops.log(1.0 - x_hat))
    return _reduce(per_pixel, reduction)


def kl_per_example(z_mean, z_log_var, reduction: str):
    """KL(N(mu, sigma^2) || N(0, 1)) in closed form, reduced over latent dimensions."""
    per_dim = -0.5 * (1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
    return _reduce(per_dim, reduction)


def vae_loss_terms(x, x_hat, z_mean, z_log_var, spec: LossSpec) -> dict:
    """Batch-mean reconstruction, KL and their weighted total (what is optimised)."""
    reconstruction = ops.mean(
        reconstruction_per_example(x, x_hat, spec.reconstruction, spec.pixel_reduction)
    )
    kl = ops.mean(kl_per_example(z_mean, z_log_var, spec.kl_reduction))
    return {"total": reconstruction + spec.beta * kl, "reconstruction": reconstruction, "kl": kl}
