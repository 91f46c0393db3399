"""The local PostgreSQL cluster: made on first use, on 127.0.0.1 only, started, stopped.

Under root, PostgreSQL runs as the account `postgres`; when that account cannot enter the
checkout (under /root, a 0700 temporary folder), the cluster lives in its home and the state
dir's `postgres` is a link to it (`_placed`).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from vaelab.vocab.errors import ServerError
from vaelab_server.database import create_database
from vaelab_server.layout import Layout, private_dir, secret

DATABASE = "mlflow"
# The local cluster's only role; the server connects as it.
DB_ROLE = "vaelab"
# PostgreSQL refuses to run as root: a root caller runs the cluster as this account, which
# Debian's postgresql package creates.
PG_ACCOUNT = "postgres"
# A root caller's cluster that `postgres` could not reach where the state dir is (a checkout
# under /root or a 0700 temporary folder) lives under that account's home, in this folder.
RELOCATED_CLUSTERS = "vaelab"
# Where Debian puts PostgreSQL's programs when they are not on PATH.
PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


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
        private_dir(directory)
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
