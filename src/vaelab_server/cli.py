"""The team's run store on one host: PostgreSQL holds the runs, `mlflow server` serves them.

    make server              # python -m vaelab_server start: http://127.0.0.1:5000
    make server AUTH=1       # the same behind MLflow's basic-auth app
    make server-stop         # python -m vaelab_server stop

Workers reach the store only through the server (`tracking=server tracking.uri=http://host:5000`):
the server alone holds the database's password, and it proxies artifacts (`--serve-artifacts`)
into one directory, so a worker needs neither a database driver nor a shared disk for the store.
Everything lives under one directory (`mlruns/` of the checkout): `postgres/` the cluster,
created on first use and listening on 127.0.0.1 only (under root, when the account `postgres`
cannot enter the checkout, a link to the cluster in that account's home); `server/` the
server's pid, log, artifacts, users and the secrets generated for it. All of it is its owner's
only (directories 0700, files 0600) whatever the umask: users' password hashes, artifacts and
secrets are no one else's to read. docs/team.md: the same on a shared host.
"""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from vaelab.edges.cli import user_errors
from vaelab_server.auth import auth_summary
from vaelab_server.layout import Layout
from vaelab_server.stack import start, stop


def _worker_url(host: str, port: int) -> str:
    return f"http://{socket.getfqdn() if host == '0.0.0.0' else host}:{port}"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelab_server", description=__doc__)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--state-dir", type=Path, default=Path("mlruns"))
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0: every interface")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--db-port", type=int, default=5433, help="the local cluster's port")
    parser.add_argument(
        "--database-uri",
        default=os.environ.get("DATABASE_URI") or None,
        help="an existing PostgreSQL instead of the cluster (default: $DATABASE_URI, which "
        "keeps a password in it out of the process list)",
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--auth", action="store_true", help="MLflow's basic-auth app")
    parser.add_argument("--default-permission", default="READ", help="with --auth")
    parser.add_argument("--allowed-hosts", help="Host headers to accept beyond private IPs")
    parser.add_argument("--artifacts", help="where the server keeps artifacts (dir or s3://...)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    layout = Layout.under(args.state_dir.resolve())
    with user_errors():
        if args.action == "stop":
            print(f"Stopped: {', '.join(stop(layout)) or 'nothing was running'}")
            return
        url, database = start(
            layout,
            args.host,
            args.port,
            args.db_port,
            args.database_uri,
            workers=args.workers,
            auth=args.auth,
            default_permission=args.default_permission,
            allowed_hosts=args.allowed_hosts,
            artifacts=args.artifacts,
        )
    print(
        f"MLflow server at {url} (log {layout.file('mlflow.log')})\n"
        f"  runs:      {database}\n"
        f"  artifacts: {layout.file('artifacts_destination').read_text()} (proxied by the server)\n"
        f"  auth:      {auth_summary(layout, args.host, args.auth)}\n"
        "Train into it:\n"
        "  python pipelines/train.py tracking=server "
        f"tracking.uri={_worker_url(args.host, args.port)}\n"
        "Stop it: make server-stop"
    )
