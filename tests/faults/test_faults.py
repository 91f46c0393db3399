"""Faults: what was recorded stays, the status tells the truth, the next launch recovers."""

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, TINY, compose_config, isolated, signal_at_epoch, store_for
from vaelab.edges import tracking
from vaelab.orchestration.report import make_report
from vaelab.orchestration.train import train_and_evaluate
from vaelab.vae import plots
from vaelab.vocab.errors import RunFailed
from vaelab.vocab.tags import HEARTBEAT_TAG

SLOW_RUN = [
    "data.train_limit=8192",
    "data.validation_size=256",
    "data.test_limit=256",
    "train.epochs=40",
    "tracking.log_model=false",
    "experiment=smoke",
]


def start(tmp_path, *args):
    """The training CLI in its own process, to be killed outright."""
    command = [sys.executable, str(REPO / "pipelines/train.py"), *args, *isolated(tmp_path)]
    return subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_for_epochs(tmp_path, count, epochs="40", timeout=120):
    """The run id once the store holds `count` epochs of a RUNNING run of that length."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (tmp_path / "mlruns" / "mlflow.db").exists():
            store = store_for(tmp_path)
            for run in tracking.find_runs(store, {}, status="RUNNING"):
                logged = tracking.metric_history(store, run.run_id, "train/total")
                if run.params.get("train.epochs") == epochs and len(logged) >= count:
                    return run.run_id
        time.sleep(0.2)
    raise AssertionError(f"no run reached {count} epochs in {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_training_ends_the_run_killed_keeping_finished_epochs(
    smoke_cfg, store_uri, monkeypatch, signum
):
    signal_at_epoch(monkeypatch, signum, epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(smoke_cfg("train.epochs=5", "tracking.log_model=false"))
    store = tracking.open_store(store_uri, "vaelab")
    (run,) = tracking.find_runs(store, {})
    assert run.status == "KILLED"
    epochs = [step for step, _ in tracking.metric_history(store, run.run_id, "val/total")]
    assert epochs == [1, 2]  # what finished is kept; nothing after the signal
    expected = "KeyboardInterrupt" if signum == signal.SIGINT else "received signal SIGTERM"
    assert expected in run.tags["error"]


def test_an_interrupted_sweep_relaunched_resumes_only_the_killed_run(
    tmp_path, run_app, monkeypatch
):
    sweep = ["train.py", "--multirun", *TINY, "train.epochs=1,3"]
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, signal.SIGINT, epoch=2, epochs=3)
        interrupted = run_app(*sweep)
    assert interrupted.returncode != 0
    store = store_for(tmp_path)
    children = {
        r.params["train.epochs"]: r for r in tracking.find_runs(store, {"sweep.role": "child"})
    }
    assert children["1"].status == "FINISHED" and children["3"].status == "KILLED"

    again = run_app(*sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("Skipping: this configuration already FINISHED") == 1
    # The killed run is carried on in the same MLflow run, from its last checkpoint (epoch 1:
    # the signal came as epoch 2 was reported, before its checkpoint), each epoch logged once.
    runs = {r.params["train.epochs"]: r for r in tracking.find_runs(store, {"sweep.role": "child"})}
    assert sorted((k, r.status) for k, r in runs.items()) == [("1", "FINISHED"), ("3", "FINISHED")]
    resumed = runs["3"]
    assert resumed.run_id == children["3"].run_id
    assert resumed.tags["resume.count"] == "1" and resumed.tags["resume.from_epochs"] == "1"
    for name in ("train/total", "val/total"):
        assert [s for s, _ in tracking.metric_history(store, resumed.run_id, name)] == [1, 2, 3]
    assert "test/total" in resumed.metrics


def test_a_single_run_resumes_with_the_same_command_and_says_when_it_cannot(
    tmp_path, run_app, monkeypatch
):
    command = ["train.py", *TINY, "train.epochs=3"]
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, signal.SIGINT, epoch=3)
        assert run_app(*command).returncode != 0
    store = store_for(tmp_path)
    (killed,) = tracking.find_runs(store, {})
    assert killed.status == "KILLED"

    again = run_app(*command)  # the documented command: the same one
    assert again.returncode == 0, again.stderr[-3000:]
    (run,) = tracking.find_runs(store, {})
    assert run.run_id == killed.run_id and run.status == "FINISHED"
    assert run.tags["resume.count"] == "1" and run.tags["resume.from_epochs"] == "2"
    assert [s for s, _ in tracking.metric_history(store, run.run_id, "val/total")] == [1, 2, 3]

    # As a SIGKILL leaves it: RUNNING with a fresh heartbeat. Another process may be training
    # it, so the relaunch trains a new run and says when the old one's claim expires.
    store.client.update_run(run.run_id, "RUNNING")
    store.client.set_tag(run.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
    beside = run_app(*command)
    assert beside.returncode == 0, beside.stderr[-3000:]
    (line,) = [x for x in beside.stderr.splitlines() if "claim expires at" in x]
    assert f"Run {run.run_id} of this configuration is RUNNING" in line
    assert "the same command then resumes it" in line
    runs = tracking.find_runs(store, {})
    assert len(runs) == 2 and {r.status for r in runs} == {"RUNNING", "FINISHED"}


@pytest.mark.long
def test_sigkill_leaves_a_running_run_that_reports_call_stale(tmp_path):
    process = start(tmp_path, *SLOW_RUN)
    run_id = wait_for_epochs(tmp_path, 1)
    process.kill()
    process.communicate(timeout=60)
    store = store_for(tmp_path)
    assert tracking.get_run(store, run_id).status == "RUNNING"  # nobody could close it
    time.sleep(2.0)
    paths = make_report(
        compose_config(
            *isolated(tmp_path),
            f"out_dir={tmp_path}/reports",
            f"runs=[{run_id}]",
            "tracking.stale_after_s=1",
            name="report",
        )
    )
    assert "STALE" in paths["csv"].read_text()


@pytest.mark.long
def test_two_processes_launching_one_sweep_train_each_configuration_once_and_kill_nothing(
    tmp_path,
):
    # Two launches of the same sweep, at once, into a store that does not exist yet: a
    # teammate relaunching from another shell while the first still runs. A RUNNING run with
    # a fresh heartbeat is a claim: the other process trains something else, kills nothing.
    sweep = ["--multirun", *TINY, "seed=1,2,3"]
    processes = [start(tmp_path, *sweep) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    store = store_for(tmp_path)
    children = tracking.find_runs(store, {"sweep.role": "child"})
    assert sorted(r.params["seed"] for r in children) == ["1", "2", "3"]  # each exactly once
    assert {r.status for r in children} == {"FINISHED"}
    assert "marked KILLED" not in " ".join(outputs)  # nothing alive was taken for dead
    (parent,) = tracking.find_runs(store, {"sweep.role": "parent"})  # one parent, closed
    assert parent.status == "FINISHED" and parent.tags["sweep.count.finished"] == "3"
    skipped = sum(o.count("Skipping:") for o in outputs)
    assert skipped == 3, outputs  # each configuration: trained by one, skipped by the other


def test_a_full_disk_while_writing_artifacts_fails_the_run_and_keeps_the_store(
    smoke_cfg, store_uri, monkeypatch
):
    def disk_full(figure, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(plots, "save", disk_full)
    with pytest.raises(RunFailed, match="No space left on device") as failure:
        train_and_evaluate(smoke_cfg("tracking.log_model=false"))
    assert isinstance(failure.value.__cause__, OSError)
    store = tracking.open_store(store_uri, "vaelab", None)
    (run,) = tracking.find_runs(store, {})
    assert run.status == "FAILED" and "No space left on device" in run.tags["error"]
    assert "val/total" in run.metrics and "test/total" in run.metrics


def test_secret_looking_names_never_reach_the_store(store_uri):
    store = tracking.open_store(store_uri, "vaelab", None)
    params = {"model.latent_dim": 2, "tracking.api_token": "t0k", "db_password": "hunter2"}
    tags = {"style": "functional", "AWS_SECRET_ACCESS_KEY": "abc", "github_token": "ghp"}
    run = tracking.create_run(store, "secrets", tags, params)
    run.set_tags({"service_api_key": "k"})
    run.log(params={"github_token": "ghp"}, tags={"my_secret": "abc"})
    run.end("FINISHED")
    record = tracking.get_run(store, run.run_id)
    everything = {**record.params, **record.tags}
    assert record.params == {"model.latent_dim": "2"}
    assert not any(value in everything.values() for value in ("t0k", "hunter2", "abc", "ghp", "k"))
