"""How big the dense VAE is: parameters and the memory its training needs.

Plain arithmetic, so configs can be checked (and packed groups split) before any framework
is imported.
"""

from __future__ import annotations

# Bytes per float32 value.
FLOAT_BYTES = 4


def parameter_count(input_dim: int, intermediate_dim: int, latent_dim: int) -> int:
    """Weights and biases of the dense VAE (107,472 at the notebook's sizes)."""
    encoder = (input_dim + 1) * intermediate_dim + 2 * (intermediate_dim + 1) * latent_dim
    decoder = (latent_dim + 1) * intermediate_dim + (intermediate_dim + 1) * input_dim
    return encoder + decoder


def activation_count(input_dim: int, intermediate_dim: int, latent_dim: int, batch: int) -> int:
    """Values a batch keeps for the backward pass (inputs, hidden layers, latents, outputs)."""
    return batch * (3 * input_dim + 2 * intermediate_dim + 4 * latent_dim)


def training_bytes(parameters: int, activations: int) -> int:
    """Memory that training a model of `parameters` with `activations` per step needs.

    Four float32 copies of every parameter (weights, gradients, Adam's two moments) plus the
    activations twice (forward values and their gradients).
    """
    return FLOAT_BYTES * (4 * parameters + 2 * activations)


def estimated_training_bytes(
    input_dim: int, intermediate_dim: int, latent_dim: int, batch_size: int
) -> int:
    """A lower bound on the memory one model's training needs, to refuse hopeless sizes."""
    return training_bytes(
        parameter_count(input_dim, intermediate_dim, latent_dim),
        activation_count(input_dim, intermediate_dim, latent_dim, batch_size),
    )
