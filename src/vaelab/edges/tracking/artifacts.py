"""A run's files: read, listed, fetched, deleted, or attached to a run no process holds open.

A missing artifact is None (or an empty list), never an exception: a report shows a run for
what it has, and a resumed run looks for checkpoints that may not exist yet.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from vaelab.edges.tracking.store import Store

log = logging.getLogger(__name__)


def read_text_artifact(store: Store, run_id: str, path: str) -> str | None:
    """The text of a run's artifact, or None when the run has no such file."""
    try:
        return mlflow.artifacts.load_text(f"runs:/{run_id}/{path}")
    except Exception:  # missing artifact: MlflowException or OSError depending on the store
        return None


def read_artifact_bytes(store: Store, run_id: str, path: str) -> bytes | None:
    """The bytes of a run's artifact, or None when it is missing or unreadable."""
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifact(store, run_id, path, Path(tmp))
        return local.read_bytes() if local is not None and local.is_file() else None


def artifact_paths(store: Store, run_id: str, directory: str) -> list[str]:
    """The files directly under a directory of a run's artifacts (none when it is missing)."""
    try:
        return [f.path for f in store.client.list_artifacts(run_id, directory) if not f.is_dir]
    except Exception:  # no such directory, or an artifact store that cannot list
        return []


def delete_artifact(store: Store, run_id: str, path: str) -> bool:
    """Remove one of a run's artifacts; False where the artifact store cannot delete.

    MlflowClient has no delete; each run's artifact repository (the local one, and the
    server's proxied one) can.
    """
    try:
        uri = store.client.get_run(run_id).info.artifact_uri
        get_artifact_repository(uri).delete_artifacts(path)
    except Exception as error:  # not supported by this store, or already gone
        log.debug("Could not delete %s of run %s: %s", path, run_id, error)
        return False
    return True


def download_artifact(store: Store, run_id: str, path: str, destination: Path) -> Path | None:
    """A run's artifact as a local file, or None when it is missing."""
    try:
        local = store.client.download_artifacts(run_id, path, str(destination))
    except Exception:  # missing artifact or unreadable artifact store
        return None
    return Path(local)


def log_files(store: Store, run_id: str, paths: list[Path], directory: str) -> None:
    """Attach local files to a run that no process holds open (e.g. a sweep's parent)."""
    for path in paths:
        store.client.log_artifact(run_id, str(path), directory)
