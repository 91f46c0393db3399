"""A Hydra sweeper on current Optuna: TPE over Hydra's sweep syntax, resumable.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, and its sqlite study
storage needs SQLAlchemy 1.4, which conflicts with MLflow, so its studies cannot be resumed.
This one keeps the study in a sqlite file named by the sweep's id: relaunching the same
sweep loads the study and runs only the trials still missing. Jobs go through whatever
launcher is configured, `n_jobs` trials at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

# Hydra imports every plugin module at every command (`--help` included): Optuna and vaelab's
# sweep code are imported where they are used, not here.
if TYPE_CHECKING:
    import optuna

from hydra_plugins.vaelab_optuna_sweeper.schema import OptunaSweeperConf  # noqa: F401 - registers it

log = logging.getLogger(__name__)


def check_settings(n_trials: int, n_jobs: int) -> None:
    """Refuse what types allow but a search cannot use, naming the key and the fix."""
    from vaelab.vocab.errors import ConfigError

    for key, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if value < 1:
            raise ConfigError(f"hydra.sweeper.{key}={value} is invalid: expected an integer >= 1")


def distribution_for(override: Override) -> optuna.distributions.BaseDistribution:
    """Hydra's choice(...), range(...) and [tag(log,)] interval(...) as Optuna distributions."""
    import optuna

    sweep = override._value  # noqa: SLF001 - the parsed sweep object
    log_scale = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return optuna.distributions.CategoricalDistribution(sweep.list)
    if isinstance(sweep, RangeSweep):
        values = list(sweep.range())
        if all(isinstance(v, int) for v in values):
            return optuna.distributions.IntDistribution(values[0], values[-1], step=sweep.step)
        return optuna.distributions.CategoricalDistribution(values)
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if isinstance(low, int) and isinstance(high, int) and not log_scale:
            return optuna.distributions.IntDistribution(low, high)
        return optuna.distributions.FloatDistribution(float(low), float(high), log=log_scale)
    raise ValueError(
        f"{override.input_line}: use choice(...), range(...) or interval(...) in an Optuna "
        "sweep; comma lists become choice()."
    )


def replicate_seeds(space: dict[str, Any]) -> list[list[str]]:
    """The seed overrides each trial runs with, taken out of the search space.

    A `seed=1,2,3` axis (what `sweep.seeds=3` becomes) makes replicates, not a parameter to
    search: each trial, one configuration, runs once per seed. Without one: a single run.
    """
    from vaelab.rules.replicates import REPLICATE_KEYS

    seeds: list[list[str]] = [[]]
    for key in REPLICATE_KEYS:
        if (axis := space.pop(key, None)) is not None:
            choices = getattr(axis, "choices", None)
            if choices is None:
                raise ValueError(
                    f"{key}: give replicate seeds as a list (sweep.seeds=K, {key}=1,2,3)"
                )
            seeds = [[f"{key}={value}"] for value in choices]
    return seeds


def trial_outcome(values: list[Any]) -> tuple[str, float | None]:
    """A configuration's trial from its replicates' returns: the mean over its seeds.

    PRUNED when the sweep's pruner stopped any replicate (a trial spent), FAIL when one failed
    or returned no finite value (a collapsed run returns infinity).
    """
    from vaelab.rules.ranking import Pruned

    if any(isinstance(v, Pruned) for v in values):
        return "PRUNED", None
    if any(v is None or not math.isfinite(v) for v in values):
        return "FAIL", None
    return "COMPLETE", sum(values) / len(values)


