"""`hydra/launcher=ray_cluster` (hydra-ray-launcher: one Ray task per run) for real, in CI.

The launcher starts a local Ray instance of two CPUs in this process; two runs train at once,
each in a Ray worker. One worker is SIGKILLed during its run's second epoch: Ray retries the
task in another worker, which takes the run over at once (its claim would last 600 s) and
resumes it from its checkpoint in the same MLflow run. Every run FINISHED once, every epoch
logged once. (A packed sweep on a two-node cluster: tests/jax/test_ray_cluster.py.)
"""

import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import TINY
from vaelab.edges import tracking
from vaelab.vocab.tags import CHILD, RAY_TASK_ID, RAY_WORKER_ID, SWEEP_ROLE

ray = pytest.importorskip("ray")
pytest.importorskip("hydra_plugins.hydra_ray_launcher")
pytestmark = pytest.mark.long

EPOCHS = 3
SWEEP = [
    "--multirun",
    *TINY,
    "data.train_limit=8192",  # an epoch long enough to be killed inside
    f"train.epochs={EPOCHS}",
    "seed=1,2",
    "hydra/launcher=ray_cluster",
    "+hydra.launcher.ray.init.num_cpus=2",
    "tracking.heartbeat_s=1",
    "tracking.stale_after_s=600",
]


@pytest.fixture
def local_ray(monkeypatch):
    """The launcher's local instance, without writing ~/.ray/auth_token; shut down after."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield
    ray.shutdown()


def children(store_uri: str) -> tuple[tracking.Store, list[tracking.RunRecord]]:
    store = tracking.open_store(store_uri, "vaelab")
    return store, tracking.find_runs(store, {SWEEP_ROLE: CHILD})


def worker_pid(worker_id: str) -> int | None:
    """The pid of a Ray worker of this process's instance, from its log file's name."""
    context = ray.get_runtime_context()
    logs = Path(context.get_temp_dir()) / context.get_session_name() / "logs"
    found = sorted(logs.glob(f"worker-{worker_id}-*.out"))
    return int(found[0].stem.rsplit("-", 1)[1]) if found else None


def kill_in_second_epoch(store_uri: str, db: Path, killed: dict) -> None:
    """SIGKILL the worker of the first run that has logged its first epoch."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if db.exists() and ray.is_initialized():
            store, runs = children(store_uri)
            for run in runs:
                if run.status != "RUNNING" or RAY_WORKER_ID not in run.tags:
                    continue
                if tracking.metric_history(store, run.run_id, "val/total"):
                    pid = worker_pid(run.tags[RAY_WORKER_ID])
                    if pid is not None:
                        psutil.Process(pid).kill()
                        killed.update(run=run, pid=pid, at=time.time())
                        return
        time.sleep(0.05)


def test_a_killed_worker_is_retried_and_resumes_its_run_in_place(
    run_app, store_uri, tmp_path, local_ray
):
    killed = {}
    db = tmp_path / "mlruns" / "mlflow.db"
    killer = threading.Thread(
        target=kill_in_second_epoch, args=(store_uri, db, killed), daemon=True
    )
    killer.start()
    started = time.time()
    result = run_app("train.py", *SWEEP)
    killer.join(timeout=5)
    assert killed, "no run reached its second epoch in a Ray worker"
    after = time.time() - killed["at"]
    print(f"killed {killed['at'] - started:.0f} s in, the sweep ended {after:.0f} s later")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    store, runs = children(store_uri)
    assert sorted(r.params["seed"] for r in runs) == ["1", "2"]  # one run each, no duplicate
    assert {r.status for r in runs} == {"FINISHED"}
    (resumed,) = [r for r in runs if r.run_id == killed["run"].run_id]  # the same run
    assert resumed.tags["resume.count"] == "1"
    assert int(resumed.tags["resume.from_epochs"]) in (0, 1, 2)  # its last checkpoint
    assert resumed.tags[RAY_TASK_ID] == killed["run"].tags[RAY_TASK_ID]  # Ray's retry
    assert resumed.tags[RAY_WORKER_ID] != killed["run"].tags[RAY_WORKER_ID]
    for run in runs:
        history = tracking.metric_history(store, run.run_id, "val/total")
        assert [step for step, _ in history] == list(range(1, EPOCHS + 1))  # each epoch once
