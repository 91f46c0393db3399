"""Each member's epochs, history and fate, and the events a round of the group reports.

A member is training, done (its weights at its last epoch kept for evaluation), stopped (told
to by `Events.should_stop`) or failed (a non-finite loss): the group trains on until none is
training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vaelab.engines.base import Checkpoint, Events, Job, epoch_metrics, non_finite_message
from vaelab.engines.packed import twins
from vaelab.engines.packed.layout import LaidOut
from vaelab.vae.data import Pools
from vaelab.vocab import metrics
from vaelab.vocab.errors import NonFiniteLossError
from vaelab.vocab.metrics import TERMS


class Roster:
    """Each member's epoch, history and fate: training, done (its weights kept), or not.

    Members of one computation share a lane (`twins`): the lane's member is its carrier, and
    each job riding on it is reported its epochs, saved, asked to stop and kept at its last
    epoch as if it had a lane of its own.
    """

    def __init__(self, jobs: Sequence[Job], data: Pools, events: Events, engine: str):
        self.jobs, self.events, self.engine = jobs, events, engine
        self.n, self.n_val = len(data.train_rows), len(data.val_rows)
        self.epoch = [job.start.epoch if job.start else 0 for job in jobs]  # the last done
        self.history = [
            {k: list(v) for k, v in job.start.history.items()} if job.start else {} for job in jobs
        ]
        self.training = {i for i, job in enumerate(jobs) if self.epoch[i] < job.epochs}
        self.final: dict[int, list[np.ndarray]] = {}  # weights at each member's last epoch
        for i in set(range(len(jobs))) - self.training:  # resumed at their last epoch
            self.final[i] = None
        # Each finished member: the one whose measurement stands for it (the same weights).
        self.measured_as: dict[int, int] = {i: i for i in self.final}
        self.riders = {
            carrier: [i for i in together if i in self.training]
            for carrier, together in twins.riders(jobs).items()
            if carrier in self.training
        }

    @property
    def carriers(self) -> list[int]:
        """The members that need a lane: one per computation still training."""
        return sorted(self.riders)

    def round_ended(self, group: LaidOut, train, val, seconds: float) -> int:
        """Each member's epoch reported (or its failure), its state saved when due.

        Then the members told to stop leave, and those at their last epoch keep their
        weights. Every member's numbers are reported before any is asked whether to stop, so
        that a pruner compares each with all of the group's at that epoch. A lane whose
        carrier left carries on for the jobs still riding on it.
        """
        lanes = [j for j, i in enumerate(group.members[: group.lanes.count]) if i in self.training]
        riding = {
            j: [i for i in self.riders[group.members[j]] if i in self.training] for j in lanes
        }
        trained = sum(map(len, riding.values()))
        host = group.host_state() if self._needs_host(riding) else None
        reported = []
        for j in lanes:
            values = epoch_metrics(
                dict(zip(TERMS, train[j] / self.n, strict=True)),
                dict(zip(TERMS, val[j] / self.n_val, strict=True)),
                seconds,
            )
            # The group's wall time, named as such: not this member's own epoch time.
            values[metrics.GROUP_EPOCH_SECONDS] = values.pop(metrics.EPOCH_SECONDS)
            values[metrics.EPOCH_SECONDS_PER_MODEL] = seconds / trained
            for i in riding[j]:
                if self._reported(group, host, j, i, values):
                    reported.append((i, j, self.epoch[i]))
        kept: dict[int, int] = {}  # lane -> the first member kept at its last epoch this round
        for i, j, epoch in reported:
            if epoch < self.jobs[i].epochs and self.events.should_stop(i, epoch):
                self.training.discard(i)
                self.events.job_stopped(i, epoch)
            elif epoch == self.jobs[i].epochs:
                self.training.discard(i)
                self.final[i] = (host or group.host_state())[0][j]
                self.measured_as[i] = kept.setdefault(j, i)
                self.events.job_trained(i, {k: list(v) for k, v in self.history[i].items()})
        for j in lanes:
            self._hand_on(group, j)
        return trained

    def _reported(self, group: LaidOut, host, j: int, i: int, values: dict) -> bool:
        """Member i's epoch on lane j reported, and its state saved when due; False: failed."""
        epoch = self.epoch[i] = self.epoch[i] + 1
        if message := non_finite_message(epoch, values):
            self.training.discard(i)
            self.events.job_failed(i, epoch, NonFiniteLossError(message))
            return False
        for name, value in values.items():
            self.history[i].setdefault(name, []).append(value)
        self.events.epoch_ended(i, epoch, dict(values))
        if self.jobs[i].saves_at(epoch):
            state = group.registry.saved_state(i, host[0][j], host[1][j])
            history = {k: list(v) for k, v in self.history[i].items()}
            self.events.saved(i, Checkpoint(epoch, self.engine, state, history))
        return True

    def _hand_on(self, group: LaidOut, j: int) -> None:
        """Lane j's carrier gone (stopped, failed), the job riding on it longest carries it."""
        carrier = group.members[j]
        left = [i for i in self.riders.pop(carrier) if i in self.training]
        if left:
            self.riders[left[0]] = left
            group.members[j] = left[0]

    def _needs_host(self, riding: dict[int, list[int]]) -> bool:
        """Whether a member saves or ends this round: its state is then read off the device."""
        for members in riding.values():
            for i in members:
                epoch = self.epoch[i] + 1
                if self.jobs[i].saves_at(epoch) or epoch == self.jobs[i].epochs:
                    return True
        return False
