"""The team store when things go wrong: the server stopped mid-sweep, logins, bad settings."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, TINY, free_port, isolated
from vaelab.edges import tracking
from vaelab.rules.lifecycle.children import children_of
from vaelab.vocab.tags import PARENT, SWEEP_ID, SWEEP_ROLE
from vaelab_server import stack as team
from vaelab_server.auth import ADMIN
from vaelab_server.cluster import DB_ROLE
from vaelab_server.mlflow_server import stop_server

pytestmark = pytest.mark.server

SEEDS = "seed=1,2,3"
# Enough epochs that a run is still writing when the server goes away.
SLOW = ["train.epochs=8", "data.train_limit=2048"]


def launch(stack, tmp_path, experiment: str, *extra: str, **env: str) -> subprocess.Popen:
    """The sweep as a user starts it: its own process, writing through the server."""
    command = [
        *(sys.executable, str(REPO / "pipelines" / "train.py"), "--multirun"),
        *TINY,
        *SLOW,
        SEEDS,
        *stack.overrides(experiment),
        *isolated(tmp_path),
        *extra,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


def wait_for_a_finished_child(stack, experiment: str, timeout: float = 180) -> None:
    client = MlflowClient(stack.url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = client.get_experiment_by_name(experiment)
        if found and client.search_runs(
            [found.experiment_id],
            f"tags.`{SWEEP_ROLE}` = 'child' and attributes.status = 'FINISHED'",
        ):
            return
        time.sleep(0.2)
    raise AssertionError(f"no run of the sweep finished in {timeout} s")


def sweep_children(stack, experiment: str) -> list[tracking.RunRecord]:
    store = stack.store(experiment)
    (parent,) = tracking.find_runs(store, {SWEEP_ROLE: PARENT})
    return children_of(store, parent.tags[SWEEP_ID])


def restart(stack) -> None:
    team.start(stack.layout, **stack.options)


def test_a_short_outage_is_ridden_out_by_retries(own_stack, tmp_path):
    sweep = launch(own_stack, tmp_path, "outage")
    wait_for_a_finished_child(own_stack, "outage")
    assert stop_server(own_stack.layout)
    time.sleep(3)
    restart(own_stack)  # the database kept everything; the server is back on its port
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, output[-3000:]
    children = sweep_children(own_stack, "outage")
    assert sorted(r.status for r in children) == ["FINISHED"] * 3
    for run in children:  # every epoch reached the store, none twice
        history = tracking.metric_history(own_stack.store("outage"), run.run_id, "val/total")
        assert [step for step, _ in history] == list(range(1, 9))


def test_a_long_outage_ends_the_sweep_clearly_and_a_relaunch_does_only_what_is_missing(
    own_stack, tmp_path
):
    # No retries: the outage outlasts the client's patience at once.
    sweep = launch(own_stack, tmp_path, "down", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
    wait_for_a_finished_child(own_stack, "down")
    assert stop_server(own_stack.layout)
    started = time.monotonic()
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode != 0
    assert time.monotonic() - started < 60, "the sweep hung on a server that is gone"
    assert f"tracking.uri={own_stack.url}" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]

    restart(own_stack)
    before = sweep_children(own_stack, "down")
    # The next job met the outage as it opened the store, before it created a run (the line
    # above, naming tracking.uri, is that refusal), and the sweep stopped there: the store
    # holds finished runs only. Nothing could have recorded a FAILED or KILLED end while the
    # server was down, and a run left RUNNING would still look alive to the relaunch below.
    assert [r.status for r in before] == ["FINISHED"] * len(before), before
    finished = {r.run_id for r in before}
    assert 1 <= len(finished) < 3

    again = launch(own_stack, tmp_path, "down")
    output, _ = again.communicate(timeout=300)
    assert again.returncode == 0, output[-3000:]
    after = sweep_children(own_stack, "down")
    now_finished = {r.run_id for r in after if r.status == "FINISHED"}
    assert finished <= now_finished and len(now_finished) == 3  # the finished ones kept as is
    assert len(after) == len(before) + 3 - len(finished)  # only what was missing was trained
    assert "RUNNING" not in {r.status for r in after}


def test_logins_are_required_checked_and_never_recorded(serve, run_app, monkeypatch):
    from mlflow.server.auth.client import AuthServiceClient  # the server's package: only here

    stack = serve("auth", auth=True)
    admin_password = stack.layout.file("admin_password").read_text().strip()
    overrides = [*TINY, *stack.overrides("team")]
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)

    anonymous = run_app("train.py", *overrides)
    assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
    assert "requires a login: set MLFLOW_TRACKING_USERNAME" in anonymous.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    admitted = run_app("train.py", *overrides)
    assert admitted.returncode == 0, admitted.stderr[-3000:]
    store = stack.store("team")
    (run,) = tracking.find_runs(store, {}, status="FINISHED")
    recorded = [*run.params.values(), *run.tags.values()]
    recorded.append(tracking.read_text_artifact(store, run.run_id, "config.yaml"))
    recorded.append(tracking.read_text_artifact(store, run.run_id, "run.log"))
    assert not any(admin_password in text for text in recorded)
    assert run.tags["mlflow.user"] == ADMIN  # the login, not this machine's user
    assert run.tags["mlflow.source.name"].endswith("train.py")

    AuthServiceClient(stack.url).create_user("reader", "reader-password-1")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reader")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-password-1")
    reader = run_app("train.py", *overrides)
    assert reader.returncode == 1, reader.stderr[-3000:]
    assert "user 'reader' lacks permission on experiment 'team'" in reader.stderr
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    wrong = run_app("train.py", *overrides)
    assert wrong.returncode == 1
    assert "refused the login of user 'reader'" in wrong.stderr

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    assert len(tracking.find_runs(store, {})) == 1  # the refused attempts wrote nothing


def test_a_wrong_database_password_is_one_clear_error(cluster, tmp_path):
    port = int((cluster.pgdata / "postmaster.pid").read_text().splitlines()[3])
    uri = f"postgresql://{DB_ROLE}:wrong-password@127.0.0.1:{port}/mlflow"
    started = subprocess.run(
        [sys.executable, "-m", "vaelab_server", "start", "--state-dir", str(tmp_path)]
        + ["--database-uri", uri, "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode == 1 and "Traceback" not in started.stderr
    (line,) = started.stderr.strip().splitlines()
    assert line.startswith(
        f"Error: cannot connect to the database DATABASE_URI=postgresql://{DB_ROLE}@"
    )
    assert "password authentication failed" in line and "wrong-password" not in line
    assert not (tmp_path / "server" / "mlflow.pid").exists()  # no server was started
