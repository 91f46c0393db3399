"""The packed engine: a group of jobs trained round by round as one vmapped program.

Each round, every member still training does its own next epoch; members leave as they
finish, are stopped or fail, and the group is laid out again on fewer lanes once enough have
left. Members whose training is one computation share a lane (`twins`). The members that
finished are then measured together (`finish`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vaelab.engines import backend
from vaelab.engines.base import Events, Job
from vaelab.engines.packed.finish import evaluate_finished
from vaelab.engines.packed.layout import LaidOut
from vaelab.engines.packed.members import Members, Shared
from vaelab.engines.packed.program import program_for
from vaelab.engines.packed.roster import Roster
from vaelab.vae.data import Pools

log = logging.getLogger(__name__)

# Members are laid out afresh on fewer lanes once this share or less of them still trains: a
# new lane count compiles the epoch again, so not after every member that leaves.
SHRINK_AT = 0.75


@dataclass
class Timing:
    """Where a group's time went, in seconds (compilation included where it happens)."""

    setup: float = 0.0  # building each member's model and the program
    training: float = 0.0  # epochs, with their validation passes
    evaluation: float = 0.0  # test metrics, importance sampling, pictures


class PackedEngine:
    """Trains a group of jobs as one vmapped program (see `engines.packed`)."""

    name = "packed"
    groups_jobs = True  # jobs that may share a program train as one group
    warms_up_model_logging = True  # a group's training hides its members' first logging

    def __init__(self) -> None:
        self.timing = Timing()  # summed over the groups it trains

    def device(self) -> str:
        return backend.device_name()

    def train(self, jobs: Sequence[Job], data: Pools, events: Events) -> None:
        """Train every job; report each epoch, each failure and each finished job.

        Round by round, every member still training does its own next epoch (a resumed one
        starts after its checkpoint's). Once a quarter or more of the laid-out members have
        left (finished, stopped, failed), the rest are laid out again on fewer lanes: a member
        that is done stops costing compute.
        """
        started = time.perf_counter()
        shared = Shared.of(jobs)
        hidden = max(job.intermediate_dim for job in jobs)
        latent = max(job.latent_dim for job in jobs)
        pixels = data.train_pool.shape[1]
        prog = program_for(pixels, hidden, latent, shared.resample_pixels, shared.iw_samples)
        registry = Members(prog, jobs, data.train_rows)
        roster = Roster(jobs, data, events, self.name)
        members = roster.carriers  # jobs of one computation share a lane (`twins`)
        group = None
        if members:
            group = LaidOut(
                registry, members, [registry.params[i] for i in members],
                [registry.opt_state[i] for i in members], data, shared,
            )  # fmt: skip
        self.timing.setup += time.perf_counter() - started
        while group is not None and roster.training:
            count = group.lanes.count
            start = time.perf_counter()
            epochs = np.asarray([roster.epoch[i] + 1 for i in group.members])
            active = np.asarray(
                [j < count and i in roster.training for j, i in enumerate(group.members)]
            )
            train, val = group.train_round(epochs, active)
            seconds = time.perf_counter() - start
            self.timing.training += seconds
            trained = roster.round_ended(group, train, val, seconds)
            log.info(
                "packed round: %d models on %d lanes at epochs %d-%d in %.1f s (%.3f s per model)",
                trained, group.lanes.size, epochs[active].min(), epochs[active].max(), seconds,
                seconds / max(trained, 1),
            )  # fmt: skip
            left = [j for j in range(count) if group.members[j] in roster.training]
            if left and len(left) <= count * SHRINK_AT:
                group = group.shrunk(left, data, shared)
        done = {i: w for i, w in roster.final.items() if w is not None}
        for i in [i for i, w in roster.final.items() if w is None]:  # resumed after training
            done[i] = registry.params[i]
        if done:
            started = time.perf_counter()
            evaluate_finished(registry, jobs, data, shared, roster, done, events)
            self.timing.evaluation += time.perf_counter() - started
