"""Every store vaelab opens is its owner's only, whoever made it first: a store MLflow created
readable by all (`mlflow ui` before any training) is tightened when vaelab opens it, and
`make ui` itself creates a new store private."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, free_port, mode, umask
from vaelab.edges import network, tracking, ui


def test_a_store_mlflow_made_readable_by_all_is_private_once_vaelab_opens_it(tmp_path):
    root = tmp_path / "mlruns"
    uri = f"sqlite:///{root}/mlflow.db"
    with umask(0o022):  # what `mlflow ui` does on a fresh machine
        MlflowClient(uri).search_experiments()
        assert mode(root / "mlflow.db") == 0o644 and mode(root) == 0o755
        store = tracking.open_store(uri, "vaelab")
        run = tracking.create_run(store, "r", {})
        run.log_text("kept\n", "note.txt")
        run.end("FINISHED")
    assert mode(root / "mlflow.db") == 0o600
    journals = [p for p in root.iterdir() if p.name.startswith("mlflow.db")]
    assert {p.name for p in journals} >= {"mlflow.db-wal", "mlflow.db-shm", "mlflow.db.lock"}
    assert all(mode(p) == 0o600 for p in journals), {p.name: oct(mode(p)) for p in journals}
    # Artifacts MLflow adds later (at 0755) sit in a root that only the owner can enter.
    assert mode(root / "artifacts") == 0o700
    (note,) = (root / "artifacts").rglob("note.txt")
    assert note.read_text() == "kept\n"


def test_make_ui_tightens_a_store_it_serves_and_readies_a_private_folder_for_a_new_one(tmp_path):
    existing = tmp_path / "old" / "mlflow.db"
    with umask(0o022):
        MlflowClient(f"sqlite:///{existing}").search_experiments()
        assert ui.prepare_store(f"sqlite:///{existing}") is None
        fresh = tmp_path / "new" / "mlruns" / "mlflow.db"
        assert ui.prepare_store(f"sqlite:///{fresh}") is None
    assert mode(existing) == 0o600
    assert mode(fresh.parent) == 0o700 and not fresh.exists()  # MLflow makes it, under 077


def test_what_belongs_to_a_shared_folder_is_left_as_it_is(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # sticky, as /tmp: artifact_root=/tmp must not close /tmp to all
    tracking.open_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "vaelab", str(shared))
    assert mode(shared) == 0o1777


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode().split("=", 1) for entry in raw if b"=" in entry)


def _mlflow_ui_of(group: int) -> list[int]:
    """The `mlflow ui` process of a process group (what `python -m vaelab.edges.ui` became)."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            command = (entry / "cmdline").read_bytes()
            if os.getpgid(int(entry.name)) == group and b"mlflow\0ui\0" in command:
                found.append(int(entry.name))
    return found


@pytest.mark.long
def test_make_ui_on_a_fresh_home_serves_a_private_store_and_records_it_once_it_listens(tmp_path):
    port = free_port()
    url_file = tmp_path / "mlruns" / "ui_url.txt"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_DISABLE_TELEMETRY"}  # no choice
    make = subprocess.Popen(
        ["make", "ui", f"PORT={port}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**env, "VAELAB_HOME": str(tmp_path)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + network.START_TIMEOUT_S
        while not url_file.exists() and make.poll() is None and time.monotonic() < deadline:
            time.sleep(0.25)
        recorded = url_file.read_text().strip()
        assert recorded == f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{recorded}/health", timeout=5) as answer:
            assert answer.read().strip() == b"OK"  # recorded only once the UI answers
        store = tmp_path / "mlruns" / "mlflow.db"
        assert mode(store) == 0o600 and mode(store.parent) == 0o700
        assert mode(url_file) == 0o600
        (pid,) = _mlflow_ui_of(make.pid)
        assert _environ(pid)["MLFLOW_DISABLE_TELEMETRY"] == "true"
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
