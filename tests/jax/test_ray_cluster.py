"""A packed sweep on a real two-node Ray cluster on this machine, one node killed mid-group.

`ray start --head` and a second node (`ray start --address=127.0.0.1:<port>`), one CPU each,
each with its own temporary directory (two nodes sharing one would have two log monitors
forward every line twice), small object stores, token authentication off (a loopback
cluster that lives for this test). The pipeline runs in this process, as Ray's driver:

1. a node with other code refuses its group in one line (the driver's code hash is faked);
2. two configurations (6 and 2 epochs) planned as two groups: one task per node, each run
   FINISHED once, each group recorded as it ended (the short one, sent second, first);
3. the same sweep in a fresh store, the second node's raylet SIGKILLed during its group's
   second epoch: Ray retries the task on the head node, which takes the group's runs over at
   once (their claims last 600 s) and resumes them in the same MLflow runs, with every number
   of step 2's uninterrupted runs within 1e-6 relative (two processes: the last bit may
   differ, tests/faults/test_resume.py);
4. Ctrl-C on the driver: the task training ends its run KILLED (resumable), the other never
   starts.

The cluster's processes are this test's children (`ray start --block`): all of them are
killed by pid when it ends, whatever happened; `ray stop` would stop every Ray on the machine.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.conftest import app_in, free_port, largest_relative_difference, run_numbers
from vaelab.edges import provenance, tracking
from vaelab.vocab.tags import (
    CHILD,
    PACK_GROUP,
    RAY_NODE_ID,
    RAY_TASK_ID,
    RAY_WORKER_ID,
    SWEEP_ROLE,
)

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.long

RAY = str(Path(sys.executable).with_name("ray"))
# Each node: one CPU (one group at a time), a small object store (MNIST is ~55 MB), no
# dashboard; `--block` keeps the node's processes children of the command this test started.
NODE = ["--num-cpus=1", "--object-store-memory=200000000", "--disable-usage-stats", "--block"]
# Epochs of the two configurations: the short group usually ends first. Either may land on
# the second node, and it is killed once it logs epoch 1: a dead raylet's worker stops within
# about 0.7 s, so both need epochs enough left to be inside one (an idle CI machine trains
# such an epoch in about 0.3 s; with 2 epochs the run finished before its node died).
LONG, SHORT = 9, 6
SWEEP = [
    "--multirun",
    "experiment=smoke",
    # ~25k digits: an epoch takes a second or more, long enough to be killed inside.
    "data.train_limit=24576",
    "data.validation_size=256",
    "data.test_limit=256",
    "tracking.log_model=false",
    f"train.epochs={LONG},{SHORT}",
    "hydra/launcher=packed",
    "hydra.launcher.max_group_size=1",
    # A claim outlives the test: a retry that waited for it would never resume.
    "tracking.heartbeat_s=1",
    "tracking.stale_after_s=600",
]


@dataclass
class Cluster:
    address: str
    head: subprocess.Popen
    second: subprocess.Popen
    killed: list[psutil.Process] = field(default_factory=list)  # the second node's, at its end

    def node_id(self, node: subprocess.Popen) -> str:
        """The node's id, from its raylet's command line."""
        (raylet,) = [p for p in _tree(node) if p.name() == "raylet"]
        (flag,) = [a for a in raylet.cmdline() if a.startswith("--node_id=")]
        return flag.split("=", 1)[1]

    def kill_second_raylet(self) -> None:
        """SIGKILL the second node's raylet; its other processes are reaped at teardown."""
        self.killed = _tree(self.second)  # once the raylet is gone they may lose their parent
        for process in self.killed:
            if process.name() == "raylet":
                process.kill()


def _tree(process: subprocess.Popen) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(process.pid)
        return [root, *root.children(recursive=True)]
    return []


def _stop(processes: list[subprocess.Popen], more: list[psutil.Process]) -> None:
    """SIGKILL every process the nodes started, by pid, and wait for them."""
    tree = [p for process in processes for p in _tree(process)] + more
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(tree, timeout=30)


