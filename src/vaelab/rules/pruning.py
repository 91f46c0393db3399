"""Stopping a sweep's bad configurations early: Optuna's pruners, one study per comparable group.

Each run of a sweep with `sweep.pruner` set is a trial of its comparable group's study (the
same loss on the same data and digits, `ranking.COMPARABILITY`): it reports its validation
objective at every epoch's end, and the pruner decides there whether it goes on. The rule is
Optuna's (successive halving, Hyperband, median); the studies live in `sweep.pruner_storage`,
which every process of the sweep reaches, so solo jobs in any launcher and packed members
are judged together. A run keeps its trial (tag `prune.trial`), so a resumed one carries on
reporting where it stopped: rungs left unfinished by a killed sweep are finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.edges.config import Config, Pruner, flatten
from vaelab.rules import ranking
from vaelab.rules.replicates import configuration_of

log = logging.getLogger(__name__)

# The trial's user attribute naming its configuration (`replicates.configuration_of`): a
# rung judges configurations, by the mean of their replicates.
CONFIGURATION_ATTR = "configuration"


@dataclass
class Trial:
    """One run's trial in its group's study."""

    trial: Any  # optuna.Trial
    objective: str

    @property
    def number(self) -> int:
        return self.trial.number

    def report(self, epoch: int, values: dict[str, float]) -> None:
        with warnings.catch_warnings():  # a resumed run reports its last epochs again
            warnings.simplefilter("ignore")
            self.trial.report(values[self.objective], epoch)

    def should_prune(self) -> bool:
        return self.trial.should_prune()

    def finished(self, value: float | None) -> None:
        """The run ended: its objective (None: it failed) tells the study what it gave."""
        import optuna

        study = self.trial.study
        state = optuna.trial.TrialState
        try:
            if value is None:
                study.tell(self.trial, state=state.FAIL)
            else:
                study.tell(self.trial, value)
        except (ValueError, RuntimeError) as error:  # told already (a relaunch)
            log.debug("trial %d: %s", self.trial.number, error)

    def pruned(self) -> None:
        import optuna

        try:
            self.trial.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED)
        except (ValueError, RuntimeError) as error:
            log.debug("trial %d: %s", self.trial.number, error)


def judging_order(jobs: list[int], sweep_id: str, epoch: int) -> list[int]:
    """The order in which runs that reached an epoch together are judged: seeded, random.

    Optuna's successive halving is asynchronous: a trial is judged at a rung against the
    trials judged there before it, and promoted if it is among their best 1/reduction_factor.
    A packed group's members all reach a rung at once; judged in the grid's order, where
    quality trends with position (larger models later), nearly every later member was the
    best so far and was promoted (measured: 26 of 96 pruned at the first rung, where 64 are
    expected). In a random order, as trials arrive in an ordinary search, a third is
    promoted; the seed (sweep and epoch) makes a relaunch judge alike.
    """
    seed = int(hashlib.sha256(f"{sweep_id}/{epoch}".encode()).hexdigest()[:8], 16)
    order = sorted(jobs)
    random.Random(seed).shuffle(order)
    return order


def synchronous(config: Config) -> bool:
    """Whether the sweep's rule judges runs that reach a rung together all at once."""
    return config.sweep.pruner in (Pruner.successive_halving, Pruner.median)


def judged_together(config: Config, epoch: int) -> bool:
    """Whether runs that reach `epoch` together are judged there by the synchronous rule.

    Successive halving at its rungs (pruner_min_epochs times powers of the reduction factor),
    the median rule from pruner_min_epochs on. Hyperband keeps Optuna's own brackets.
    """
    s = config.sweep
    if s.pruner == Pruner.median:
        return epoch >= s.pruner_min_epochs
    if s.pruner != Pruner.successive_halving:
        return False
    rung = s.pruner_min_epochs
    while rung < epoch:
        rung *= s.pruner_reduction_factor
    return rung == epoch


def synchronous_stops(
    pruner: Pruner,
    reduction_factor: int,
    values: Mapping[int, float],
    configuration: Mapping[int, str],
    judged: Iterable[int],
) -> set[int]:
    """Which of the `judged` trials stop at a rung whose values are all known at once.

    `values`: every value recorded at the rung in the comparable group's study (earlier
    launches' included), by trial; `configuration`: each trial's configuration, so that
    replicates are judged by their mean. Successive halving keeps exactly the best
    ⌈n / reduction_factor⌉ of the n configurations; the median rule keeps those whose mean is
    at most the median of the means. A function of the set of values: the order in which runs
    arrived changes nothing (ties go to the smaller configuration key).
    """
    sums: dict[str, list[float]] = {}
    for trial, value in values.items():
        sums.setdefault(configuration.get(trial, f"trial {trial}"), []).append(value)
    means = {key: statistics.fmean(found) for key, found in sums.items()}
    ordered = sorted(means, key=lambda key: (means[key], key))
    if pruner == Pruner.successive_halving:
        kept = set(ordered[: math.ceil(len(ordered) / reduction_factor)])
    else:
        middle = statistics.median(means.values())
        kept = {key for key in ordered if means[key] <= middle}
    return {t for t in judged if configuration.get(t, f"trial {t}") not in kept}


