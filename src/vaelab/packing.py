"""Which configurations of a sweep can train together as one compiled program, and how many.

Plain Python: a plan is made (and a bad sweep refused) before any framework is imported.
Configurations share a program when they agree on everything that fixes the shapes and the
data of the computation (`SHARED`); they may differ in seed, learning rate, loss, style,
sizes and epochs. A group is split when its estimated memory would not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vaelab import sizes
from vaelab.config import Config, flatten

# Settings every member of a group must share: the input and batch shapes, the data (which
# digits, which binarisation), and what is evaluated at the end.
SHARED = (
    "model.input_dim",
    "train.batch_size",
    "data.npm_package",
    "data.validation_size",
    "data.train_limit",
    "data.test_limit",
    "data.binarize",
    "data.binarize_seed",
    "eval.n_images",
    "eval.n_latent_points",
    "eval.iw_samples",
)
_FLOAT = 4
# Digits evaluated per compiled step, and test digits per importance-sampling step.
EVAL_BATCH = 500
IW_BATCH = 20


@dataclass(frozen=True)
class Job:
    """One job of a packed batch: its validated config and the overrides that made it."""

    config: Config
    overrides: list[str]


@dataclass(frozen=True)
class Group:
    """Jobs (indices into the sweep's list) that train as one program, and its padded sizes."""

    jobs: tuple[int, ...]
    intermediate_dim: int
    latent_dim: int
    estimated_bytes: int


def shared_key(config: Config) -> tuple:
    flat = flatten(config)
    return tuple(str(flat[key]) for key in SHARED)


def member_bytes(config: Config, intermediate_dim: int, latent_dim: int) -> int:
    """Memory one member needs at the group's padded sizes.

    Its parameters four times over (weights, gradients, Adam's moments) and the activations
    of its largest step.
    """
    m, e = config.model, config.eval
    parameters = sizes.parameter_count(m.input_dim, intermediate_dim, latent_dim)
    train = sizes.activation_count(
        m.input_dim, intermediate_dim, latent_dim, config.train.batch_size
    )
    evaluation = max(EVAL_BATCH, IW_BATCH * max(e.iw_samples, 1)) * (m.input_dim + intermediate_dim)
    return _FLOAT * (4 * parameters + 2 * max(train, evaluation))


def shared_bytes(config: Config, train_images: int) -> int:
    """Memory every group holds once: the training images (intensities) and the test set."""
    return _FLOAT * config.model.input_dim * (train_images + 10_000)


def plan(
    configs: Sequence[Config],
    budget_bytes: int,
    train_images: int = 60_000,
    max_group_size: int | None = None,
) -> list[Group]:
    """Group the jobs that can train together.

    By what they must share, then by size (similar sizes pad little), then split wherever
    a group would exceed the memory budget or `max_group_size`.
    """
    by_key: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        by_key.setdefault(shared_key(config), []).append(index)
    groups: list[Group] = []
    for jobs in by_key.values():
        jobs = sorted(
            jobs, key=lambda j: (configs[j].model.intermediate_dim, configs[j].model.latent_dim)
        )
        current: list[int] = []
        for job in jobs:
            candidate = [*current, job]
            estimate = _estimate(configs, candidate, train_images)
            too_many = max_group_size is not None and len(candidate) > max_group_size
            if current and (estimate > budget_bytes or too_many):
                groups.append(_group(configs, current, train_images))
                current = [job]
            else:
                current = candidate
        if current:
            groups.append(_group(configs, current, train_images))
    return groups


def _padded(configs: Sequence[Config], jobs: Sequence[int]) -> tuple[int, int]:
    return (
        max(configs[j].model.intermediate_dim for j in jobs),
        max(configs[j].model.latent_dim for j in jobs),
    )


def _estimate(configs: Sequence[Config], jobs: Sequence[int], train_images: int) -> int:
    hidden, latent = _padded(configs, jobs)
    first = configs[jobs[0]]
    return shared_bytes(first, train_images) + sum(
        member_bytes(configs[j], hidden, latent) for j in jobs
    )


def _group(configs: Sequence[Config], jobs: list[int], train_images: int) -> Group:
    hidden, latent = _padded(configs, jobs)
    return Group(tuple(jobs), hidden, latent, _estimate(configs, jobs, train_images))
