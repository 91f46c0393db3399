"""A sqlite run store's files as files: is it a store at all, and are they its owner's only.

Neither needs MLflow's schema of any version (`mlflow_tables` owns what does): a corrupted
file is named in one line, untouched, before MLflow's retries (`has_store`), and a store
first made by other rules (`mlflow ui` under umask 022) is made private when vaelab opens it
(`make_private`, also what `make ui` does before MLflow opens the store).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from pathlib import Path
from urllib.parse import quote

from vaelab.edges.private import PRIVATE_DIR, PRIVATE_FILE

log = logging.getLogger(__name__)

# sqlite's files beside a database: its write-ahead log and shared memory, its old journal.
JOURNALS = ("-wal", "-shm", "-journal")
# Tables every MLflow store has, whatever its version.
_STORE_TABLES = {"alembic_version", "experiments", "runs"}


class NotAStore(Exception):
    """The file is corrupted, or a database of something else; the message says which."""


def has_store(db: Path) -> bool:
    """Whether the file `db` holds an MLflow store, read without changing a byte.

    False for no file, or an empty one (MLflow builds its schema there). NotAStore for a
    corrupted file or another database: MLflow would retry it for seconds, then fail with a
    page of traceback. A busy or unreadable file is left to MLflow, which says so itself.
    """
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(_untouched(db), uri=True, timeout=30)) as c:
            tables = {n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.OperationalError as error:  # locked past the timeout, or no permission
        log.debug("%s: not inspected (%s)", db, error)
        return True
    except sqlite3.DatabaseError as error:
        raise NotAStore(f"is corrupted or no database at all ({error})") from error
    if tables and not tables >= _STORE_TABLES:
        raise NotAStore("is a database, but not an MLflow store (it lacks MLflow's tables)")
    return bool(tables)


def holds_store(db: Path) -> bool:
    try:
        return has_store(db)
    except NotAStore:
        return False


def _untouched(db: Path) -> str:
    """A URI that reads `db` without creating a file beside it.

    A read-only connection to a database in write-ahead-log mode creates its -wal and -shm
    files when no other connection has them open. With none open, nothing else is writing
    to it, and it can be read as immutable, which creates nothing.

    The header is read only when no -shm file exists: closing any descriptor of a database
    file drops every POSIX lock this process holds on it (SQLite's locks included), and a
    process whose locks vanish while another writes corrupts its view of the log ("disk I/O
    error"). Without a -shm file no connection is open in write-ahead mode anywhere.
    """
    if db.with_name(db.name + "-shm").exists():
        return f"file:{quote(str(db))}?mode=ro"
    with open(db, "rb") as file:
        header = file.read(100)
    in_wal = header.startswith(b"SQLite format 3\x00") and header[18:19] == b"\x02"
    return f"file:{quote(str(db))}?mode=ro" + ("&immutable=1" if in_wal else "")


def make_private(db: Path, artifact_root: Path | None) -> None:
    """The store's database, its journals and its artifact root: their owner's only.

    A store first made by other rules (`mlflow ui` under umask 022, an older vaelab) is
    tightened when its owner opens it; the artifact root is created private if missing. The
    database's directory keeps its mode (it may be the user's own folder; the files are what
    is private), as does a shared folder (sticky: /tmp) and what belongs to another account.
    """
    if artifact_root is not None:
        artifact_root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _tighten(artifact_root, PRIVATE_DIR)
    for path in (db, *(db.with_name(db.name + suffix) for suffix in JOURNALS)):
        _tighten(path, PRIVATE_FILE)


def _tighten(path: Path, mode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        status = path.stat()
        shared = status.st_mode & stat.S_ISVTX or status.st_uid != os.geteuid()
        if not shared and stat.S_IMODE(status.st_mode) != mode:
            path.chmod(mode)
