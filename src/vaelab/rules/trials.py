"""A group's runs as trials of their sweep's pruning studies, and the verdict at each epoch.

Each run of a pruned sweep reports its epochs to its trial; every run that reported an epoch
is judged at once, in a seeded random order (`pruning.judging_order`), so that a packed
group's members are judged as solo runs reaching the rung one by one would be. The study is
told how each trial ended (pruned, failed, or its objective).
"""

from __future__ import annotations

from collections.abc import Mapping

from vaelab.edges.config import Config
from vaelab.rules import pruning


class Trials:
    """Each job's trial (only jobs of a pruned sweep have one) and their pending verdicts."""

    def __init__(self, sweep_id: str):
        self.sweep_id = sweep_id
        self._trials: dict[int, pruning.Trial] = {}
        self._reported: dict[int, list[int]] = {}  # by epoch: jobs reported, not yet judged
        self._verdicts: dict[tuple[int, int], bool] = {}  # (job, epoch): stop it?

    def join(self, job: int, config: Config, earlier: str | None) -> pruning.Trial:
        """The job's trial in its comparable group's study (`earlier`: the one it had)."""
        trial = pruning.trial_for(self.sweep_id, config, int(earlier) if earlier else None)
        self._trials[job] = trial
        return trial

    def report(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        if (trial := self._trials.get(job)) is not None:
            trial.report(epoch, values)
            self._reported.setdefault(epoch, []).append(job)

    def should_stop(self, job: int, epoch: int) -> bool:
        """Whether the pruner stops the job at this epoch (never without a trial)."""
        if job not in self._trials:
            return False
        if (job, epoch) not in self._verdicts:
            waiting = self._reported.pop(epoch, [job])
            for other in pruning.judging_order(waiting, self.sweep_id, epoch):
                self._verdicts[(other, epoch)] = self._trials[other].should_prune()
        return self._verdicts.pop((job, epoch), False)

    def pruned(self, job: int) -> None:
        if (trial := self._trials.get(job)) is not None:
            trial.pruned()

    def finished(self, job: int, value: float | None) -> None:
        """The job ended: its objective, or None when it failed."""
        if (trial := self._trials.get(job)) is not None:
            trial.finished(value)