class OptunaSweeper(Sweeper):
    """Minimises the task function's return value (the config's `objective`)."""

    def __init__(self, n_trials: int, n_jobs: int, seed: int, storage: str, params: dict[str, str]):
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.storage, self.params = storage, dict(params or {})
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from vaelab.orchestration.sweep import refused
        from vaelab.vocab.errors import UserError

        self.config, self.hydra_context = config, hydra_context
        try:
            check_settings(self.n_trials, self.n_jobs)
        except UserError as error:  # one line, the parent FAILED: nothing trains
            raise refused(config, error, "the Optuna sweeper refused the sweep") from None
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _search_space(
        self, arguments: list[str]
    ) -> tuple[dict[str, optuna.distributions.BaseDistribution], list[str]]:
        lines = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        space, fixed = {}, []
        for override in parser.parse_overrides(lines):
            if override.is_sweep_override():
                space[override.get_key_element()] = distribution_for(override)
            else:
                fixed.append(override.input_line)
        return space, fixed

    def _study(self) -> optuna.Study:
        """The sweep's study, its trials' liveness judged as the runs' (`tracking.*_s`).

        A RUNNING trial is failed only once its heartbeat is older than the grace period:
        one asked by a sweep that died will never report, but one asked by another live
        process launching the same sweep will (Optuna's own heartbeat and stale-trial rule).
        """
        import optuna

        from vaelab.orchestration.sweep import sweep_id_for

        name = f"{self.config.experiment_name}-{sweep_id_for(self.config)}"
        tracking = self.config.tracking
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._storage = optuna.storages.RDBStorage(
                self.storage,
                heartbeat_interval=max(1, round(tracking.heartbeat_s)),
                grace_period=max(2, round(tracking.stale_after_s)),
            )
            study = optuna.create_study(
                study_name=name,
                storage=self._storage,
                load_if_exists=True,
                direction="minimize",
                sampler=optuna.samplers.TPESampler(seed=self.seed),
            )
            optuna.storages.fail_stale_trials(study)
        return study

    @contextlib.contextmanager
    def _alive(self, trials: list[optuna.Trial]) -> Iterator[None]:
        """Record the trials' heartbeats while the launcher trains them.

        Optuna beats only inside `study.optimize`; with ask and tell, the sweeper does it.
        """
        done = threading.Event()

        def beat() -> None:
            while True:
                for trial in trials:
                    with contextlib.suppress(Exception):  # a locked store: the next beat
                        self._storage.record_heartbeat(trial._trial_id)  # noqa: SLF001
                if done.wait(self._storage.heartbeat_interval):
                    return

        thread = threading.Thread(target=beat, name="vaelab-optuna-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        space, fixed = self._search_space(arguments)
        seeds = replicate_seeds(space)
        study = self._study()
        spent = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        done = len(study.get_trials(states=spent))
        log.info("Optuna study %s: %d of %d trials done", study.study_name, done, self.n_trials)
        job_idx = len(study.trials) * len(seeds)
        returns = []
        while done < self.n_trials:
            with warnings.catch_warnings():  # ask and tell with heartbeats: `_alive` beats
                warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            # A trial is a configuration: its replicates (seeds) go to the launcher together,
            # so a packed launcher trains them as lanes of one program.
            batch = [
                fixed + [f"{k}={v}" for k, v in t.params.items()] + seed
                for t in trials
                for seed in seeds
            ]
            self.validate_batch_is_legal(batch)
            with self._alive(trials):
                results = self.launcher.launch(batch, initial_job_idx=job_idx)
            for number, trial in enumerate(trials):
                replicates = results[number * len(seeds) : (number + 1) * len(seeds)]
                state, value = trial_outcome([r.return_value for r in replicates])
                if state == "COMPLETE":
                    study.tell(trial, value)
                else:
                    study.tell(trial, state=getattr(optuna.trial.TrialState, state))
                done += state != "FAIL"
            job_idx += len(batch)
            returns.append(results)
            if (
                all(r.return_value is None or not math.isfinite(r.return_value) for r in results)
                and len(study.trials) >= 3 * self.n_trials
            ):
                break  # every trial fails: stop rather than loop forever
        if done:
            best = study.best_trial
            log.info(
                "Best trial %d: %s = %.4f with %s",
                best.number,
                self.config.objective,
                best.value,
                best.params,
            )
            OmegaConf.save(
                OmegaConf.create({"best_value": best.value, "best_params": best.params}),
                f"{self.config.hydra.sweep.dir}/optimization_results.yaml",
            )
        return returns
