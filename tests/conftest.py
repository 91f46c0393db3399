"""Tests compose the real config (conf/) with Hydra's compose API, shrunk to the smoke
experiment, and point the run store and outputs at the test's own tmp_path."""

from __future__ import annotations

import gc
import io
import logging
import math
import os
import runpy
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from vaelab.edges import cli, tracking
from vaelab.edges.config import register_configs
from vaelab.edges.tracking.heartbeats import HEARTBEATS
from vaelab.vocab import metrics

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# The smallest real run: a few hundred digits, one epoch, no model artifact.
TINY = [
    "experiment=smoke",
    "data.train_limit=256",
    "data.validation_size=128",
    "data.test_limit=128",
    "tracking.log_model=false",
]

register_configs()
# pytest captures fd 2 itself: the pipelines' filter of native start-up lines stays off here
# (tests/test_cli.py turns it on for the subprocess that checks the console).
os.environ["VAELAB_RAW_STDERR"] = "1"

# One suite, two sessions (see `make test`): tests/jax needs Keras on JAX (packed sweeps, the
# JAX trainers); every other test runs on the default backend, TensorFlow.
ON_JAX = os.environ.get("KERAS_BACKEND") == "jax"
collect_ignore_glob = ["test_*.py", "faults/*"] if ON_JAX else ["jax/*"]


@pytest.fixture(autouse=True)
def process_state_left_by_a_test():
    """What one test would leave in this process for the next, undone after it.

    Undone: the heartbeats of runs the test left open (the heartbeat thread would go on
    writing into its store, and a later test's liveness checks would see them), and
    `gc.freeze` when the test froze (a process's first run freezes what lives then: each test
    starts unfrozen, as a process does, instead of keeping the first test's objects forever).
    Kept on purpose: the models, IW estimators and compiled packed programs that later runs
    reuse (`engines.solo._MODELS`, `engines.evaluation._ESTIMATORS`,
    `engines.packed.program.program_for`'s cache). A reused model gives exactly a fresh one's
    numbers (tests/test_run.py); building anew costs ~4 s per training test.
    """
    open_before = set(HEARTBEATS._runs)  # no public listing: the runs it renews
    frozen_before = gc.get_freeze_count()
    yield
    for run_id in set(HEARTBEATS._runs) - open_before:
        HEARTBEATS.remove(run_id)
    if not frozen_before and gc.get_freeze_count():
        gc.unfreeze()


def compose_config(*overrides: str, name: str = "config") -> DictConfig:
    """The real composition, as the pipeline does it (global Hydra state cleared after)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a test's own server (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def listening(host: str, port: int) -> bool:
    """Whether something accepts connections at `host`:`port` (a test's server is up)."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


def isolated(tmp_path: Path) -> list[str]:
    """Overrides that send the run store and Hydra's outputs under tmp_path."""
    return [f"paths.store_dir={tmp_path}/mlruns", f"paths.output_dir={tmp_path}/outputs"]


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


@pytest.fixture
def smoke_cfg(tmp_path: Path, store_uri: str) -> Callable[..., DictConfig]:
    """Compose the smoke experiment writing only under tmp_path, plus any overrides."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("experiment=smoke", *isolated(tmp_path), *overrides)

    return make


@pytest.fixture
def client(store_uri: str) -> MlflowClient:
    return MlflowClient(store_uri)


REPO = CONF_DIR.parent


@pytest.fixture
def run_pipeline(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run a pipeline script as a user would, its store and outputs under tmp_path."""

    def run(script: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
        command = [sys.executable, str(REPO / "pipelines" / script), *args, *isolated(tmp_path)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
            env=env,
            check=False,
        )

    return run


@dataclass(frozen=True)
class AppResult:
    returncode: int
    stdout: str
    stderr: str


def _leave_by_raising(code: int) -> None:
    """The pipelines' `cli.leave`, without ending the test process."""
    raise SystemExit(code)


@pytest.fixture
def run_app(tmp_path: Path) -> Callable[..., AppResult]:
    """Run a pipeline's real Hydra app in this process, as its command line would, with its
    store and outputs under tmp_path: the same composition, callbacks, launchers and exit
    code, without paying a new interpreter's framework start-up for every sweep."""
    return app_in(tmp_path)


def app_in(tmp_path: Path) -> Callable[..., AppResult]:
    """`run_app` for any directory (a module's shared store, say)."""

    def run(script: str, *args: str) -> AppResult:
        path = str(REPO / "pipelines" / script)
        stdout, stderr = io.StringIO(), io.StringIO()
        # Hydra would reconfigure logging for the whole process (closing pytest's handlers);
        # instead its console output is collected by one handler, as the CLI would print it.
        quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]
        console = logging.StreamHandler(stderr)
        console.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
        root = logging.getLogger()
        level = root.level
        root.addHandler(console)
        root.setLevel(logging.INFO)
        code = 0
        try:
            with (
                mock.patch.object(sys, "argv", [path, *args, *quiet, *isolated(tmp_path)]),
                mock.patch.object(cli, "leave", _leave_by_raising),
                redirect_stdout(stdout),
                redirect_stderr(stderr),
            ):
                try:
                    runpy.run_path(path, run_name="__main__")
                except SystemExit as exit:
                    code = cli.exit_code(exit)
                except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) ends the command as it would
                    code = 130
        finally:
            root.removeHandler(console)
            root.setLevel(level)
        return AppResult(code, stdout.getvalue(), stderr.getvalue())

    return run


