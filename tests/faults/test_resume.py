"""A run killed outright mid-epoch resumes from its checkpoint and ends as if never stopped.

Each engine: a sweep trained to the end in one store; the same sweep in another store,
SIGKILLed during its third epoch, then relaunched. The relaunch carries each killed run on
in the same MLflow run, and every per-epoch number and every test number equals the
uninterrupted run's within 1e-6 relative.
"""

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, largest_relative_difference, run_numbers
from vaelab.edges import tracking
from vaelab.vocab.tags import CHILD, SWEEP_ROLE

pytestmark = pytest.mark.long

EPOCHS = 4
SWEEP = [
    "--multirun",
    "experiment=smoke",
    "data.train_limit=12288",
    "data.validation_size=512",
    "data.test_limit=512",
    "tracking.log_model=false",
    f"train.epochs={EPOCHS}",
    # A dead process's runs are stale after 2 s (its heartbeat every 0.5 s).
    "tracking.heartbeat_s=0.5",
    "tracking.stale_after_s=2",
]
ENGINES = {
    "fit": (["style=functional", "seed=1"], "tensorflow"),
    "custom_loop_tensorflow": (["style=custom_loop", "seed=1"], "tensorflow"),
    "custom_loop_jax": (["style=custom_loop", "seed=1"], "jax"),
    "packed": (["style=functional,custom_loop", "seed=1", "hydra/launcher=packed"], "jax"),
}


def launch(root, overrides, backend, *extra):
    command = [sys.executable, str(REPO / "pipelines" / "train.py"), *SWEEP, *overrides, *extra]
    command += [f"paths.store_dir={root}/mlruns", f"paths.output_dir={root}/outputs"]
    env = {**os.environ, "KERAS_BACKEND": backend}
    return subprocess.Popen(
        command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process) -> str:
    output = process.communicate(timeout=400)[0]
    assert process.returncode == 0, output[-3000:]
    return output


def children(root):
    store = tracking.open_store(f"sqlite:///{root}/mlruns/mlflow.db", "vaelab")
    return store, tracking.find_runs(store, {SWEEP_ROLE: CHILD})


def kill_during_epoch(process, root, epoch: int) -> None:
    """SIGKILL once every run has logged the epoch before `epoch`: it is training `epoch`."""
    deadline, store = time.time() + 300, None
    while time.time() < deadline:
        if store is None and (root / "mlruns" / "mlflow.db").exists():
            store = children(root)[0]  # opened once: a packed epoch of the smoke data is short
        if store is not None:
            runs = tracking.find_runs(store, {SWEEP_ROLE: CHILD})
            logged = [len(tracking.metric_history(store, r.run_id, "val/total")) for r in runs]
            if runs and min(logged) >= epoch - 1:
                process.kill()
                process.communicate(timeout=60)
                return
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the sweep never reached the epoch to kill it in")


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_run_killed_mid_epoch_resumes_exactly(engine, tmp_path):
    overrides, backend = ENGINES[engine]
    reference, victim = tmp_path / "reference", tmp_path / "victim"
    reference.mkdir(), victim.mkdir()
    finished(launch(reference, overrides, backend))
    kill_during_epoch(launch(victim, overrides, backend), victim, epoch=3)
    store, killed = children(victim)
    assert killed and {r.status for r in killed} == {"RUNNING"}  # nobody could close them
    time.sleep(2.5)  # their claims expire (tracking.stale_after_s=2)
    output = finished(launch(victim, overrides, backend))
    assert "Resuming run" in output
    store, resumed = children(victim)
    assert sorted(r.run_id for r in resumed) == sorted(r.run_id for r in killed)  # same runs
    _, expected = children(reference)
    by_config = {r.params["style.name"]: r for r in expected}
    ref_store = tracking.open_store(f"sqlite:///{reference}/mlruns/mlflow.db", "vaelab")
    worst = 0.0
    for run in resumed:
        assert run.status == "FINISHED" and run.tags["resume.count"] == "1"
        assert int(run.tags["resume.from_epochs"]) in (1, 2)  # its last checkpoint
        twin = by_config[run.params["style.name"]]
        mine, theirs = run_numbers(store, run, EPOCHS), run_numbers(ref_store, twin, EPOCHS)
        worst = max(worst, largest_relative_difference(mine, theirs))
    print(f"{engine}: largest relative difference {worst:.2e}")


def test_a_relaunch_right_after_a_sigkill_says_when_the_claim_expires(tmp_path):
    # The killed run's heartbeat is fresh: another process may be training it. The relaunch
    # trains nothing and says, in one line, when the claim expires.
    overrides, backend = ENGINES["fit"]
    patient = ["tracking.heartbeat_s=0.5", "tracking.stale_after_s=120"]
    kill_during_epoch(launch(tmp_path, overrides, backend, *patient), tmp_path, epoch=2)
    output = finished(launch(tmp_path, overrides, backend, *patient))
    (line,) = [x for x in output.splitlines() if "claim expires at" in x]
    assert "is training this configuration" in line and "tracking.stale_after_s=120" in line
    store, runs = children(tmp_path)
    assert len(runs) == 1 and runs[0].status == "RUNNING"  # left alone, not retrained
