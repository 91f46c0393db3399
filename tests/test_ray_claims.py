"""A Ray task's retry takes over the runs its dead attempt held, at once; nobody else does.

Ray retries a task whose worker or node died in another worker, seconds later, while the dead
attempt's runs still have fresh heartbeats. The runs carry the task, worker and node
(`edges.ray_task`); `claims.superseded` reads them. Here on a real sqlite store: first the
rule on hand-made runs, then the whole path with a run left RUNNING as a SIGKILL leaves it.
"""

import signal
import time

import pytest

from tests.conftest import TINY, signal_at_epoch
from vaelab.edges import ray_task, tracking
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules.lifecycle.claims import holder, resumable, superseded
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.vocab.tags import (
    CONFIG_HASH,
    ENGINE,
    HEARTBEAT_TAG,
    RAY_NODE_ID,
    RAY_TASK_ID,
    RAY_WORKER_ID,
    SWEEP_ID,
    SWEEP_ROLE,
)


def attempt(task: str, worker: str, node: str = "node-a") -> dict[str, str]:
    return {RAY_TASK_ID: task, RAY_WORKER_ID: worker, RAY_NODE_ID: node}


def test_the_same_task_in_another_worker_supersedes_and_nothing_else_does():
    run = tracking.RunRecord("r", "RUNNING", {}, {}, attempt("t1", "w1"))
    assert superseded(run, attempt("t1", "w2", "node-b"))  # the retry, on any node
    assert not superseded(run, attempt("t1", "w1"))  # the attempt itself, asking again
    assert not superseded(run, attempt("t2", "w2"))  # another task: a live claim
    assert not superseded(run, {})  # outside Ray
    plain = tracking.RunRecord("r", "RUNNING", {}, {}, {})
    assert not superseded(plain, attempt("t1", "w2"))  # a run no Ray task opened


def test_a_retry_resumes_a_live_looking_run_at_once_and_others_respect_it(store_uri):
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "s1", {}, total=1, objective="val/total")
    tags = {SWEEP_ID: "s1", SWEEP_ROLE: "child", CONFIG_HASH: "h", ENGINE: "packed"}
    run = tracking.create_run(store, "x", {**tags, **attempt("t1", "w1")})
    # Its heartbeat is fresh (created now), as a worker SIGKILLed a moment ago leaves it.
    assert holder(store, context, "h").run_id == run.run_id
    assert holder(store, context, "h", claimant=attempt("t2", "w9")).run_id == run.run_id
    assert resumable(store, context, "h", "packed", attempt("t2", "w9")) is None
    retry = attempt("t1", "w2", "node-b")
    assert holder(store, context, "h", claimant=retry) is None
    assert resumable(store, context, "h", "packed", retry).run_id == run.run_id
    # A FINISHED run holds its configuration against the retry too: it trains nothing twice.
    run.end("FINISHED")
    assert holder(store, context, "h", claimant=retry).run_id == run.run_id


def test_a_killed_attempt_is_resumed_in_place_by_its_retry_only(smoke_cfg, store_uri, monkeypatch):
    cfg = smoke_cfg(*TINY, "train.epochs=3", "tracking.stale_after_s=600")
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "s1", {}, total=1, objective="val/total")
    with monkeypatch.context() as patch:
        patch.setattr(ray_task, "task_tags", lambda: attempt("t1", "w1"))
        signal_at_epoch(patch, signal.SIGTERM, epoch=2)
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(cfg, sweep=context)
    (dead,) = tracking.find_runs(store, {SWEEP_ID: "s1", SWEEP_ROLE: "child"})
    # As a SIGKILL leaves it: RUNNING, its heartbeat fresh (stale only after 600 s).
    store.client.update_run(dead.run_id, status="RUNNING")
    store.client.set_tag(dead.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
    # Another task respects the live claim: it trains nothing.
    monkeypatch.setattr(ray_task, "task_tags", lambda: attempt("t2", "w2", "node-b"))
    other = train_and_evaluate(cfg, sweep=context)
    assert other.skipped and other.run_id == dead.run_id
    assert tracking.get_run(store, dead.run_id).status == "RUNNING"
    # The retry (the same task, another worker) resumes it at once, in place.
    monkeypatch.setattr(ray_task, "task_tags", lambda: attempt("t1", "w2", "node-b"))
    started = time.time()
    result = train_and_evaluate(cfg, sweep=context)
    assert time.time() - started < 60  # at once: not after the claim's 600 s
    (run,) = tracking.find_runs(store, {SWEEP_ID: "s1", SWEEP_ROLE: "child"})
    assert not result.skipped and result.run_id == run.run_id == dead.run_id
    assert run.status == "FINISHED" and run.tags["resume.count"] == "1"
    # From its last checkpoint (the signal may come before epoch 2's is written).
    assert run.tags["resume.from_epochs"] in ("1", "2")
    assert run.tags[RAY_WORKER_ID] == "w2" and run.tags[RAY_NODE_ID] == "node-b"
    epochs = [step for step, _ in tracking.metric_history(store, run.run_id, "val/total")]
    assert epochs == [1, 2, 3]  # each epoch logged once
