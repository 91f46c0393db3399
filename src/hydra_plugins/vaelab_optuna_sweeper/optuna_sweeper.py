"""A Hydra sweeper on current Optuna: TPE over Hydra's sweep syntax, resumable.

Why not hydra-optuna-sweeper: its last release (1.3.0) pins optuna < 3, and its sqlite study
storage needs SQLAlchemy 1.4, which conflicts with MLflow, so its studies cannot be resumed.
This one keeps the study in a sqlite file named by the sweep's id: relaunching the same
sweep loads the study and runs only the trials still missing. Jobs go through whatever
launcher is configured, `n_jobs` trials in flight: with a launcher that runs jobs elsewhere
(parallel, Ray, Slurm) a new trial is asked as soon as one ends (`slots`), so no worker idles
while a batch's slowest trial trains; the basic and packed launchers get batches of `n_jobs`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.vaelab_basic_sweeper.basic_sweeper import skips_composition

# Hydra imports every plugin module at every command (`--help` included): Optuna and vaelab's
# sweep code are imported where they are used, not here.
if TYPE_CHECKING:
    import optuna
    from hydra.core.utils import JobReturn

from hydra_plugins.vaelab_optuna_sweeper.schema import OptunaSweeperConf  # noqa: F401 - registers it
from hydra_plugins.vaelab_optuna_sweeper.slots import Slots, start_runtime, takes_whole_batches

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

    def __init__(
        self,
        n_trials: int,
        n_jobs: int,
        seed: int,
        storage: str,
        params: dict[str, str],
        async_trials: bool,
    ):
        self.n_trials, self.n_jobs, self.seed = n_trials, n_jobs, seed
        self.async_trials = async_trials
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
        space, fixed = self._search_space(arguments)
        seeds = replicate_seeds(space)
        search = Search(self._study(), space, fixed, seeds)
        done = search.done()
        log.info("Optuna study %s: %d of %d trials done", search.name, done, self.n_trials)
        if self.async_trials and not takes_whole_batches(self.launcher):
            returns = self._sweep_as_trials_end(search, done)
        else:
            returns = self._sweep_in_batches(search, done)
        if search.done():
            self._save_best(search.study)
        return returns

    def _sweep_in_batches(self, search: Search, done: int) -> list[Sequence[JobReturn]]:
        """`n_jobs` trials per launch; the next batch is asked once the whole batch has ended.

        A trial's replicates (seeds) go to the launcher together, so a packed launcher trains
        them as lanes of one program.
        """
        returns = []
        while done < self.n_trials:
            trials = [search.ask() for _ in range(min(self.n_jobs, self.n_trials - done))]
            results = self._launch(trials, self._jobs(search, trials), search.first_job(trials[0]))
            states = search.tell_each(trials, results)
            done += sum(state != "FAIL" for state in states)
            returns.append(results)
            if "COMPLETE" not in states and search.hopeless(self.n_trials):
                break  # every trial fails: stop rather than loop forever
        return returns

    def _sweep_as_trials_end(self, search: Search, done: int) -> list[Sequence[JobReturn]]:
        """`n_jobs` launches of one trial each in flight; a new trial is asked as one ends.

        Only this thread asks and tells (the study is never shared between threads); each
        launch runs in a slot's thread, its trial's heartbeat beside it. A trial's replicates
        are one launch, its value their mean, as in batches.
        """
        returns, hopeless = [], False
        slots = Slots(self.n_jobs)
        if done < self.n_trials:
            start_runtime(self.launcher)
        try:
            while True:
                while not hopeless and slots.free() and done + len(slots) < self.n_trials:
                    trial = search.ask()
                    jobs = self._jobs(search, [trial])
                    launch = functools.partial(self._launch, [trial], jobs, search.first_job(trial))
                    slots.start(trial, launch)
                if not len(slots):
                    return returns
                trial, results = slots.next_ended()
                state = search.tell(trial, results)
                done += state != "FAIL"
                returns.append(results)
                # Every trial fails: stop asking rather than loop forever.
                hopeless = hopeless or (state != "COMPLETE" and search.hopeless(self.n_trials))
        except BaseException:  # Ctrl-C, or a launch's error: the launches in flight stop too
            slots.interrupt()
            raise

    def _jobs(self, search: Search, trials: list[optuna.Trial]) -> list[list[str]]:
        """The trials' jobs, each composed first: a bad one fails before anything trains.

        Here, unless the launcher composes and checks the whole batch itself before it starts
        any (`skips_composition`).
        """
        jobs = search.jobs(trials)
        if not skips_composition(self.launcher):
            self.validate_batch_is_legal(jobs)
        return jobs

    def _launch(
        self, trials: list[optuna.Trial], jobs: list[list[str]], first_job: int
    ) -> Sequence[JobReturn]:
        """One launch of the trials' jobs, their heartbeats recorded while it runs."""
        with self._alive(trials):
            return self.launcher.launch(jobs, initial_job_idx=first_job)

    def _save_best(self, study: optuna.Study) -> None:
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


class Search:
    """A study and the jobs its trials become: ask, a trial's job overrides, tell.

    A plain class: Hydra imports plugin modules outside `sys.modules`, where a dataclass
    cannot resolve its annotations.
    """

    def __init__(
        self,
        study: optuna.Study,
        space: dict[str, optuna.distributions.BaseDistribution],
        fixed: list[str],
        seeds: list[list[str]],
    ):
        self.study, self.space = study, space
        self.fixed = fixed  # the overrides every job gets
        self.seeds = seeds  # each replicate's seed override: a trial is this many jobs

    @property
    def name(self) -> str:
        return self.study.study_name

    def done(self) -> int:
        """Trials spent: COMPLETE or PRUNED (a FAILED one is asked again)."""
        import optuna

        spent = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        return len(self.study.get_trials(deepcopy=False, states=spent))

    def ask(self) -> optuna.Trial:
        with warnings.catch_warnings():  # ask and tell with heartbeats: `_alive` beats
            warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
            return self.study.ask(self.space)

    def jobs(self, trials: list[optuna.Trial]) -> list[list[str]]:
        """Each trial's replicates, in order: one job per seed."""
        return [
            self.fixed + [f"{k}={v}" for k, v in trial.params.items()] + seed
            for trial in trials
            for seed in self.seeds
        ]

    def first_job(self, trial: optuna.Trial) -> int:
        """The Hydra job number of the trial's first replicate: its number times the seeds.

        Trial numbers are unique in a study, so job numbers (and the job directories named
        by them) are unique however launches interleave, across relaunches too.
        """
        return trial.number * len(self.seeds)

    def tell(self, trial: optuna.Trial, replicates: Sequence[JobReturn]) -> str:
        """Tell the study the trial's outcome from its replicates' returns; the state told."""
        import optuna

        state, value = trial_outcome([r.return_value for r in replicates])
        if state == "COMPLETE":
            self.study.tell(trial, value)
        else:
            self.study.tell(trial, state=getattr(optuna.trial.TrialState, state))
        return state

    def tell_each(self, trials: list[optuna.Trial], results: Sequence[JobReturn]) -> list[str]:
        """Tell each trial of a batch its outcome, from its replicates' share of the results."""
        size = len(self.seeds)
        return [self.tell(t, results[n * size : (n + 1) * size]) for n, t in enumerate(trials)]

    def hopeless(self, n_trials: int) -> bool:
        """Three times the trials asked for, and still not done: every trial fails."""
        return len(self.study.trials) >= 3 * n_trials
