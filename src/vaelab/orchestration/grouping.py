"""Which jobs train together, and what every run of a group carries to say so.

Packed: what may share one program (`rules.packing`: shared settings, size, memory); solo:
each job alone. A packed group's runs carry its name, a hash of its members, so the runs
table can show who trained with whom.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

from vaelab.engines.base import Engine
from vaelab.rules import packing
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.runs import PlannedRun
from vaelab.vae import data as mnist_data
from vaelab.vocab.tags import DEVICE, ENGINE, PACK_GROUP, PACK_SIZE


def groups(
    engine: Engine,
    planned: Sequence[PlannedRun],
    todo: Sequence[int],
    mnist: mnist_data.Mnist,
    budget: int | None,
    max_group_size: int | None,
) -> list[list[int]]:
    """Which jobs train together: what may share a program, or each alone."""
    if not engine.groups_jobs:
        return [[i] for i in todo]
    return [
        list(group.jobs) for group in packed_groups(planned, todo, mnist, budget, max_group_size)
    ]


def packed_groups(
    planned: Sequence[PlannedRun],
    todo: Sequence[int],
    mnist: mnist_data.Mnist,
    budget: int,
    max_group_size: int | None,
) -> list[packing.PackedGroup]:
    """The packing plan of the jobs to train, each group's jobs as indices into `planned`."""
    plan = packing.plan(
        [planned[i].config for i in todo],
        budget,
        len(mnist.x_train),
        len(mnist.x_test),
        max_group_size,
    )
    return [dataclasses.replace(g, jobs=tuple(todo[j] for j in g.jobs)) for g in plan]


def group_tags(
    engine: Engine,
    context: SweepContext | None,
    members: Sequence[PlannedRun],
    number: int,
) -> dict[str, str]:
    """What every run of a group carries: its engine and device, a packed group's name."""
    tags = {ENGINE: engine.name, DEVICE: engine.device()}
    if engine.groups_jobs:
        hashes = ",".join(sorted(m.config_hash for m in members))
        sweep = context.sweep_id if context else ""
        name = hashlib.sha256(f"{sweep}:{hashes}".encode()).hexdigest()[:8]
        tags.update({PACK_GROUP: name, PACK_SIZE: str(len(members))})
    return tags
