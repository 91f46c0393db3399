"""Which configurations of a sweep can train together as one compiled program, and how many.

Plain Python: a plan is made (and a bad sweep refused) before any framework is imported.
Configurations share a program when they agree on everything that fixes the shapes and the
data of the computation (`SHARED`); they may differ in seed, learning rate, loss, style,
sizes and epochs. A group is split when its estimated memory would not fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vaelab.edges.config import Binarize, Config, as_dict, flatten_dict
from vaelab.rules.replicates import configuration_of
from vaelab.vae import sizes

# Every setting of a run, classified for packing (tests/test_packing.py walks every key of the
# composed config and fails on one in none of these, or in two): a new setting is packed
# wrongly until someone decides where it belongs.
#
# Settings every member of a group must share: the input and batch shapes, the data (which
# digits, which binarisation, which validation split), what is evaluated at the end, and the
# store the group's runs are written to.
SHARED = (
    "model.input_dim",
    "train.batch_size",
    "data.npm_package",
    "data.sha256",
    "data.validation_size",
    "data.split_seed",
    "data.train_limit",
    "data.test_limit",
    "data.binarize",
    "data.binarize_seed",
    "eval.n_images",
    "eval.n_latent_points",
    "eval.iw_samples",
    "experiment_name",
    "sweep.pruner",
    "sweep.pruner_min_epochs",
    "sweep.pruner_reduction_factor",
    "sweep.pruner_storage",
    "sweep.register_best",
    "sweep.seeds",
    "tracking.uri",
    "tracking.experiment",
    "tracking.artifact_root",
)
# Settings each member keeps as its own: the packed engine honours them per member.
PER_MEMBER = (
    "seed",
    "objective",
    "force",
    "style.name",
    "model.intermediate_dim",
    "model.latent_dim",
    "loss.name",
    "loss.reconstruction",
    "loss.pixel_reduction",
    "loss.kl_reduction",
    "loss.beta",
    "train.epochs",
    "train.learning_rate",
    "train.shuffle",
    "train.checkpoint_every",
    "train.checkpoints_kept",
    "eval.active_unit_threshold",
    "tracking.run_name",
    "tracking.log_model",
    "tracking.system_metrics",
)
# Settings of the solo engines that change no number of a packed run: how many batches one
# compiled call of Keras takes (a packed group compiles whole epochs), and TensorFlow's op
# determinism (packed runs on JAX, deterministic by construction).
SOLO_ONLY = ("style.steps_per_execution", "train.deterministic")


@dataclass(frozen=True)
class PackedGroup:
    """Jobs (indices into the sweep's list) that train as one program, and its padded sizes."""

    jobs: tuple[int, ...]
    intermediate_dim: int
    latent_dim: int
    estimated_bytes: int


def settings(config: Config) -> dict[str, object]:
    """Every setting as `section.key -> value`, the checksum table as one value."""
    return flatten_dict(as_dict(config), keep={"sha256"})


def shared_key(config: Config) -> tuple:
    flat = settings(config)
    return tuple(str(flat[key]) for key in SHARED)


def member_bytes(config: Config, intermediate_dim: int, latent_dim: int) -> int:
    """Memory one member needs at the group's padded sizes.

    Its parameters four times over (weights, gradients, Adam's moments) and the activations
    of its largest step.
    """
    m = config.model
    parameters = sizes.parameter_count(m.input_dim, intermediate_dim, latent_dim)
    train = sizes.activation_count(
        m.input_dim, intermediate_dim, latent_dim, config.train.batch_size
    )
    evaluation = max(sizes.EVAL_BATCH, sizes.PACKED_IW_ROWS) * (m.input_dim + intermediate_dim)
    return sizes.training_bytes(parameters, max(train, evaluation))


def shared_bytes(config: Config, train_images: int, test_images: int) -> int:
    """Memory every group holds once: the images it draws from and its test digits.

    The training images once, twice under dynamic binarisation (the intensities to draw from
    and the binarised copy the validation digits come from); `data.test_limit` test digits.
    """
    d = config.data
    pools = 2 if d.binarize == Binarize.dynamic else 1
    tested = test_images if d.test_limit is None else min(d.test_limit, test_images)
    return sizes.FLOAT_BYTES * config.model.input_dim * (pools * train_images + tested)


def plan(
    configs: Sequence[Config],
    budget_bytes: int,
    train_images: int,
    test_images: int,
    max_group_size: int | None = None,
) -> list[PackedGroup]:
    """Group the jobs that can train together.

    By what they must share, then by size (similar sizes pad little), then split wherever
    a group would exceed the memory budget or `max_group_size`. A configuration's replicates
    (the same but for the seed) go into one group whole, as lanes of the same shapes: they
    are split only when they alone exceed a group. `train_images` and `test_images` are the
    dataset's sizes (before any `data.*_limit`).
    """
    images = (train_images, test_images)
    by_key: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        by_key.setdefault(shared_key(config), []).append(index)
    groups: list[PackedGroup] = []
    for jobs in by_key.values():
        current: list[int] = []
        for block in _replicate_blocks(configs, jobs):
            if current and not _fits(
                configs, [*current, *block], images, budget_bytes, max_group_size
            ):
                groups.append(_group(configs, current, images))
                current = []
            for job in block:  # a block alone too large for a group is split where it must be
                if current and not _fits(
                    configs, [*current, job], images, budget_bytes, max_group_size
                ):
                    groups.append(_group(configs, current, images))
                    current = []
                current.append(job)
        if current:
            groups.append(_group(configs, current, images))
    return groups


def _replicate_blocks(configs: Sequence[Config], jobs: Sequence[int]) -> list[list[int]]:
    """The jobs as blocks of one configuration's replicates, by size (similar sizes pad little)."""
    blocks: dict[str, list[int]] = {}
    for job in jobs:
        blocks.setdefault(configuration_of(configs[job]), []).append(job)
    return sorted(
        blocks.values(),
        key=lambda b: (configs[b[0]].model.intermediate_dim, configs[b[0]].model.latent_dim),
    )


def _fits(
    configs: Sequence[Config],
    jobs: Sequence[int],
    images: tuple[int, int],
    budget_bytes: int,
    max_group_size: int | None,
) -> bool:
    too_many = max_group_size is not None and len(jobs) > max_group_size
    return not too_many and _estimate(configs, jobs, images) <= budget_bytes


def _padded(configs: Sequence[Config], jobs: Sequence[int]) -> tuple[int, int]:
    return (
        max(configs[j].model.intermediate_dim for j in jobs),
        max(configs[j].model.latent_dim for j in jobs),
    )


def _estimate(configs: Sequence[Config], jobs: Sequence[int], images: tuple[int, int]) -> int:
    hidden, latent = _padded(configs, jobs)
    return shared_bytes(configs[jobs[0]], *images) + sum(
        member_bytes(configs[j], hidden, latent) for j in jobs
    )


def _group(configs: Sequence[Config], jobs: list[int], images: tuple[int, int]) -> PackedGroup:
    hidden, latent = _padded(configs, jobs)
    return PackedGroup(tuple(jobs), hidden, latent, _estimate(configs, jobs, images))
