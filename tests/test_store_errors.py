"""A store that cannot be used is one line that says what to do, at once, and nothing is changed:
a corrupted `mlflow.db`, a relative sqlite path, a UI port already taken."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import vaelab
from tests.conftest import TINY, free_port
from vaelab.edges import network, tracking, ui
from vaelab.vocab.errors import TrackingError


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root and a hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def garbage(db: Path) -> None:
    db.write_bytes(os.urandom(20_000))


def truncated(db: Path) -> None:
    """A real store cut short (a full disk, a copy interrupted): its header is intact."""
    tracking.open_store(f"sqlite:///{db}", "vaelab")
    whole = db.read_bytes()
    for journal in db.parent.glob("mlflow.db*"):
        journal.unlink()
    db.write_bytes(whole[: len(whole) // 3])


@pytest.mark.parametrize("damage", [garbage, truncated])
@pytest.mark.parametrize("script", ["train.py", "report.py"])
def test_a_corrupted_store_is_one_line_at_once_and_left_untouched(
    run_app, tmp_path, script, damage
):
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    damage(db)
    before = snapshot(db.parent)
    started = time.monotonic()
    result = run_app(script, *(TINY if script == "train.py" else []))
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: the run store {db} is corrupted or no database at all"), line
    assert "move it aside" in line and "backup" in line
    assert snapshot(db.parent) == before  # not a byte, not a lock file, not a journal
    assert elapsed < 20, elapsed  # no seconds of MLflow's retries (the data load is in it)


def test_the_api_reads_a_corrupted_store_as_one_error(tmp_path):
    db = tmp_path / "mlflow.db"
    garbage(db)
    with pytest.raises(TrackingError, match="is corrupted or no database at all"):
        vaelab.runs(store=f"sqlite:///{db}")


def test_a_database_of_something_else_is_named_so(tmp_path):
    import sqlite3

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
    with pytest.raises(TrackingError, match="is a database, but not an MLflow store"):
        tracking.open_store(f"sqlite:///{db}", "vaelab")


@pytest.mark.parametrize("uri", ["sqlite:///rel/mlflow.db", "sqlite://rel.db", "file:mlruns"])
def test_a_relative_store_path_is_refused_in_one_line(uri, run_app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TrackingError, match="is not an absolute path"):
        tracking.open_store(uri, "vaelab")
    result = run_app("report.py", f"tracking.uri={uri}")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: tracking.uri={uri} is not an absolute path"), line
    assert not any(p.name.startswith(("rel", "mlruns")) for p in tmp_path.iterdir())


@pytest.fixture
def listener():
    """A service already listening on a port, on every interface (as a shared service does)."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_port_taken_on_any_interface_is_taken_for_every_host(listener):
    assert network.port_taken("127.0.0.1", listener)
    assert network.port_taken("0.0.0.0", listener)
    assert not network.port_taken("127.0.0.1", free_port())


def test_make_ui_on_a_busy_port_is_refused_in_one_line_and_records_nothing(listener, tmp_path):
    url_file = tmp_path / "mlruns" / "ui_url.txt"
    command = [sys.executable, "-m", "vaelab.edges.ui", "--port", str(listener)]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path}/mlruns/mlflow.db"]
    try:
        refused = subprocess.run(
            [*command, "--url-file", str(url_file)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the UI started on the busy port {listener}") from None
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"Error: PORT={listener} on 127.0.0.1 is already in use"), line
    assert "make ui PORT=" in line
    assert not url_file.exists() and not (tmp_path / "mlruns").exists()


class _Health(http.server.BaseHTTPRequestHandler):
    answer = b"OK"

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def service():
    """A local HTTP service (a UI's stand-in) and its address; `_Health.answer` is its reply."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_the_address_is_recorded_once_the_ui_answers(service, tmp_path):
    url_file = tmp_path / "ui_url.txt"
    assert ui.announce_when_up(os.getpid(), service, str(url_file), service, "", timeout_s=10)
    assert url_file.read_text() == service + "\n"


def test_nothing_is_recorded_for_a_ui_that_ended_or_another_service(service, tmp_path, monkeypatch):
    url_file = tmp_path / "ui_url.txt"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    started = time.monotonic()
    assert not ui.announce_when_up(ended.pid, service, str(url_file), service, "", timeout_s=30)
    assert time.monotonic() - started < 5  # gives up as soon as the UI's process is gone
    monkeypatch.setattr(_Health, "answer", b"<html>another service</html>")
    assert not ui.announce_when_up(os.getpid(), service, str(url_file), service, "", timeout_s=1)
    assert not url_file.exists()
