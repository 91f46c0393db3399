"""Opening the run store: reach it (failing now, not after training), its experiment, its refusals.

A run store is a sqlite file (its file's care is `local`'s) or an `mlflow server`; which URIs
are accepted is `store_uri`'s to say. A server's refusal of a login is turned into what to do
here (`refusal`). Every other module of the package works on the `Store` this one returns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from vaelab.edges import mlflow_tables, store_files
from vaelab.edges.mlflow_tables import sqlite_file
from vaelab.edges.store_uri import LOGIN, check_uri
from vaelab.edges.tracking import local
from vaelab.vocab.errors import TrackingError

# MLflow 3's UI opens an experiment of this kind on its runs ("Machine learning"), not on
# the GenAI traces overview it shows by default.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


@dataclass(frozen=True)
class Store:
    uri: str
    experiment_id: str
    # How runs in this store show they are alive: every open run's heartbeat tag is renewed
    # this often, and a RUNNING run whose heartbeat is older than `stale_after_s` is dead.
    heartbeat_s: float = 30.0
    stale_after_s: float = 120.0

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)


def is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:")


@contextmanager
def _no_retries() -> Iterator[None]:
    """Fail in seconds, not minutes, when a tracking server is unreachable at start."""
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved


def refusal(uri: str, error: Exception, experiment: str) -> TrackingError | None:
    """A server's 401 or 403 as what to do about it; None for any other error."""
    status = error.get_http_status_code() if isinstance(error, MlflowException) else None
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401 and user is None:
        return TrackingError(
            f"the server at tracking.uri={uri} requires a login: set {LOGIN} (the server's "
            "admin creates users; docs/team.md)"
        )
    if status == 401:
        return TrackingError(
            f"the server at tracking.uri={uri} refused the login of user '{user}': check {LOGIN}"
        )
    if status == 403:
        return TrackingError(
            f"user '{user}' lacks permission on experiment '{experiment}' at tracking.uri={uri} "
            "(writing runs needs EDIT): ask the experiment's owner or the server's admin for it "
            "(docs/team.md), or use another tracking.experiment"
        )
    return None


def open_store(
    uri: str,
    experiment: str,
    artifact_root: str | None = None,
    patient: bool = False,
    liveness: tuple[float, float] | None = None,
) -> Store:
    """Reach the store (failing now, not after training), create schema and experiment.

    A sqlite store keeps its artifacts in `artifact_root`, by default `artifacts/` beside the
    database (never relative to the working directory). A server keeps them where it was told
    (`mlflow server --serve-artifacts`): `artifact_root` is not used. An unreachable server
    fails in seconds, unless `patient`: a job of a sweep that already reached it rides out a
    restart of the server with MLflow's retries, as every write of a run does. `liveness`:
    (heartbeat_s, stale_after_s), see `Store`.
    """
    check_uri(uri)
    db = sqlite_file(uri)
    if db is not None:
        local.check_store_file(db)  # before anything is written beside it, even a lock file
    local.prepare_sqlite_dir(uri)
    if db is not None and artifact_root is None:
        artifact_root = str(db.parent / "artifacts")
    with local.exclusive(uri):
        if db is not None:  # before MLflow opens it: the journals it creates take its mode
            store_files.make_private(db, Path(artifact_root))
        fresh = db is not None and not db.exists()
        if fresh:
            local.copy_empty_store(db, Path(artifact_root).resolve())
        store = _open_store(uri, experiment, artifact_root, patient)
        if db is not None:  # the file MLflow made where there was none, its journals
            store_files.make_private(db, Path(artifact_root))
            recorded = store.client.get_experiment(store.experiment_id).artifact_location
            local.check_artifact_location(uri, recorded, Path(artifact_root).resolve())
    if liveness is not None:
        store = replace(store, heartbeat_s=liveness[0], stale_after_s=liveness[1])
    return store


def open_configured(settings: Any, patient: bool = False, reading: bool = False) -> Store:
    """The store a config's `tracking` section names, typed or as composed (the same keys).

    `reading`: as it stands, creating and changing nothing (`open_existing`).
    """
    liveness = (settings.heartbeat_s, settings.stale_after_s)
    if reading:
        store = open_existing(settings.uri, settings.experiment)
        return replace(store, heartbeat_s=liveness[0], stale_after_s=liveness[1])
    return open_store(settings.uri, settings.experiment, settings.artifact_root, patient, liveness)


def open_existing(uri: str, experiment: str) -> Store:
    """The store and its experiment as they stand, for reading: nothing is created or changed.

    No directory, no database, no experiment, no experiment tag, no change of mode or journal:
    a report or a notebook pointed at the wrong place says what is missing (TrackingError)
    instead of leaving an empty store behind. A moved store is read where its artifacts are
    recorded; the next training run moves the records (`local.check_artifact_location`).
    """
    check_uri(uri)
    if (db := sqlite_file(uri)) is not None:
        local.check_store_file(db, reading=True)
    mlflow.set_tracking_uri(uri)  # the process's, for MLflow's fluent reads; not the store's
    try:
        with _no_retries():
            client = MlflowClient(uri)
            found = client.get_experiment_by_name(experiment)
            if found is None or found.lifecycle_stage != "active":
                names = [e.name for e in client.search_experiments()]
    except Exception as error:  # unreachable, refused, or a schema this MLflow cannot read
        raise _unusable(uri, error, experiment) from error
    if found is None or found.lifecycle_stage != "active":
        raise TrackingError(
            f"no experiment '{experiment}' in the run store at {uri}; experiments there: "
            f"{', '.join(names) or 'none'}"
        )
    return Store(uri=uri, experiment_id=found.experiment_id)


def _open_store(uri: str, experiment: str, artifact_root: str | None, patient: bool) -> Store:
    mlflow.set_tracking_uri(uri)
    try:
        with contextlib.nullcontext() if patient else _no_retries():
            client = MlflowClient(uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                location = (
                    Path(artifact_root).resolve().as_uri()
                    if artifact_root and is_local(uri)
                    else None
                )
                experiment_id = _create_experiment(client, experiment, location)
            else:
                experiment_id = found.experiment_id
            for key, value in EXPERIMENT_KIND.items():
                if found is None or found.tags.get(key) != value:
                    client.set_experiment_tag(experiment_id, key, value)
            # MLflow 3 files logged models under the process's current experiment.
            mlflow.set_experiment(experiment_id=experiment_id)
    except Exception as error:  # mlflow raises several types for one cause: unreachable
        raise _unusable(uri, error, experiment) from error
    if (db := sqlite_file(uri)) is not None:
        mlflow_tables.use_write_ahead_log(db)
    return Store(uri=uri, experiment_id=experiment_id)


def _unusable(uri: str, error: Exception, experiment: str) -> TrackingError:
    """Why a store could not be opened, in one line: a server's refusal, or what MLflow said."""
    if found := refusal(uri, error, experiment):
        return found
    text = " ".join(str(error).split())[:300]  # one line, however many MLflow's message has
    return TrackingError(
        f"cannot use the run store at tracking.uri={uri} ({type(error).__name__}: {text}). "
        "Start the server, fix the URI, or use the local store (tracking=local)."
    )


def _create_experiment(client: MlflowClient, name: str, location: str | None) -> str:
    """The experiment's id, made now or by another process that made it a moment before.

    Two workers that reach a server for a new experiment at once both find none; the second
    `create_experiment` is refused (RESOURCE_ALREADY_EXISTS) and takes the first one's.
    """
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id
