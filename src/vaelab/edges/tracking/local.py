"""A local (sqlite) store's file: checked, made private, locked, templated, kept where it says.

Apart from `store` because none of it concerns a server: the directory and its permissions,
the lock that lets one process at a time create the schema, a new store copied from an empty
template, and the artifact locations of a store that was moved.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaelab.edges import mlflow_tables, store_files
from vaelab.edges.mlflow_tables import local_path, sqlite_file
from vaelab.edges.private import PRIVATE_DIR, PRIVATE_FILE
from vaelab.vocab.errors import TrackingError

log = logging.getLogger(__name__)


def prepare_sqlite_dir(uri: str) -> None:
    db = sqlite_file(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    except OSError as error:
        raise TrackingError(
            f"cannot create the run store directory {db.parent} ({error.strerror}); point "
            "tracking.uri at a writable location, e.g. tracking.uri=sqlite:////tmp/mlflow.db"
        ) from error
    if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
        raise TrackingError(
            f"the run store {db} is not writable; fix its permissions or point tracking.uri "
            "elsewhere"
        )


@contextmanager
def exclusive(uri: str) -> Iterator[None]:
    """One process at a time initialises a sqlite store on this machine.

    MLflow creates the schema on first use; several processes doing that at once on a fresh
    file race and can leave it broken for good. A lock file beside the database serialises it.
    """
    db = sqlite_file(uri)
    if db is None:
        yield
        return
    with os.fdopen(os.open(f"{db}.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_store_file(db: Path, reading: bool = False) -> None:
    """Refuse a file that holds no MLflow store in one line, leaving it as it is.

    MLflow would retry a corrupted file for seconds, then print pages of SQLAlchemy's
    traceback. `reading`: a store not made yet is refused too, rather than made.
    """
    try:
        found = store_files.has_store(db)
    except store_files.NotAStore as error:
        raise TrackingError(
            f"the run store {db} {error}: move it aside (a new store is then made there) or "
            "restore it from a backup; vaelab left it untouched"
        ) from error
    if reading and not found:
        raise TrackingError(
            f"no run store at {db}: train a run first, or point at an existing one "
            "(tracking.uri=sqlite:////path/to/mlflow.db; in Python, store=...)"
        )


def copy_empty_store(db: Path, artifact_root: Path) -> None:
    """A new store copied from an empty one MLflow made (`mlflow_tables.copy_empty_store`)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vaelab"

    def make(path: Path) -> None:
        MlflowClient(f"sqlite:///{path}").search_experiments()  # MLflow builds its schema

    try:
        template = mlflow_tables.template_store(cache, mlflow.__version__, make)
    except (OSError, MlflowException) as error:
        log.debug("No template store (%s); MLflow creates the schema", error)
        return
    mlflow_tables.copy_empty_store(db, artifact_root, template, PRIVATE_FILE)


def check_artifact_location(uri: str, location: str, wanted: Path) -> None:
    """Keep a moved store's artifacts where its config says, or say why that cannot be.

    MLflow records each experiment's artifact location, as an absolute path, in the database.
    A store copied or moved elsewhere (another checkout, another VAELAB_HOME) would go on
    writing to the old place. When the old place is gone, the store was moved: its recorded
    locations are rewritten to `tracking.artifact_root`. When it still exists, two stores
    would share one artifact directory, so this refuses and names both fixes. `location`: the
    experiment's, as the store at `uri` records it.
    """
    recorded = local_path(location)
    if recorded == wanted:
        return
    if recorded.exists():
        raise TrackingError(
            f"the run store {uri} keeps the artifacts of its experiment in {recorded}, "
            f"not in tracking.artifact_root={wanted}, and {recorded} still exists (the store "
            "was copied, or artifact_root changed): new runs would write there. Either run "
            f"with tracking.artifact_root={recorded}, or move that directory to {wanted} "
            "and relaunch; vaelab then rewrites the store's recorded locations."
        )
    moved = mlflow_tables.rewrite_artifact_locations(
        sqlite_file(uri), recorded.as_uri(), wanted.as_uri()
    )
    if moved is None:  # a schema this code does not know: MLflow has no API for it
        raise TrackingError(
            f"the run store {uri} was moved: its artifacts are recorded in {recorded}, "
            f"and its schema is not the one vaelab rewrites. Run with "
            f"tracking.artifact_root={recorded} (recreate that directory), or open the store "
            "with the MLflow version that made it."
        )
    log.warning(
        "The run store was moved: %d recorded artifact locations rewritten from %s to %s",
        moved,
        recorded,
        wanted,
    )