# A run judged alone by the median rule needs this many values recorded at its epoch (its own
# included): the median of fewer says little about it.
MEDIAN_MIN_VALUES = 3


def median_alone(config: Config) -> bool:
    """Whether a run arriving alone is judged by vaelab's median rule, not Optuna's.

    Optuna's MedianPruner compares with COMPLETE trials only, and waits for 5: a parallel
    sweep whose runs move in lockstep completes none before its end, so it never pruned.
    """
    return config.sweep.pruner == Pruner.median


def rung_stops(config: Config, epoch: int, trials: Sequence[Trial], minimum: int = 1) -> set[int]:
    """The numbers of `trials` (one study's, all at `epoch`) that the synchronous rule stops.

    Every value recorded at the epoch counts, whatever its trial's state (running, finished,
    pruned); with fewer than `minimum` values recorded there, nothing stops.
    """
    import optuna

    live = (
        optuna.trial.TrialState.RUNNING,
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
    )
    study = trials[0].trial.study
    recorded = [
        t for t in study.get_trials(deepcopy=False, states=live) if epoch in t.intermediate_values
    ]
    values = {t.number: t.intermediate_values[epoch] for t in recorded}
    configuration = {t.number: t.user_attrs.get(CONFIGURATION_ATTR, "") for t in recorded}
    configuration = {n: key or f"trial {n}" for n, key in configuration.items()}
    if len(values) < minimum:
        return set()
    s = config.sweep
    judged = [t.number for t in trials]
    return synchronous_stops(s.pruner, s.pruner_reduction_factor, values, configuration, judged)


def enabled(config: Config) -> bool:
    return config.sweep.pruner != Pruner.none


def _pruner(config: Config, max_epochs: int | None = None) -> Any:
    """Optuna's pruner for the sweep's settings.

    `max_epochs`: the most epochs any run of the sweep trains (`SweepContext.max_epochs`).
    Hyperband's brackets follow from it, so every trial of a study gets the same layout even
    where `train.epochs` is swept; a run's own epochs stand in only outside a sweep.
    """
    import optuna

    s = config.sweep
    if s.pruner == Pruner.successive_halving:
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=s.pruner_min_epochs, reduction_factor=s.pruner_reduction_factor
        )
    if s.pruner == Pruner.hyperband:
        return optuna.pruners.HyperbandPruner(
            min_resource=s.pruner_min_epochs,
            max_resource=max_epochs or config.train.epochs,
            reduction_factor=s.pruner_reduction_factor,
        )
    # Optuna may prune at step == n_warmup_steps: epochs count from 1, so no run stops before
    # pruner_min_epochs, as conf/pruning says.
    return optuna.pruners.MedianPruner(n_warmup_steps=s.pruner_min_epochs)


def storage(location: str) -> Any:
    """Optuna's storage at `location`: a database URL, or a journal file (a plain path).

    A journal file by default: with Optuna's sqlite storage, creating a study and asking a
    trial for 96 members took 7.1 s here and judging them at one rung 2.4 s (every judgement
    reads every trial); from a journal file, 0.12 s and 0.05 s. Processes on
    one machine share the file through its lock; workers on several machines need a database
    that they all reach (the team's PostgreSQL URL).
    """
    if "://" in location:
        return location
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(location).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(location))


def study_name(sweep_id: str, config: Config) -> str:
    """The study of the sweep's comparable group this run belongs to."""
    flat = flatten(config)
    group = {key: str(flat.get(key)) for key in ranking.COMPARABILITY}
    digest = hashlib.sha256(json.dumps(group, sort_keys=True).encode()).hexdigest()[:10]
    return f"vaelab-prune-{sweep_id}-{digest}"


def trial_for(
    sweep_id: str, config: Config, earlier: int | None, max_epochs: int | None = None
) -> Trial:
    """The run's trial: a new one, or the one a resumed run had (`earlier`, its number)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not a line per study it loads
    with warnings.catch_warnings():  # Optuna marks parts of these as experimental
        warnings.simplefilter("ignore")
        study = optuna.create_study(
            study_name=study_name(sweep_id, config),
            storage=storage(config.sweep.pruner_storage),
            load_if_exists=True,
            direction="minimize",
            pruner=_pruner(config, max_epochs),
        )
        if earlier is not None:
            trials = {t.number: t for t in study.get_trials(deepcopy=False)}
            if earlier in trials:
                return Trial(optuna.trial.Trial(study, trials[earlier]._trial_id), config.objective)
        trial = study.ask()
        trial.set_user_attr(CONFIGURATION_ATTR, configuration_of(config))
        return Trial(trial, config.objective)
