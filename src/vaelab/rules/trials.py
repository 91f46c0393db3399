"""A group's runs as trials of their sweep's pruning studies, and the verdict at each epoch.

Each run of a pruned sweep reports its epochs to its trial. Runs that reach a rung together
(a packed group's members) are judged there at once by the synchronous rule
(`pruning.synchronous_stops`: exactly the best configurations, by their replicates' mean,
whatever the order). A run that arrives alone under the median rule is judged against every
value recorded at its epoch so far (a parallel sweep in lockstep completes no trial that
Optuna's MedianPruner would wait for); under successive halving and Hyperband it gets
Optuna's own rule. The study
is told how each trial ended (pruned, failed, or its objective).
"""

from __future__ import annotations

from collections.abc import Mapping

from vaelab.edges.config import Config
from vaelab.rules import pruning


class Trials:
    """Each job's trial (only jobs of a pruned sweep have one) and their pending verdicts."""

    def __init__(self, sweep_id: str, max_epochs: int | None = None):
        self.sweep_id, self.max_epochs = sweep_id, max_epochs
        self._trials: dict[int, pruning.Trial] = {}
        self._configs: dict[int, Config] = {}
        self._reported: dict[int, list[int]] = {}  # by epoch: jobs reported, not yet judged
        self._verdicts: dict[tuple[int, int], bool] = {}  # (job, epoch): stop it?

    def join(self, job: int, config: Config, earlier: str | None) -> pruning.Trial:
        """The job's trial in its comparable group's study (`earlier`: the one it had)."""
        earlier_number = int(earlier) if earlier else None
        trial = pruning.trial_for(self.sweep_id, config, earlier_number, self.max_epochs)
        self._trials[job] = trial
        self._configs[job] = config
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
            self._judge(self._reported.pop(epoch, [job]), epoch)
        return self._verdicts.pop((job, epoch), False)

    def _judge(self, waiting: list[int], epoch: int) -> None:
        """Verdicts for the jobs that reported `epoch`: together where the rule allows."""
        studies: dict[str, list[int]] = {}
        for job in waiting:
            studies.setdefault(self._trials[job].trial.study.study_name, []).append(job)
        for name, jobs in studies.items():
            config = self._configs[jobs[0]]
            if pruning.synchronous(config) and self._members(name) > 1:
                # A group judged together is judged so at every rung, and only there: Optuna's
                # own rule between rungs would not know the verdicts given here.
                at_rung = pruning.judged_together(config, epoch)
                trials = [self._trials[j] for j in jobs]
                stops = pruning.rung_stops(config, epoch, trials) if at_rung else set()
                for j in jobs:
                    self._verdicts[(j, epoch)] = self._trials[j].number in stops
                continue
            if pruning.median_alone(config):  # a run that arrived alone: the values so far
                at_epoch = pruning.judged_together(config, epoch)
                for j in jobs:
                    alone = [self._trials[j]]
                    stops = at_epoch and pruning.rung_stops(
                        config, epoch, alone, pruning.MEDIAN_MIN_VALUES
                    )
                    self._verdicts[(j, epoch)] = bool(stops)
                continue
            for other in pruning.judging_order(jobs, self.sweep_id, epoch):  # Hyperband, alone
                self._verdicts[(other, epoch)] = self._trials[other].should_prune()

    def _members(self, study: str) -> int:
        """How many of this group's jobs are trials of `study` (together: judged together)."""
        return sum(t.trial.study.study_name == study for t in self._trials.values())

    def pruned(self, job: int) -> None:
        if (trial := self._trials.get(job)) is not None:
            trial.pruned()

    def finished(self, job: int, value: float | None) -> None:
        """The job ended: its objective, or None when it failed."""
        if (trial := self._trials.get(job)) is not None:
            trial.finished(value)
