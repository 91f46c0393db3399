"""The team's run store on one host: PostgreSQL holds the runs, `mlflow server` serves them.

    make server              # python -m vaelab.edges.server start: http://127.0.0.1:5000
    make server AUTH=1       # the same behind MLflow's basic-auth app
    make server-stop         # python -m vaelab.edges.server stop

Workers reach the store only through the server (`tracking=server tracking.uri=http://host:5000`):
the server alone holds the database's password, and it proxies artifacts (`--serve-artifacts`)
into one directory, so a worker needs neither a database driver nor a shared disk for the store.
Everything lives under one directory (`mlruns/` of the checkout): `postgres/` the cluster,
created on first use and listening on 127.0.0.1 only (under root, when the account `postgres`
cannot enter the checkout, a link to the cluster in that account's home); `server/` the
server's pid, log, artifacts, users and the secrets generated for it. All of it is its owner's
only (directories 0700, files 0600) whatever the umask: users' password hashes, artifacts and
secrets are no one else's to read. The tests in tests/server/ start their throwaway stacks
with these same functions. docs/team.md: the same on a shared host.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import hashlib
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from vaelab.edges import telemetry
from vaelab.edges.private import PRIVATE_UMASK
from vaelab.vocab.errors import ServerError

DATABASE = "mlflow"
# The local cluster's only role; the server connects as it.
DB_ROLE = "vaelab"
ADMIN = "admin"
# PostgreSQL refuses to run as root: a root caller runs the cluster as this account, which
# Debian's postgresql package creates.
PG_ACCOUNT = "postgres"
# A root caller's cluster that `postgres` could not reach where the state dir is (a checkout
# under /root or a 0700 temporary folder) lives under that account's home, in this folder.
RELOCATED_CLUSTERS = "vaelab"
# Where Debian puts PostgreSQL's programs when they are not on PATH.
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
# A cold `mlflow server` imports MLflow once per process (CLI and workers), and a fresh database
# gets its schema: tens of seconds on a small loaded machine.
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
# SQLAlchemy 2.1 maps postgresql:// to psycopg 3; the pinned driver is psycopg2.
DRIVER = "postgresql+psycopg2"
# GenAI job runners (several processes) that a store of training runs never uses.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass(frozen=True)
class Layout:
    """Where one store keeps its state. Tests put the cluster where `postgres` can reach it."""

    server_dir: Path
    cluster_dir: Path

    @classmethod
    def under(cls, root: Path) -> Layout:
        return cls(root / "server", root / "postgres")

    @property
    def pgdata(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def db_password(self) -> Path:
        """The cluster role's password, generated with the cluster: read by its servers only."""
        return self.cluster_dir / "password"

    @property
    def artifacts(self) -> Path:
        return self.server_dir / "artifacts"

    def file(self, name: str) -> Path:
        """A file of the server's: mlflow.pid, mlflow.log, url, admin_password..."""
        return self.server_dir / name


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((reachable(host), port)) == 0


