"""Many workers, one server: a parallel sweep, its report and a rerun, all through the server;
concurrent writers lose nothing."""

from __future__ import annotations

import subprocess
import sys
import threading

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY, compose_config, isolated
from vaelab.edges import tracking
from vaelab.orchestration.report import make_report
from vaelab.orchestration.rerun import rerun
from vaelab.rules.lifecycle.children import children_of
from vaelab.vocab import metrics
from vaelab.vocab.tags import CHILD, PARENT, RERUN_OF, SWEEP_ID, SWEEP_ROLE

pytestmark = pytest.mark.server

EPOCHS = 2
# 8 configurations, 4 workers: each worker trains two runs, all writing at once.
GRID = ["seed=1,2,3,4", "model.latent_dim=2,4"]
PARALLEL = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=4"]
# What every run leaves in its artifacts (plots/ holds several figures).
ARTIFACTS = {"config.yaml", "overrides.yaml", "requirements.txt", "run.log"}


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for entry in client.list_artifacts(run_id, path):
        files += artifact_files(client, run_id, entry.path) if entry.is_dir else [entry.path]
    return files


def test_a_parallel_sweep_its_report_and_a_rerun_all_go_through_the_server(
    stack, run_app, tmp_path
):
    overrides = [*TINY, f"train.epochs={EPOCHS}", *stack.overrides("parallel"), *GRID]
    result = run_app("train.py", "--multirun", *overrides, *PARALLEL)
    assert result.returncode == 0, result.stderr[-3000:]
    store = stack.store("parallel")
    (parent,) = tracking.find_runs(store, {SWEEP_ROLE: PARENT})
    children = children_of(store, parent.tags[SWEEP_ID])
    assert parent.status == "FINISHED" and parent.tags["sweep.count.finished"] == "8"
    assert sorted(r.status for r in children) == ["FINISHED"] * 8
    assert len({(r.params["seed"], r.params["model.latent_dim"]) for r in children}) == 8
    check_complete_and_readable(stack, store, children, tmp_path)
    check_report(stack, parent, children, tmp_path)
    check_rerun(stack, store, children[0], tmp_path)


def check_complete_and_readable(stack, store, children, tmp_path) -> None:
    """Every epoch's metrics and every artifact of every run, read back through the server."""
    client = MlflowClient(stack.url)
    for run in children:
        for name in (*metrics.EPOCH_METRICS, metrics.EPOCH_SECONDS):
            history = tracking.metric_history(store, run.run_id, name)
            assert [step for step, _ in history] == list(range(1, EPOCHS + 1)), (name, history)
            assert history[-1][1] == run.metrics[name]
        files = artifact_files(client, run.run_id)
        assert set(files) >= ARTIFACTS and any(f.startswith("plots/") for f in files), files
        # Byte for byte what the server keeps (it proxies uploads into its own directory).
        kept = next(stack.layout.artifacts.glob(f"*/{run.run_id}/artifacts"))
        for path in files:
            local = tracking.download_artifact(store, run.run_id, path, tmp_path / run.run_id)
            assert local is not None and local.read_bytes() == (kept / path).read_bytes(), path
        config = tracking.read_text_artifact(store, run.run_id, "config.yaml")
        assert f"latent_dim: {run.params['model.latent_dim']}" in config
    # No worker wrote an artifact (or anything else) into a local store.
    assert not (tmp_path / "mlruns").exists()


def check_report(stack, parent, children, tmp_path) -> None:
    cfg = compose_config(
        *isolated(tmp_path),
        *stack.overrides("parallel"),
        f"out_dir={tmp_path}/reports",
        name="report",
    )
    paths = make_report(cfg)
    table = pd.read_csv(paths["csv"])
    by_id = {r.run_id: r for r in children}
    assert sorted(table["run_id"]) == sorted(by_id)
    for _, row in table.iterrows():
        assert row["metrics.val/total"] == by_id[row["run_id"]].metrics["val/total"]
    attached = artifact_files(MlflowClient(stack.url), parent.run_id, "report")
    assert "report/report.html" in attached


def check_rerun(stack, store, original, tmp_path) -> None:
    cfg = compose_config(
        *isolated(tmp_path),
        *stack.overrides("parallel"),
        f"run_id={original.run_id}",
        name="rerun",
    )
    (comparison,) = rerun(cfg)
    assert len(comparison.rows) > 6 * EPOCHS and not comparison.missing, comparison.table()
    # The original trained in a loky worker, the rerun in this process: processes (and CPUs)
    # may run different float32 kernels, so every number agrees to rel 1e-6, not bit for bit.
    for name, original_value, rerun_value in comparison.rows:
        assert rerun_value == pytest.approx(original_value, rel=1e-6, abs=1e-9), (
            f"{name}\n{comparison.table()}"
        )
    (again,) = tracking.find_runs(store, {RERUN_OF: original.run_id})
    assert again.status == "FINISHED"
    assert tracking.read_text_artifact(store, again.run_id, "rerun_diff.txt").startswith("metric")


WRITERS, STEPS, PER_STEP = 8, 50, 8


def test_concurrent_writers_lose_no_metric_point(stack):
    """8 threads, each its own run: 3,200 points in 400 log_batch calls, all read back."""
    store = stack.store("load")
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            run = tracking.create_run(store, f"writer-{number}", {"writer": number})
            for step in range(STEPS):
                run.log({f"load/m{k}": number + step / 100 for k in range(PER_STEP)}, step=step)
            run.end("FINISHED")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    runs = tracking.find_runs(store, {})
    assert sorted(r.status for r in runs) == ["FINISHED"] * WRITERS
    read = 0
    for run in runs:
        number = int(run.tags["writer"])
        for k in range(PER_STEP):
            history = tracking.metric_history(store, run.run_id, f"load/m{k}")
            assert history == [(step, number + step / 100) for step in range(STEPS)]
            read += len(history)
    assert read == WRITERS * STEPS * PER_STEP == 3200


def test_two_processes_launching_one_sweep_through_the_server_train_each_once(stack, tmp_path):
    # As in tests/faults (the local store), through a real server: a RUNNING run with a fresh
    # heartbeat is a claim the other process respects; nothing alive is killed.
    command = [
        sys.executable, str(REPO / "pipelines" / "train.py"), "--multirun", *TINY, "seed=1,2,3",
        *stack.overrides("claims"), *isolated(tmp_path),
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    store = stack.store("claims")
    children = tracking.find_runs(store, {SWEEP_ROLE: CHILD})
    assert sorted(r.params["seed"] for r in children) == ["1", "2", "3"]
    assert {r.status for r in children} == {"FINISHED"}
    assert "marked KILLED" not in " ".join(outputs)
    (parent,) = tracking.find_runs(store, {SWEEP_ROLE: PARENT})
    assert parent.status == "FINISHED" and parent.tags["sweep.count.finished"] == "3"
