"""The Optuna sweeper keeps every worker busy: a new trial is asked as soon as one ends.

The real sweeper, built by Hydra from the real config (sweep=optuna), its study in a real
sqlite file under tmp_path; only the launcher is a stand-in that records when each job starts
and ends, so that order is asserted on, never wall time. A real parallel sweep: the last test.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext

from hydra_plugins.vaelab_optuna_sweeper import slots
from tests.conftest import CONF_DIR, TINY, isolated
from vaelab.rules.ranking import Pruned

HELD_AT_MOST_S = 30  # a held job gives up after this: a deadlock guard, never an assertion
TrialState = optuna.trial.TrialState


def param(overrides: Sequence[str], key: str) -> str:
    return next(o.split("=", 1)[1] for o in overrides if o.startswith(f"{key}="))


def latent_plus_seed(number: int, overrides: Sequence[str]) -> float:
    """A job's value, from its overrides: the trial's latent size, plus its seed if it has one."""
    seed = next((float(o.split("=")[1]) for o in overrides if o.startswith("seed=")), 0.0)
    return float(param(overrides, "model.latent_dim")) + seed


class Workers(Launcher):
    """A launcher that runs jobs elsewhere, recorded: each job's start and end, in order.

    A held job ends only once `hold[job]()` is true (polling, so that an interrupt reaches
    it as it reaches joblib's wait); the job in `interrupt_at` presses Ctrl-C as it starts.
    """

    def __init__(self, value=latent_plus_seed, hold=None, interrupt_at=None):
        self.value: Callable[[int, Sequence[str]], float] = value
        self.hold: dict[int, Callable[[], bool]] = hold or {}
        self.interrupt_at = interrupt_at
        self.events: list[tuple[str, int]] = []
        self.launches: list[list[int]] = []  # the job numbers of each launch
        self.in_flight, self.most_in_flight = 0, 0
        self.lock = threading.Lock()

    def setup(self, **kwargs) -> None:
        pass

    def record(self, what: str, job: int) -> None:
        with self.lock:
            self.events.append((what, job))

    def started(self, job: int) -> bool:
        return ("start", job) in self.events

    def launch(self, job_overrides, initial_job_idx) -> Sequence[JobReturn]:
        numbers = [initial_job_idx + n for n in range(len(job_overrides))]
        with self.lock:
            self.launches.append(numbers)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return [self.job(n, list(o)) for n, o in zip(numbers, job_overrides, strict=True)]
        finally:
            with self.lock:
                self.in_flight -= 1

    def job(self, number: int, overrides: list[str]) -> JobReturn:
        self.record("start", number)
        try:
            if number == self.interrupt_at:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the main thread gets it
            held = self.hold.get(number, lambda: number != self.interrupt_at)
            deadline = time.monotonic() + HELD_AT_MOST_S
            while not held() and time.monotonic() < deadline:
                time.sleep(0.01)
        except KeyboardInterrupt:
            self.record("interrupted", number)
            raise
        self.record("end", number)
        value = self.value(number, overrides)
        return JobReturn(overrides, status=JobStatus.COMPLETED, _return_value=value)


@contextmanager
def sweeper_with(
    launcher: Launcher, tmp_path, n_trials: int, *overrides: str
) -> Iterator[Callable]:
    """The real OptunaSweeper's `sweep`, as Hydra builds and sets it up for `--multirun
    sweep=optuna` with two workers, its study under tmp_path, with `launcher` in place of the
    configured one."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose(
            "config",
            overrides=["sweep=optuna", *isolated(tmp_path), f"hydra.sweep.dir={tmp_path}/sweep",
                       f"hydra.sweeper.n_trials={n_trials}", "hydra.sweeper.n_jobs=2", *overrides],
            return_hydra_config=True,
        )  # fmt: skip
        for made_by_the_sweep in ("sweep", "mlruns"):  # its callback and launcher make these
            (tmp_path / made_by_the_sweep).mkdir(parents=True, exist_ok=True)
        context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=None)
        sweeper = Plugins.instance().instantiate_sweeper(
            config=config, hydra_context=context, task_function=lambda cfg: None
        )  # setup included: the configured (basic) launcher, replaced here
        sweeper.launcher = launcher
        task = list(config.hydra.overrides.task)  # what Hydra's multirun hands the sweeper
        yield lambda *arguments: sweeper.sweep([*task, *arguments])


def study_in(tmp_path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def test_a_new_trial_starts_as_soon_as_one_ends_not_when_the_batch_ends(tmp_path):
    # Two workers. Job 0 (trial 0) is long: it ends only once job 3 has started. Asked in
    # batches of two, job 2 would wait for job 0: a worker idles.
    workers = Workers(hold={0: lambda: workers.started(3)})
    with sweeper_with(workers, tmp_path, 5) as sweep:
        sweep()
    events = workers.events
    assert events.index(("end", 1)) < events.index(("start", 2)) < events.index(("end", 2))
    assert events.index(("end", 2)) < events.index(("start", 3)) < events.index(("end", 0))
    assert workers.most_in_flight == 2  # never more than n_jobs launches at once
    # One trial per launch, each with the job number of its trial: unique, so are job dirs.
    study = study_in(tmp_path)
    assert sorted(workers.launches) == [[t.number] for t in study.trials]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    for trial in study.trials:  # each trial was told its own launch's value
        assert trial.value == trial.params["model.latent_dim"]


def test_batch_mode_when_asked_and_for_launchers_that_need_whole_batches(tmp_path):
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    from hydra_plugins.vaelab_packed_launcher.packed_launcher import PackedLauncher

    class Packed(PackedLauncher, Workers):  # the packed launcher's class, recorded
        __init__, launch = Workers.__init__, Workers.launch

    for launcher in (BasicLauncher(), Packed()):
        assert slots.takes_whole_batches(launcher)
    assert not slots.takes_whole_batches(Workers())
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    packed = Packed()
    with sweeper_with(packed, tmp_path / "a", 3) as sweep:
        sweep("seed=1,2")
    # Whole batches of two trials, each trial's two seeds side by side: a packed group.
    assert packed.launches == [[0, 1, 2, 3], [4, 5]]
    asked = Workers()
    with sweeper_with(asked, tmp_path / "b", 3, "hydra.sweeper.async_trials=false") as sweep:
        sweep()
    assert asked.launches == [[0, 1], [2]]


def test_a_trials_seeds_are_one_launch_valued_by_their_mean(tmp_path):
    workers = Workers(hold={0: lambda: workers.started(4)})
    with sweeper_with(workers, tmp_path, 3) as sweep:
        sweep("seed=1,2")  # what `sweep.seeds=2` becomes
    # Trial n is jobs 2n and 2n+1; trial 2 started while trial 0 still trained.
    assert sorted(workers.launches) == [[0, 1], [2, 3], [4, 5]]
    assert workers.events.index(("start", 4)) < workers.events.index(("end", 0))
    for trial in study_in(tmp_path).trials:
        assert "seed" not in trial.params
        assert trial.value == trial.params["model.latent_dim"] + 1.5  # the mean of seeds 1, 2


def test_failed_and_pruned_trials_are_told_so_and_a_relaunch_runs_only_whats_missing(tmp_path):
    def value(number, overrides):
        return {1: float("inf"), 2: Pruned(1)}.get(number, 1.0)

    first = Workers(value)
    with sweeper_with(first, tmp_path, 3) as sweep:
        sweep()
    states = [t.state for t in study_in(tmp_path).trials]
    # The failed trial does not count: one more is asked in its place.
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED, TrialState.COMPLETE]
    more = Workers(value)
    with sweeper_with(more, tmp_path, 5) as sweep:
        sweep()
    assert sorted(more.launches) == [[4], [5]]  # two more trials, numbered on from the study's
    assert len(study_in(tmp_path).get_trials(states=[TrialState.COMPLETE])) == 4
    assert (tmp_path / "sweep" / "optimization_results.yaml").exists()


def test_ctrl_c_stops_the_launches_in_flight_and_leaves_their_trials_to_the_stale_rule(tmp_path):
    # Job 2 presses Ctrl-C as it starts, while job 0 still trains in the other slot.
    workers = Workers(hold={0: lambda: False}, interrupt_at=2)
    with (
        sweeper_with(workers, tmp_path, 4) as sweep,
        pytest.raises(KeyboardInterrupt),
    ):
        sweep()
    deadline = time.monotonic() + HELD_AT_MOST_S
    while len([e for e in workers.events if e[0] == "interrupted"]) < 2:
        assert time.monotonic() < deadline, workers.events
        time.sleep(0.01)
    # Both launches in flight were interrupted, as Ctrl-C interrupts a launch in the main
    # thread; nothing more was asked. The finished trial was told; the two interrupted stay
    # RUNNING, failed by the stale rule when the sweep is relaunched (as in batch mode).
    assert {("interrupted", 0), ("interrupted", 2)} <= set(workers.events)
    assert ("end", 0) not in workers.events and not workers.started(3)
    states = {t.number: t.state for t in study_in(tmp_path).trials}
    assert states == {0: TrialState.RUNNING, 1: TrialState.COMPLETE, 2: TrialState.RUNNING}


def test_a_launcher_that_starts_a_runtime_starts_it_once_before_the_slots(tmp_path):
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher

    class Ray(RayLauncher, Workers):  # hydra-ray-launcher's class, recorded
        __init__, launch = Workers.__init__, Workers.launch

    ray = Ray()
    with sweeper_with(ray, tmp_path, 3) as sweep:
        sweep()
    # An empty launch first (ray.init, once), then a launch per trial.
    assert ray.launches[0] == [] and sorted(ray.launches[1:]) == [[0], [1], [2]]


LAUNCHERS = {
    "parallel": ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"],
    "ray": ["hydra/launcher=ray_cluster", "+hydra.launcher.ray.init.num_cpus=2"],
}


@pytest.mark.parametrize(
    "launcher",
    [pytest.param("parallel", marks=pytest.mark.long), pytest.param("ray", marks=pytest.mark.slow)],
)
def test_a_real_optuna_sweep_asks_as_trials_end(run_app, tmp_path, client, launcher):
    if launcher == "ray":
        pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    result = run_app(
        "train.py", "--multirun", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2", *LAUNCHERS[launcher],
        "data.train_limit=2048", "train.epochs=choice(1,20)",  # trial 0: 1 epoch, trial 1: 20
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = client.get_experiment_by_name("vaelab").experiment_id
    runs = client.search_runs([experiment], "tags.`sweep.role` = 'child'")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert [t.state for t in study_in(tmp_path).trials] == [TrialState.COMPLETE] * 4
    # One job directory per trial, named by the trial's number.
    (sweep_dir,) = (tmp_path / "outputs" / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    # A run started after another ended, while a third that had started before that end
    # still trained. In batch mode every run starts after the whole previous batch ended.
    spans = [(r.info.start_time, r.info.end_time) for r in runs]
    assert any(
        long_start < short_end < start < long_end
        for start, _ in spans
        for _, short_end in spans
        for long_start, long_end in spans
    ), spans


@pytest.mark.long
def test_ctrl_c_ends_a_real_parallel_sweep_at_once_as_in_batch_mode(tmp_path, client):
    from tests.faults.test_interrupt import interrupt_process

    # The sweep's process alone gets SIGINT (`kill -INT`; a terminal's Ctrl-C reaches the
    # workers too) while both workers train 400-epoch runs: it ends within the helper's
    # minute instead of waiting for them, and leaves what batch mode leaves.
    code, stderr, _ = interrupt_process(
        tmp_path, signal.SIGINT, "--multirun", *TINY, "data.train_limit=2048",
        "train.epochs=400", "sweep=optuna", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
        "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
    )  # fmt: skip
    assert code == 130, stderr[-3000:]
    assert [x for x in stderr.splitlines() if x.startswith("Interrupted (Ctrl-C)")], stderr
    # The runs in flight stay RUNNING (their workers were stopped: the next launch resumes
    # them once their heartbeat is stale), their trials too (failed as stale, asked again).
    experiment = client.get_experiment_by_name("vaelab").experiment_id
    runs = client.search_runs([experiment], "tags.`sweep.role` = 'child'")
    assert [r.info.status for r in runs] == ["RUNNING", "RUNNING"]
    assert [t.state for t in study_in(tmp_path).trials] == [TrialState.RUNNING] * 2
