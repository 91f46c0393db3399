"""`make ui`: MLflow's UI on the local run store, for this machine unless the user says otherwise.

    make ui                          # python -m vaelab.edges.ui: http://127.0.0.1:5000
    make ui BROWSE=1                 # and open the runs table in a browser once it listens
    make ui HOST=0.0.0.0 OPEN=1      # every interface, no logins: on purpose only

MLflow 3.17's UI opens its GenAI views at the plain address and at an experiment's page,
whatever the experiment's `mlflow.experimentKind` tag says (the UI keeps the choice in the
browser's storage, GenAI until the user picks "Model training" in the sidebar once); no
server option changes that. Only an address that asks for the training view
(`?workflowType=machine_learning`) opens the runs table, so that is the address printed
first (and opened, with BROWSE=1).

The local store has no logins: whoever reaches the UI can write and delete runs. So a host
other than loopback is refused, in one line and before anything listens, unless `--open`
(OPEN=1) says the user means it; a store shared with logins is `make server AUTH=1`. A port
already taken is refused the same way (MLflow would print "Address already in use" and exit 0).
The checks import nothing heavy; once they pass, the store is made private (umask 077 for what
MLflow creates, `store_files.make_private` for what is there), MLflow's telemetry is turned
off unless the user opted in (`telemetry`), and this process becomes `mlflow ui` (exec), so
Ctrl-C and signals reach the UI as they did when make ran it directly. A small process of its
own waits until that UI answers, and only then records its address for reports (`--url-file`)
and opens the browser: a UI that never listened is never linked to.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
import webbrowser
from pathlib import Path
from urllib.parse import urlsplit

from vaelab.edges import network, telemetry
from vaelab.edges.network import is_loopback
from vaelab.edges.private import PRIVATE_DIR, PRIVATE_UMASK


def refusal(host: str, open_: bool) -> str | None:
    """Why the UI must not listen on `host`, or None when it may."""
    if is_loopback(host) or open_:
        return None
    return (
        f"HOST={host} would open the local run store to anyone who reaches this host, with no "
        "logins (they could write and delete runs): for a shared store with logins use "
        f"`make server HOST={host} AUTH=1`, or add OPEN=1 to share this one without logins "
        "on purpose"
    )


def ui_url(host: str, port: int) -> str:
    """The UI's address as a browser writes it (an IPv6 address in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# What makes MLflow's UI open an experiment on its runs table rather than its GenAI views.
ML_VIEW = "workflowType=machine_learning"


def runs_table_url(ui_url: str, experiment_id: str | None) -> str:
    """The experiment's runs table (the experiments list when its id is not known yet)."""
    if experiment_id is None:
        return f"{ui_url}/#/experiments?{ML_VIEW}"
    return f"{ui_url}/#/experiments/{experiment_id}?{ML_VIEW}"


def run_url(ui_url: str, experiment_id: str, run_id: str) -> str:
    """A run's page, in the training view (see ML_VIEW)."""
    return f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"


def server_ui_url(store_uri: str) -> str | None:
    """The UI of a store an `mlflow server` serves: that server's address; None otherwise.

    The server serves its UI where its clients send their runs (tracking=server); a local
    sqlite store has a UI only while `make ui` serves one.
    """
    if urlsplit(store_uri).scheme in ("http", "https"):
        return store_uri.rstrip("/")
    return None


