"""Who can reach a UI or a server: `make ui` keeps the login-less local store on this machine
unless the user opens it on purpose, and `make server` says when anyone may write."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port, listening
from vaelab.edges import network, ui
from vaelab_server.auth import auth_summary
from vaelab_server.layout import Layout

LOOPBACK = ["127.0.0.1", "localhost", "::1", "127.0.0.2"]
SHARED = ["0.0.0.0", "::", "192.168.1.20", "mlflow.lab"]
# The refusal happens before MLflow is imported: a UI that starts instead takes seconds.
REFUSED_WITHIN_S = 30


def test_make_ui_on_every_interface_is_refused_in_one_line_before_anything_listens(tmp_path):
    port = free_port()
    make = subprocess.Popen(
        ["make", "ui", "HOST=0.0.0.0", f"PORT={port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "VAELAB_HOME": str(tmp_path)},
        start_new_session=True,  # so that a UI it started anyway is stopped with it
    )
    started = time.monotonic()
    try:
        _, stderr = make.communicate(timeout=REFUSED_WITHIN_S)
    except subprocess.TimeoutExpired:
        serving = listening("127.0.0.1", port)
        os.killpg(make.pid, signal.SIGKILL)
        make.communicate()
        raise AssertionError(f"make ui HOST=0.0.0.0 ran on; serving on {port}: {serving}") from None
    assert time.monotonic() - started < 10
    # Our one line, then make's own note that the recipe exited 1 (make itself exits 2).
    ours, make_note = stderr.splitlines()
    assert re.match(r"make(\[\d+\])?: \*\*\* ", make_note) and make_note.endswith("ui] Error 1"), (
        stderr
    )
    assert make.returncode == 2
    assert ours.startswith("Error: HOST=0.0.0.0 would open the local run store"), ours
    assert "`make server HOST=0.0.0.0 AUTH=1`" in ours and "OPEN=1" in ours
    assert not listening("127.0.0.1", port)
    assert not (tmp_path / "mlruns").exists()  # not even the UI's address was recorded


@pytest.mark.parametrize("host", SHARED)
def test_the_module_refuses_any_other_host_with_one_line_and_exit_1(host, tmp_path):
    url_file = tmp_path / "ui_url.txt"
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaelab.edges.ui",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/s.db",
        ]
        + ["--host", host, "--port", str(free_port()), "--url-file", str(url_file)],
        capture_output=True,
        text=True,
        timeout=REFUSED_WITHIN_S,
        check=False,
    )
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith(f"Error: HOST={host} would open") and "OPEN=1" in line
    assert not url_file.exists()


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_needs_no_permission(host):
    assert ui.refusal(host, open_=False) is None


@pytest.mark.parametrize("host", SHARED)
def test_any_other_host_needs_open(host):
    assert ui.refusal(host, open_=False) is not None
    assert ui.refusal(host, open_=True) is None


class Exec(Exception):
    """Raised instead of becoming `mlflow ui`, so that no UI is left running."""


@pytest.mark.parametrize(
    ("options", "url"),
    [
        (["--host", "127.0.0.1", "--port", "5000"], "http://127.0.0.1:5000"),
        (["--host", "::1", "--port", "5001"], "http://[::1]:5001"),
        (["--host", "0.0.0.0", "--port", "5002", "--open"], "http://0.0.0.0:5002"),
    ],
)
def test_an_allowed_host_records_its_address_once_it_listens_and_becomes_mlflow_ui(
    options, url, tmp_path, monkeypatch
):
    executed: list[list[str]] = []
    announced, masks = [], []

    def execv(path: str, argv: list[str]) -> None:
        executed.append([path, *argv])
        raise Exec

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(ui, "_announce", lambda *arguments: announced.append(arguments))
    monkeypatch.setattr(os, "umask", lambda mask: masks.append(mask) or 0o022)
    monkeypatch.setattr(network, "port_taken", lambda host, port: False)  # tests/test_store_errors
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    url_file = tmp_path / "mlruns" / "ui_url.txt"
    with pytest.raises(Exec):
        ui.main(["--backend-store-uri", store, *options, "--url-file", str(url_file)])
    # Recorded by the process that waits for the UI to answer, not before it listens.
    assert not url_file.exists()
    ((probe, recorded_in, recorded, browse),) = announced
    assert (recorded_in, recorded, browse) == (url_file, url, None)
    assert probe == url.replace("0.0.0.0", "127.0.0.1")
    assert masks == [0o077]  # what `mlflow ui` creates is private
    host, port = options[1], options[3]
    ui_command = ["-m", "mlflow", "ui", "--backend-store-uri", store, "--host", host]
    assert executed == [[sys.executable, sys.executable, *ui_command, "--port", port]]


@pytest.mark.parametrize(("setting", "opened"), [("OPEN=1", True), ("OPEN=0", False)])
def test_make_passes_open_only_for_open_1(setting, opened):
    dry_run = subprocess.run(
        ["make", "-n", "ui", "HOST=0.0.0.0", setting],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-m vaelab.edges.ui" in dry_run.stdout
    assert ("--open" in dry_run.stdout) == opened


def test_the_check_imports_no_mlflow():
    """The refusal must be instant: MLflow is imported only by `mlflow ui` after the exec."""
    probe = "import sys, vaelab.edges.ui; print(sorted(m for m in sys.modules if 'mlflow' in m))"
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert imported.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("host", "auth", "warned"),
    [("0.0.0.0", False, True), ("mlflow.lab", False, True), ("0.0.0.0", True, False)]
    + [(host, False, False) for host in LOOPBACK],
)
def test_the_server_warns_when_anyone_on_the_network_may_write(host, auth, warned):
    summary = auth_summary(Layout.under(Path("/state")), host, auth)
    assert ("anyone who reaches this host can read and write runs" in summary) == warned
    assert summary.startswith("user admin, password in /state/server/") == auth
