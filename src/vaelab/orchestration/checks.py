"""Refusals before anything is recorded: every job of a batch must fit, run and split.

A batch is checked whole before the store is touched, so that a mistake in one job costs
seconds and leaves no run behind; each refusal is a `ConfigError` naming what to change.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaelab.edges.config import Config
from vaelab.engines import backend
from vaelab.vae import data as mnist_data
from vaelab.vae.sizes import estimated_training_bytes
from vaelab.vocab.errors import ConfigError


def check_runnable(configs: Sequence[Config]) -> str:
    """Each config's model fits in memory and its style runs on this backend; the backend's name."""
    framework = ""
    for config in configs:
        check_fits_in_memory(config, backend.memory_for_training())
        framework = backend.check_backend(config.style.name.value)
    return framework


def check_splits(configs: Sequence[Config], mnist: mnist_data.Mnist) -> None:
    """Each config's split of the verified data: a bad one refuses the batch."""
    for config in configs:
        d = config.data
        mnist_data.split_rows(len(mnist.x_train), d.validation_size, d.split_seed, d.train_limit)


def check_fits_in_memory(config: Config, available_bytes: int) -> None:
    """Refuse a model whose training cannot fit in memory, before anything is loaded."""
    m = config.model
    needed = estimated_training_bytes(
        m.input_dim, m.intermediate_dim, m.latent_dim, config.train.batch_size
    )
    if needed > available_bytes:
        raise ConfigError(
            f"model.intermediate_dim={m.intermediate_dim}, model.latent_dim={m.latent_dim} "
            f"(batch {config.train.batch_size}) need about {needed / 2**30:.1f} GiB to train "
            f"but {available_bytes / 2**30:.1f} GiB is available; choose smaller sizes"
        )
