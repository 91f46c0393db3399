"""Each member's epochs, history and fate, and the events a round of the group reports.

A member is training, done (its weights at its last epoch kept for evaluation), stopped (told
to by `Events.should_stop`) or failed (a non-finite loss): the group trains on until none is
training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vaelab.engines.base import Checkpoint, Events, Job, epoch_metrics, non_finite_message
from vaelab.engines.packed.layout import LaidOut
from vaelab.vae.data import Pools
from vaelab.vocab import metrics
from vaelab.vocab.errors import NonFiniteLossError
from vaelab.vocab.metrics import TERMS


class Roster:
    """Each member's epoch, history and fate: training, done (its weights kept), or not."""

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

    def round_ended(self, group: LaidOut, train, val, seconds: float) -> None:
        """Each member's epoch reported (or its failure), its state saved when due.

        Then the members told to stop leave, and those at their last epoch keep their
        weights. Every member's numbers are reported before any is asked whether to stop, so that a
        pruner compares each with all of the group's at that epoch.
        """
        lanes = [j for j, i in enumerate(group.members[: group.lanes.count]) if i in self.training]
        trained = len(lanes)
        host = group.host_state() if self._needs_host(group, lanes) else None
        reported = []
        for j in lanes:
            i = group.members[j]
            epoch = self.epoch[i] + 1
            values = epoch_metrics(
                dict(zip(TERMS, train[j] / self.n, strict=True)),
                dict(zip(TERMS, val[j] / self.n_val, strict=True)),
                seconds,
            )
            # The group's wall time, named as such: not this member's own epoch time.
            values[metrics.GROUP_EPOCH_SECONDS] = values.pop(metrics.EPOCH_SECONDS)
            values[metrics.EPOCH_SECONDS_PER_MODEL] = seconds / trained
            self.epoch[i] = epoch
            if message := non_finite_message(epoch, values):
                self.training.discard(i)
                self.events.job_failed(i, epoch, NonFiniteLossError(message))
                continue
            for name, value in values.items():
                self.history[i].setdefault(name, []).append(value)
            self.events.epoch_ended(i, epoch, values)
            if self.jobs[i].saves_at(epoch):
                state = group.registry.saved_state(i, host[0][j], host[1][j])
                history = {k: list(v) for k, v in self.history[i].items()}
                self.events.saved(i, Checkpoint(epoch, self.engine, state, history))
            reported.append((i, j, epoch))
        for i, j, epoch in reported:
            if epoch < self.jobs[i].epochs and self.events.should_stop(i, epoch):
                self.training.discard(i)
                self.events.job_stopped(i, epoch)
            elif epoch == self.jobs[i].epochs:
                self.training.discard(i)
                self.final[i] = (host or group.host_state())[0][j]

    def _needs_host(self, group: LaidOut, lanes: Sequence[int]) -> bool:
        """Whether a member saves or ends this round: its state is then read off the device."""
        for j in lanes:
            i = group.members[j]
            epoch = self.epoch[i] + 1
            if self.jobs[i].saves_at(epoch) or epoch == self.jobs[i].epochs:
                return True
        return False
