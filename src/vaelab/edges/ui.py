"""`make ui`: MLflow's UI on the local run store, for this machine unless the user says otherwise.

    make ui                          # python -m vaelab.edges.ui: http://127.0.0.1:5000
    make ui HOST=0.0.0.0 OPEN=1      # every interface, no logins: on purpose only

The local store has no logins: whoever reaches the UI can write and delete runs. So a host
other than loopback is refused, in one line and before anything listens, unless `--open`
(OPEN=1) says the user means it; a store shared with logins is `make server AUTH=1`. The check
imports nothing heavy; once it passes, this process becomes `mlflow ui` (exec), so Ctrl-C and
signals reach the UI as they did when make ran it directly.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vaelab.edges.server import is_loopback


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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if reason := refusal(args.host, args.open):
        print(f"Error: {reason}", file=sys.stderr)
        raise SystemExit(1)
    if args.url_file:
        args.url_file.parent.mkdir(parents=True, exist_ok=True)
        args.url_file.write_text(ui_url(args.host, args.port) + "\n")
    command = mlflow_ui_command(args.backend_store_uri, args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