@pytest.fixture
def cluster(monkeypatch) -> Iterator[Cluster]:
    # Ray 2.60 turns token authentication on whenever ~/.ray/auth_token exists (any local
    # ray.init writes one): said explicitly, the nodes and this driver agree.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    root = Path(tempfile.mkdtemp(prefix="vr"))  # short: Ray's socket paths have a length limit
    port, started, nodes = free_port(), [], []
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    try:
        head = subprocess.Popen(
            [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false",
             f"--temp-dir={root}/h", *NODE],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(head)
        address = f"127.0.0.1:{port}"
        second = subprocess.Popen(
            [RAY, "start", f"--address={address}", f"--temp-dir={root}/w", *NODE],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.append(second)
        ray.init(address=address, log_to_driver=False)
        deadline = time.time() + 120
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            assert time.time() < deadline, "the second node never joined"
            time.sleep(0.5)
        ray.shutdown()  # the pipeline joins the cluster itself (`ray_groups.connect`)
        nodes.append(Cluster(address, head, second))
        yield nodes[0]
    finally:
        ray.shutdown()
        _stop(started, nodes[0].killed if nodes else [])
        with contextlib.suppress(OSError):
            subprocess.run(["rm", "-rf", str(root)], check=False)


def children(root: Path) -> tuple[tracking.Store, list[tracking.RunRecord]]:
    store = tracking.open_store(f"sqlite:///{root}/mlruns/mlflow.db", "vaelab")
    return store, tracking.find_runs(store, {SWEEP_ROLE: CHILD})


def kill_during_second_epoch(root: Path, cluster: Cluster, node: str, killed: dict) -> None:
    """Once the second node's run has logged epoch 1, SIGKILL that node's raylet."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if (root / "mlruns" / "mlflow.db").exists():
            store, runs = children(root)
            mine = [r for r in runs if r.tags.get(RAY_NODE_ID) == node]
            if mine and tracking.metric_history(store, mine[0].run_id, "val/total"):
                cluster.kill_second_raylet()
                killed.update(run=mine[0], at=time.time())
                return
        time.sleep(0.05)


def interrupt_when_training(root: Path) -> None:
    """Ctrl-C to this process (the driver) once a run has logged its first epoch."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if (root / "mlruns" / "mlflow.db").exists():
            store, runs = children(root)
            if any(tracking.metric_history(store, r.run_id, "val/total") for r in runs):
                os.kill(os.getpid(), signal.SIGINT)
                return
        time.sleep(0.05)


def test_a_packed_sweep_on_two_nodes_survives_losing_one(cluster, tmp_path, monkeypatch):
    shared_cache = f"hydra.launcher.compilation_cache={tmp_path}/jax_cache"
    sweep = [*SWEEP, f"hydra.launcher.ray.address={cluster.address}", shared_cache]
    head, second = cluster.node_id(cluster.head), cluster.node_id(cluster.second)

    # 1. Other code on a node: each group refuses in one line, its runs FAILED, none trained.
    with monkeypatch.context() as patch:
        patch.setattr(provenance, "source_hash", lambda: "e" * 64)
        refused = app_in(tmp_path / "refused")("train.py", *sweep)
    assert refused.returncode == 1
    lines = [x for x in refused.stderr.splitlines() if "runs other code than the driver" in x]
    assert len(lines) == 2, refused.stderr[-3000:]
    assert all("install the driver's checkout on every node" in x for x in lines)
    _, runs = children(tmp_path / "refused")
    assert len(runs) == 2 and {r.status for r in runs} == {"FAILED"}

    # 2. Two groups, one per node; each run FINISHED once; recorded as each group ends.
    started = time.time()
    reference = app_in(tmp_path / "reference")("train.py", *sweep)
    assert reference.returncode == 0, reference.stderr[-3000:]
    ref_store, expected = children(tmp_path / "reference")
    assert len(expected) == 2 and {r.status for r in expected} == {"FINISHED"}
    assert {r.tags[RAY_NODE_ID] for r in expected} == {head, second}
    assert len({r.tags[RAY_TASK_ID] for r in expected}) == 2  # one task per group
    sent = re.findall(r"packed group (\w+): 1 runs sent to Ray", reference.stderr)
    back = re.findall(r"packed group (\w+): back from Ray", reference.stderr)
    ended = sorted(expected, key=lambda r: ref_store.client.get_run(r.run_id).info.end_time)
    assert back == [r.tags[PACK_GROUP] for r in ended]  # as they ended, not as sent
    print(
        f"two groups on two nodes: {time.time() - started:.0f} s; "
        f"recorded {'out of' if back != sent else 'in'} the order they were sent"
    )

    # 3. The second node dies during its group's second epoch: the group ends on the head.
    victim, killed = tmp_path / "victim", {}
    killer = threading.Thread(
        target=kill_during_second_epoch, args=(victim, cluster, second, killed), daemon=True
    )
    killer.start()
    result = app_in(victim)("train.py", *sweep)
    killer.join(timeout=5)
    assert killed, "the second node's group never reached its second epoch"
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"killed node to the end of the sweep: {time.time() - killed['at']:.0f} s")
    store, runs = children(victim)
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    (resumed,) = [r for r in runs if r.run_id == killed["run"].run_id]  # the same run
    assert resumed.tags["resume.count"] == "1" and resumed.tags[RAY_NODE_ID] == head
    epochs = int(resumed.params["train.epochs"])
    assert 0 <= int(resumed.tags["resume.from_epochs"]) < epochs  # its last checkpoint
    assert resumed.tags[RAY_TASK_ID] == killed["run"].tags[RAY_TASK_ID]  # Ray's retry
    assert resumed.tags[RAY_WORKER_ID] != killed["run"].tags[RAY_WORKER_ID]
    by_epochs = {r.params["train.epochs"]: r for r in expected}
    worst = 0.0
    for run in runs:
        epochs = int(run.params["train.epochs"])
        twin = by_epochs[run.params["train.epochs"]]
        mine, theirs = run_numbers(store, run, epochs), run_numbers(ref_store, twin, epochs)
        worst = max(worst, largest_relative_difference(mine, theirs))
    print(f"resumed on the head node: largest relative difference {worst:.2e}")

    # 4. Ctrl-C on the driver: it cancels the tasks, and the group training ends its runs KILLED.
    stopped = tmp_path / "stopped"
    interrupter = threading.Thread(target=interrupt_when_training, args=(stopped,), daemon=True)
    interrupter.start()
    result = app_in(stopped)("train.py", *sweep)
    interrupter.join(timeout=5)
    assert result.returncode == 130, result.stderr[-3000:]
    _, runs = children(stopped)  # the head alone: one group trained, the other never began
    assert len(runs) == 1 and runs[0].status == "KILLED"
