"""`mlflow server` on the store's database: started detached, found by its pid file, stopped.

Workers reach the store only through the server (`tracking=server tracking.uri=http://host:5000`):
the server alone holds the database's password, and it proxies artifacts (`--serve-artifacts`)
into one directory, so a worker needs neither a database driver nor a shared disk for the store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from vaelab.edges import telemetry
from vaelab.edges.network import START_TIMEOUT_S, is_running, port_taken, reachable
from vaelab.edges.private import PRIVATE_UMASK
from vaelab.vocab.errors import ServerError
from vaelab_server.auth import auth_env
from vaelab_server.layout import Layout, open_private, private_dir, write_private

STOP_TIMEOUT_S = 30
# SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the pinned driver is psycopg2.
DRIVER = "postgresql+psycopg2"
# GenAI job runners (several processes) that a store of training runs never uses.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _pid(layout: Layout) -> int | None:
    """The running server's process id (its process group's), from the pid file."""
    path = layout.file("mlflow.pid")
    if not path.exists():
        return None
    pid = int(path.read_text())
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        command = b"mlflow" if is_running(pid) else b""
    if b"mlflow" in command and is_running(pid):
        return pid
    # The CLI that led the group has gone, but its workers may still serve the port.
    return pid if _group_alive(pid) else None


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs (the CLI, uvicorn, its workers)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def start_server(
    layout: Layout,
    database_uri: str,
    password: str | None,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 4,
    auth: bool = False,
    default_permission: str = "READ",
    allowed_hosts: str | None = None,
    artifacts: str | None = None,
) -> str:
    """`mlflow server` on the database, proxying artifacts, detached; its URL once it answers.

    Artifacts go to `artifacts` (a directory or an object-store URI such as s3://bucket/path),
    by default the layout's own directory. The server runs with umask 077, so that what it
    creates (basic_auth.db with its users' password hashes, every artifact) is its owner's only.
    """
    url = f"http://{reachable(host)}:{port}"
    private_dir(layout.server_dir)
    if _pid(layout) is not None:
        return layout.file("url").read_text().strip()
    if port_taken(host, port):
        raise ServerError(
            f"PORT={port} on {host} is already in use: stop what listens there (make "
            "server-stop, if it is this store's server) or choose another PORT"
        )
    if artifacts is None:
        private_dir(layout.artifacts)
        artifacts = str(layout.artifacts)
    env = telemetry.off_unless_opted_in({**os.environ, **SERVER_ENV})
    env.update({"PGPASSWORD": password} if password else {})
    env.update(auth_env(layout, default_permission) if auth else {})
    scheme = urlsplit(database_uri).scheme
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", database_uri.replace(f"{scheme}://", f"{DRIVER}://", 1)),
        *("--serve-artifacts", "--artifacts-destination", artifacts),
        *("--host", host, "--port", str(port), "--workers", str(workers)),
        *(("--app-name", "basic-auth") if auth else ()),
        *(("--allowed-hosts", allowed_hosts) if allowed_hosts else ()),
    ]
    log = layout.file("mlflow.log")
    with os.fdopen(open_private(log, os.O_APPEND), "ab") as output:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=layout.server_dir,
            start_new_session=True,  # outlives `make server`; stopped as one process group
            umask=PRIVATE_UMASK,
        )
    write_private(layout.file("mlflow.pid"), str(process.pid))
    try:
        _wait_until_up(process, url, log, layout)
        write_private(layout.file("url"), url)
        write_private(layout.file("artifacts_destination"), artifacts)
    except BaseException:  # a server nobody would know to stop: stop it now
        stop_server(layout)
        raise
    return url


def _wait_until_up(process: subprocess.Popen, url: str, log: Path, layout: Layout) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:].strip()
            raise ServerError(f"mlflow server exited ({process.returncode}); {log} ends:\n{tail}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except urllib.error.HTTPError:  # it answers (a Host header check may refuse the probe)
            return
        except OSError:
            time.sleep(0.25)
    stop_server(layout)
    raise ServerError(f"mlflow server did not answer at {url} in {START_TIMEOUT_S} s; see {log}")


def stop_server(layout: Layout) -> bool:
    """Stop the server's whole process group (SIGTERM, then SIGKILL); False if none ran."""
    pid = _pid(layout)
    layout.file("mlflow.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (is_running(pid) or _group_alive(pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True