class Collected:
    """The events an engine reports (engines.base.Events), kept for a test to read."""

    def __init__(self, stop_at: dict[int, int] | None = None):
        self.epochs: dict[int, list[dict[str, float]]] = {}
        self.failures: dict[int, tuple[int, BaseException]] = {}
        self.outcomes: dict = {}
        self.checkpoints: dict[int, list] = {}  # job -> its checkpoints, in order
        self.stopped: dict[int, int] = {}  # job -> the epoch it stopped at
        self.trained: dict[int, dict] = {}  # job -> its history when its training ended
        self.stop_at = stop_at or {}  # job -> the epoch it is told to stop at

    def epoch_ended(self, job, epoch, values):
        self.epochs.setdefault(job, []).append(dict(values))

    def saved(self, job, checkpoint):
        self.checkpoints.setdefault(job, []).append(checkpoint)

    def job_stopped(self, job, epoch):
        self.stopped[job] = epoch

    def job_failed(self, job, epoch, error):
        self.failures[job] = (epoch, error)

    def job_trained(self, job, history):
        self.trained[job] = {name: list(values) for name, values in history.items()}

    def job_finished(self, job, outcome):
        self.outcomes[job] = outcome

    def should_stop(self, job, epoch):
        return self.stop_at.get(job) == epoch


def count_permutations(monkeypatch: pytest.MonkeyPatch, limit: int) -> list[int]:
    """Count numpy's permutations drawn from now on (`[count]`); the one past `limit` fails.

    Orders built up front for `train.epochs=10**9` would draw for minutes before failing on
    memory: counted, they fail at once, and a lazy engine shows it drew only what it trained.
    """
    drawn = [0]
    real = np.random.default_rng

    class Counted:
        def __init__(self, *args, **kwargs):
            self._rng = real(*args, **kwargs)

        def permutation(self, *args, **kwargs):
            drawn[0] += 1
            assert drawn[0] <= limit, f"more than {limit} epoch orders drawn: built up front?"
            return self._rng.permutation(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._rng, name)

    monkeypatch.setattr(np.random, "default_rng", Counted)
    return drawn


def store_for(tmp_path: Path) -> tracking.Store:
    """The store `isolated(tmp_path)` sends runs to, opened as a reader of it would."""
    return tracking.open_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "vaelab", None)


def signal_at_epoch(monkeypatch, signum: int, epoch: int, epochs: int | None = None) -> None:
    """Deliver a real signal to this process when a run of `epochs` epochs (any run, if
    None) reports its `epoch`-th epoch: the run's own handlers see it mid-training."""
    # Here, not at the top: only the tests that interrupt a run pay for the recorder's imports.
    from vaelab.rules.recorder import Recorder

    real = Recorder.epoch_ended

    def epoch_ended(self, job, step, values):
        real(self, job, step, values)
        wanted = epochs is None or self.planned[job].config.train.epochs == epochs
        if step == epoch and wanted:
            os.kill(os.getpid(), signum)
            time.sleep(1)  # the handler raises before this returns

    monkeypatch.setattr(Recorder, "epoch_ended", epoch_ended)


@pytest.fixture
def keep_dir(tmp_path: Path) -> Path:
    """Where a test leaves what a person may want to look at (a screenshot, a terminal's text):
    $VAELAB_TEST_KEEP (`make e2e` sets it to outputs/e2e), else the test's own tmp_path, so
    that no test writes into the repository unless asked to."""
    kept = Path(os.environ.get("VAELAB_TEST_KEEP") or tmp_path / "kept")
    kept.mkdir(parents=True, exist_ok=True)
    return kept


@contextmanager
def mlflow_server(*arguments: str, cwd: Path | None = None) -> Iterator[str]:
    """A real `mlflow server` on a free loopback port with `arguments` (its store, artifacts):
    its address once /health answers; stopped after."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", *arguments]
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# What a resumed run is compared on with its uninterrupted twin, beside every epoch's numbers.
RESUMED_FINAL = (*metrics.TEST_METRICS, metrics.VAL_ACTIVE_UNITS)


def run_numbers(store: tracking.Store, run: tracking.RunRecord, epochs: int) -> dict[str, float]:
    """Every per-epoch number by (name, epoch), each epoch logged once, and the final ones."""
    values = {}
    for name in metrics.EPOCH_METRICS:
        history = tracking.metric_history(store, run.run_id, name)
        assert [step for step, _ in history] == list(range(1, epochs + 1)), (name, history)
        values.update({f"{name} @ {step}": value for step, value in history})
    values.update({name: run.metrics[name] for name in RESUMED_FINAL})
    return values


def largest_relative_difference(mine: dict[str, float], theirs: dict[str, float]) -> float:
    """Assert each number within rel 1e-6 (abs 1e-9 near zero) of its twin's; the largest gap.

    The two runs trained in different processes: the last float bit may differ.
    """
    worst = 0.0
    for name, value in theirs.items():
        relative = abs(mine[name] - value) / max(abs(value), 1e-12)
        assert relative <= 1e-6 or math.isclose(mine[name], value, abs_tol=1e-9), name
        worst = max(worst, relative)
    return worst
