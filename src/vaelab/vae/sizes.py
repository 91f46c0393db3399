"""How big the dense VAE is: parameters and the memory its training needs.

Plain arithmetic, so configs can be checked (and packed groups split) before any framework
is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bytes per float32 value.
FLOAT_BYTES = 4
# Digits per compiled step where a model is only measured (validation, test), solo and
# packed. Each digit gets its own sampling draw whatever the batch, so it decides speed and
# memory, never what is measured (docs/benchmarks.md: 500 against 64 for the test set).
EVAL_BATCH = 500
# Latent samples a packed member decodes per step of the importance-weighted estimate (its
# memory: rows x pixels floats per member); `iw_layout` steps any K within it.
PACKED_IW_ROWS = 500


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


@dataclass(frozen=True)
class IwLayout:
    """How an importance-weighted estimate with `samples` per digit is cut into steps.

    Each step decodes at most `rows` latent samples (its memory: rows x pixels floats, twice
    over), so K = 5000 (Burda et al.'s evaluation) runs in the memory K = 5 needs: every
    sample of `digits` digits in one step when they fit, else `chunks` chunks of `chunk`
    samples of one digit, combined by a running log-sum-exp. The last chunk may run past
    `samples`; those extra draws are masked out, never counted.
    """

    digits: int
    chunk: int
    chunks: int

    @property
    def drawn(self) -> int:
        return self.chunk * self.chunks


def iw_layout(samples: int, rows: int, max_digits: int) -> IwLayout:
    """The steps of an estimate with `samples` per digit, at most `rows` decodes per step."""
    if samples <= rows:
        return IwLayout(max(1, min(max_digits, rows // samples)), samples, 1)
    chunks = -(-samples // rows)
    return IwLayout(1, -(-samples // chunks), chunks)