def browse_hint(store_uri: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """Where a user browses a store's runs, or one run's page.

    On the server that holds them; for a local store, the command that serves a UI on it.
    """
    served = server_ui_url(store_uri)
    if served is None:
        return "make ui"
    if run_id is not None and experiment_id is not None:
        return run_url(served, experiment_id, run_id)
    return runs_table_url(served, experiment_id)


def busy(host: str, port: int) -> str | None:
    """Why the UI cannot listen on `port`: something else does already; None when it is free."""
    if not network.port_taken(host, port):
        return None
    spare = next((p for p in range(port + 1, port + 50) if not network.port_taken(host, p)), None)
    return (
        f"PORT={port} on {host} is already in use (another `make ui`, or another service): "
        "stop what listens there, or choose another port"
        + (f", e.g. make ui PORT={spare}" if spare else "")
    )


def prepare_store(uri: str) -> str | None:
    """The local store made private before MLflow opens it; why it cannot be served, or None.

    MLflow would create a missing store with the process's umask (readable by all under
    022), and serve a corrupted file with pages of traceback.
    """
    from vaelab.edges import mlflow_tables, store_files

    db = mlflow_tables.sqlite_file(uri)
    if db is None:
        return None
    try:
        store_files.has_store(db)
    except store_files.NotAStore as error:
        return f"the run store {db} {error}: move it aside or restore it from a backup"
    db.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    store_files.make_private(db, None)
    return None


def announce_when_up(
    pid: int, probe: str, url_file: str, url: str, browse: str,
    timeout_s: float = network.START_TIMEOUT_S,
) -> bool:  # fmt: skip
    """Once the UI that process `pid` serves answers at `probe`: record `url`, open `browse`.

    Run in a process of its own (`_announce`), since the UI's process becomes `mlflow ui`.
    MLflow answers `/health` with OK; while it does not, or once `pid` has ended (the port was
    taken after all), nothing is recorded, so a report never links to another service.
    Empty strings: nothing to record, no browser.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and network.is_running(pid):
        try:
            with urllib.request.urlopen(f"{probe}/health", timeout=1) as answer:
                healthy = answer.read().strip() == b"OK"
        except OSError:
            healthy = False
        if healthy and network.is_running(pid):
            if url_file:
                Path(url_file).write_text(url + "\n")
            if browse:
                webbrowser.open(browse)
            return True
        time.sleep(0.25)
    return False


_ANNOUNCE = (
    "import sys; from vaelab.edges.ui import announce_when_up; "
    "announce_when_up(int(sys.argv[1]), *sys.argv[2:])"
)


def _announce(probe: str, url_file: Path | None, url: str, browse: str | None) -> None:
    """Start the process that waits for this one's UI (`announce_when_up`)."""
    arguments = [str(os.getpid()), probe, str(url_file or ""), url, browse or ""]
    subprocess.Popen(
        [sys.executable, "-c", _ANNOUNCE, *arguments],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C stops the UI; this one ends when the UI does
    )


def mlflow_ui_command(store: str, host: str, port: int) -> list[str]:
    return [
        *(sys.executable, "-m", "mlflow", "ui"),
        *("--backend-store-uri", store, "--host", host, "--port", str(port)),
    ]


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelab.edges.ui", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--backend-store-uri", required=True, help="the run store (sqlite:///...)")
    parser.add_argument("--url-file", type=Path, help="where the report finds the UI's address")
    parser.add_argument("--open", action="store_true", help="allow any host, with no logins")
    parser.add_argument("--experiment", default="vaelab", help="the experiment whose runs to show")
    parser.add_argument("--browse", action="store_true", help="open the runs table in a browser")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if reason := refusal(args.host, args.open) or busy(args.host, args.port):
        print(f"Error: {reason}", file=sys.stderr)
        raise SystemExit(1)
    os.umask(PRIVATE_UMASK)  # what `mlflow ui` creates: a new store, its journals
    if reason := prepare_store(args.backend_store_uri):
        print(f"Error: {reason}", file=sys.stderr)
        raise SystemExit(1)
    telemetry.off_unless_opted_in(os.environ)  # `mlflow ui` inherits the environment
    from vaelab.edges.mlflow_tables import experiment_id

    address = runs_table_url(
        ui_url(args.host, args.port), experiment_id(args.backend_store_uri, args.experiment)
    )
    print(f"The runs table (MLflow's plain address opens its GenAI views): {address}", flush=True)
    if args.url_file or args.browse:
        if args.url_file:
            args.url_file.parent.mkdir(parents=True, exist_ok=True)
        probe = ui_url(network.reachable(args.host), args.port)
        browse = address if args.browse else None
        _announce(probe, args.url_file, ui_url(args.host, args.port), browse)
    command = mlflow_ui_command(args.backend_store_uri, args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