def port_taken(host: str, port: int) -> bool:
    """Whether a server could not listen on `host`:`port` now, something else listening there.

    Binding is the test, as the server will bind: it also sees a listener on every interface
    when `host` is one address, or on one address when `host` is every interface, which a
    connection to `host` would miss. A host that is not this machine's is left to the server.
    """
    try:
        (family, kind, proto, _, address), *_ = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return False
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn does: a port whose last connections are closing (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def reachable(host: str) -> str:
    """The address this host reaches a server bound to `host` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host` (localhost, 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def _open_private(path: Path, flags: int) -> int:
    """A file descriptor for writing a file only its owner can read, whatever the umask.

    The explicit chmod also tightens a file that an older version left readable to all.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _write_private(path: Path, text: str) -> None:
    with os.fdopen(_open_private(path, os.O_TRUNC), "w") as out:
        out.write(text)


def _private_dir(path: Path) -> None:
    """A directory only its owner can list or enter, created if missing."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def secret(path: Path) -> str:
    """A generated secret kept in a file only its owner can read, created on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(_open_private(path, os.O_EXCL), "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()


# -- PostgreSQL ----------------------------------------------------------------------------


def _pg_program(name: str) -> str:
    found = shutil.which(name) or next(
        (str(d / name) for d in PG_BIN_DIRS if (d / name).exists()), None
    )
    if found is None:
        raise ServerError(
            f"PostgreSQL's {name} was not found (PATH, /usr/lib/postgresql/*/bin): install it "
            "(Debian: apt-get install postgresql) or give an existing database with "
            "DATABASE_URI=postgresql://user@host:5432/mlflow"
        )
    return found


def _cluster_owner() -> pwd.struct_passwd | None:
    """The account the cluster runs as when the caller is root; None: the caller itself."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(PG_ACCOUNT)
    except KeyError:
        raise ServerError(
            f"PostgreSQL refuses to run as root and there is no '{PG_ACCOUNT}' account: run "
            "this as an ordinary user, or install the postgresql package, which creates it"
        ) from None


def _run_as(
    owner: pwd.struct_passwd | None, command: list[str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run a command as `owner` (None: the caller), with none of the caller's other groups."""
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        user=owner.pw_uid if owner else None,
        group=owner.pw_gid if owner else None,
        extra_groups=[] if owner else None,
    )


def _pg(layout: Layout, program: str, *args: str) -> subprocess.CompletedProcess:
    return _run_as(_cluster_owner(), [_pg_program(program), *args], layout.cluster_dir)


def _own(path: Path) -> None:
    if owner := _cluster_owner():
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _can_enter(owner: pwd.struct_passwd, directory: Path) -> bool:
    """Whether `owner`, run as `_pg` runs it, can reach `directory`.

    The kernel answers (`test -x` as that account), so every parent's mode and ACL counts.
    """
    return _run_as(owner, ["test", "-x", str(directory)]).returncode == 0


def _resolved(layout: Layout) -> Layout:
    """The layout with a relocated cluster's real directory: `postgres` cannot follow the link."""
    if layout.cluster_dir.is_symlink():
        return replace(layout, cluster_dir=layout.cluster_dir.resolve())
    return layout


def _placed(layout: Layout) -> Layout:
    """The layout with its cluster where the account that runs PostgreSQL can reach it.

    A root caller runs the cluster as `postgres`, which cannot pass a private parent (a
    checkout under /root, a 0700 temporary folder): initdb fails with "could not change
    directory". Such a cluster lives in a 0700 folder of that account's home, named after the
    state dir, and the state dir's `postgres` becomes a link to it, so that a restart and
    `make server-stop` find the same cluster. An existing cluster is never moved.
    """
    owner = _cluster_owner()
    link = layout.cluster_dir
    if owner is None or link.is_symlink() or (layout.pgdata / "PG_VERSION").exists():
        return _resolved(layout)
    link.parent.mkdir(parents=True, exist_ok=True)
    if _can_enter(owner, link.parent):
        return layout
    home = Path(owner.pw_dir) / RELOCATED_CLUSTERS
    place = home / _relocated_name(link)
    for directory in (home, place):
        _private_dir(directory)
        _own(directory)
    if link.is_dir():
        _adopt(link, place)
    link.symlink_to(place, target_is_directory=True)
    return replace(layout, cluster_dir=place)


def _relocated_name(link: Path) -> str:
    """A name that is the same on every start from one state dir, and differs between two."""
    path = link.resolve()
    readable = re.sub(r"[^\w.-]", "_", "-".join(path.parts[-3:-1]))
    return f"{readable}-{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"


def _adopt(leftover: Path, place: Path) -> None:
    """Move what a start that failed here left (its generated password) to the cluster's place.

    A file the place already has (an earlier cluster's own) wins: it is the one that works.
    """
    for entry in leftover.iterdir():
        if not (place / entry.name).exists():
            shutil.move(entry, place / entry.name)
    shutil.rmtree(leftover)


def _init_cluster(layout: Layout, password: str) -> None:
    """A new cluster: password authentication, listening on 127.0.0.1 only (no Unix socket)."""
    layout.cluster_dir.chmod(0o700)
    _own(layout.cluster_dir)
    password_file = layout.cluster_dir / "initdb-password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    _own(password_file)
    try:
        made = _pg(
            layout,
            "initdb",
            f"--pgdata={layout.pgdata}",
            f"--username={DB_ROLE}",
            f"--pwfile={password_file}",
            "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
        )
    finally:
        password_file.unlink()
    if made.returncode != 0:
        raise ServerError(f"initdb failed for {layout.pgdata}:\n{made.stderr.strip()[-2000:]}")
    # Only the mlflow server on this host connects; no socket path to fit in 107 characters.
    with open(layout.pgdata / "postgresql.conf", "a") as conf:
        conf.write("\n# vaelab\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")


def _cluster_port(layout: Layout) -> int | None:
    """The port of the running cluster, None when it is not running."""
    if not (layout.pgdata / "PG_VERSION").exists():
        return None
    if _pg(layout, "pg_ctl", "status", f"--pgdata={layout.pgdata}").returncode != 0:
        return None
    return int((layout.pgdata / "postmaster.pid").read_text().splitlines()[3])


def local_database_uri(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{DB_ROLE}@127.0.0.1:{port}/{database}"


def start_database(layout: Layout, port: int, database: str = DATABASE) -> str:
    """The local cluster, created on first use, running; the URI of a database (no password).

    A cluster already running keeps its port. Under root, one that `postgres` could not reach
    in the state dir lives under that account's home (`_placed`).
    """
    layout = _placed(layout)
    password = secret(layout.db_password)
    if not (layout.pgdata / "PG_VERSION").exists():
        _init_cluster(layout, password)
    running = _cluster_port(layout)
    if running is None:
        log = layout.cluster_dir / "postgres.log"
        started = _pg(
            layout,
            "pg_ctl",
            "start",
            f"--pgdata={layout.pgdata}",
            f"--log={log}",
            "--wait",
            "--timeout=60",
            f"--options=-p {port}",
        )
        if started.returncode != 0:
            tail = log.read_text()[-1500:] if log.exists() else started.stderr
            raise ServerError(f"PostgreSQL did not start on 127.0.0.1:{port}:\n{tail.strip()}")
        running = port
    uri = local_database_uri(running, database)
    create_database(uri, password)
    return uri


def stop_database(layout: Layout) -> bool:
    """Stop the local cluster (fast: open connections are closed); False if it was not running."""
    layout = _resolved(layout)
    if _cluster_port(layout) is None:
        return False
    stopped = _pg(layout, "pg_ctl", "stop", f"--pgdata={layout.pgdata}", "--mode=fast", "--wait")
    if stopped.returncode != 0:
        raise ServerError(f"PostgreSQL did not stop: {stopped.stderr.strip()}")
    return True


def split_password(uri: str) -> tuple[str, str | None]:
    """A database URI without its password, and the password (None: PGPASSWORD, ~/.pgpass)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc)), parts.password


def check_database(uri: str, password: str | None, setting: str = "DATABASE_URI") -> None:
    """Connect once, so that a wrong URI or password is one clear error, not a server crash loop."""
    import psycopg2

    scheme = urlsplit(uri).scheme
    if scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ServerError(
            f"{setting}={uri} is not a PostgreSQL URI: expected "
            "postgresql://user@host:5432/database"
        )
    dsn = uri.replace(f"{scheme}://", "postgresql://", 1)
    try:
        psycopg2.connect(dsn, connect_timeout=10, **({"password": password} if password else {}))
    except psycopg2.Error as error:
        reason = str(error).strip().splitlines()[-1].removeprefix("FATAL:").strip()
        raise ServerError(
            f"cannot connect to the database {setting}={uri}: {reason}. Fix the URI or its "
            "password (in the URI, PGPASSWORD or ~/.pgpass) and start again."
        ) from None


def create_database(uri: str, password: str) -> None:
    """Create the URI's database in its cluster when it is missing (the local cluster's role)."""
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(uri)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(admin, password=password, connect_timeout=10)
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


# -- mlflow server -------------------------------------------------------------------------


def _auth_env(layout: Layout, default_permission: str) -> dict[str, str]:
    """MLflow's basic-auth app: its users in sqlite beside the server, an admin made once."""
    config = layout.file("basic_auth.ini")
    _write_private(
        config,
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{layout.file('basic_auth.db')}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        # Read only when the admin does not exist yet (first start).
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret(layout.file("admin_password")),
        # CSRF tokens of the sign-up page must verify in every worker.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(layout.file("flask_secret_key")),
    }


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


def is_running(pid: int) -> bool:
    """Whether the process runs; one of this process's children (tests) is reaped once it ends."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


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
    _private_dir(layout.server_dir)
    if _pid(layout) is not None:
        return layout.file("url").read_text().strip()
    if port_taken(host, port):
        raise ServerError(
            f"PORT={port} on {host} is already in use: stop what listens there (make "
            "server-stop, if it is this store's server) or choose another PORT"
        )
    if artifacts is None:
        _private_dir(layout.artifacts)
        artifacts = str(layout.artifacts)
    env = telemetry.off_unless_opted_in({**os.environ, **SERVER_ENV})
    env.update({"PGPASSWORD": password} if password else {})
    env.update(_auth_env(layout, default_permission) if auth else {})
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
    with os.fdopen(_open_private(log, os.O_APPEND), "ab") as output:
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
    _write_private(layout.file("mlflow.pid"), str(process.pid))
    try:
        _wait_until_up(process, url, log, layout)
        _write_private(layout.file("url"), url)
        _write_private(layout.file("artifacts_destination"), artifacts)
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


# -- both ----------------------------------------------------------------------------------


def start(
    layout: Layout,
    host: str = "127.0.0.1",
    port: int = 5000,
    db_port: int = 5433,
    database_uri: str | None = None,
    database: str = DATABASE,
    **server_options: Any,
) -> tuple[str, str]:
    """The database (the local cluster unless `database_uri`) and the server: (URL, database)."""
    if database_uri is None:
        database_uri = start_database(layout, db_port, database)
        password = secret(layout.db_password)
    else:
        database_uri, password = split_password(database_uri)
    check_database(database_uri, password)
    return start_server(layout, database_uri, password, host, port, **server_options), database_uri


def stop(layout: Layout) -> list[str]:
    """Stop the server, then the local cluster; what was stopped."""
    stopped = ["mlflow server"] if stop_server(layout) else []
    return stopped + (["PostgreSQL"] if stop_database(layout) else [])


def _worker_url(host: str, port: int) -> str:
    return f"http://{socket.getfqdn() if host == '0.0.0.0' else host}:{port}"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vaelab.edges.server", description=__doc__)
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
    from vaelab.edges.cli import user_errors

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


def auth_summary(layout: Layout, host: str, auth: bool) -> str:
    """How the server admits users, with a warning when anyone on the network may write."""
    if auth:
        return f"user {ADMIN}, password in {layout.file('admin_password')}"
    if is_loopback(host):
        return "off"
    return "off (anyone who reaches this host can read and write runs: AUTH=1 for logins)"


if __name__ == "__main__":
    main()
