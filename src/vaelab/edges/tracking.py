"""The run store through MLflow's public API: open it, read runs, write runs.

The only module that imports mlflow (`mlflow_tables` reads its tables without it).

A run's status must tell the truth: FINISHED, FAILED (with the error as a tag and the
traceback as an artifact) or KILLED for Ctrl-C and SIGTERM (`end_runs`; `process` turns
SIGTERM into an exception). Every write goes through `MlflowClient` with an explicit run id
(no "active run"), so one process can hold many runs open: a packed sweep trains dozens of
configurations at once, each its own run. Metrics, params and tags of one step go to the
store in one `log_batch` call. Which URIs are accepted is `store_uri`'s to say; a server's
refusal of a login is turned into what to do here (`_refusal`).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vaelab.edges import mlflow_tables, telemetry
from vaelab.edges.mlflow_tables import local_path, sqlite_file
from vaelab.edges.private import PRIVATE_DIR, PRIVATE_FILE
from vaelab.edges.store_uri import LOGIN as _LOGIN
from vaelab.edges.store_uri import check_uri
from vaelab.vocab.errors import TrackingError
from vaelab.vocab.tags import ERROR_TAG, HEARTBEAT_TAG, PARENT_TAG

# Reading one small artifact should not draw a progress bar; set before mlflow reads it.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# vaelab's own log names each run; a server store would add two "View run" lines per run.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# No usage reports to MLflow's makers unless the user opts in (`telemetry`).
telemetry.off_unless_opted_in(os.environ)

import mlflow  # noqa: E402
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.telemetry import get_telemetry_client, set_telemetry_client  # noqa: E402
from mlflow.telemetry.utils import is_telemetry_disabled  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

# MLflow imported before vaelab (a notebook's `import mlflow`) started its reporter already.
if (reporter := get_telemetry_client()) is not None and is_telemetry_disabled():
    set_telemetry_client()
    reporter.flush(terminate=True)

log = logging.getLogger(__name__)

# Names that look like credentials are never sent to the store.
_SECRET = re.compile(r"(token|password|passwd|secret|api_?key|credential)", re.IGNORECASE)
_MAX_TAG = 5000
# MLflow's limit on one log_batch call.
_BATCH_LIMIT = 1000

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


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:")


def loggable_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow stores them (bounded strings), without anything that looks like a secret."""
    return {k: str(v)[:_MAX_TAG] for k, v in tags.items() if not _SECRET.search(k)}


def loggable_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them (strings), without anything that looks like a secret."""
    return {k: str(v) for k, v in params.items() if not _SECRET.search(k)}


def _prepare_sqlite_dir(uri: str) -> None:
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
def _exclusive(uri: str) -> Iterator[None]:
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


def _refusal(uri: str, error: Exception, experiment: str) -> TrackingError | None:
    """A server's 401 or 403 as what to do about it; None for any other error."""
    status = error.get_http_status_code() if isinstance(error, MlflowException) else None
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 401 and user is None:
        return TrackingError(
            f"the server at tracking.uri={uri} requires a login: set {_LOGIN} (the server's "
            "admin creates users; docs/team.md)"
        )
    if status == 401:
        return TrackingError(
            f"the server at tracking.uri={uri} refused the login of user '{user}': check {_LOGIN}"
        )
    if status == 403:
        return TrackingError(
            f"user '{user}' lacks permission on experiment '{experiment}' at tracking.uri={uri} "
            "(writing runs needs EDIT): ask the experiment's owner or the server's admin for it "
            "(docs/team.md), or use another tracking.experiment"
        )
    return None


@contextmanager
def _writing(store: Store) -> Iterator[None]:
    """A server's refusal of a first write (a READ-only user) as a TrackingError, not a trace."""
    try:
        yield
    except MlflowException as error:
        experiment = store.client.get_experiment(store.experiment_id).name
        refusal = _refusal(store.uri, error, experiment)
        if refusal is None:
            raise
        raise refusal from error


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
        _check_store_file(db)  # before anything is written beside it, even a lock file
    _prepare_sqlite_dir(uri)
    if db is not None and artifact_root is None:
        artifact_root = str(db.parent / "artifacts")
    with _exclusive(uri):
        if db is not None:  # before MLflow opens it: the journals it creates take its mode
            mlflow_tables.make_private(db, Path(artifact_root))
        fresh = db is not None and not db.exists()
        if fresh:
            _copy_empty_store(db, Path(artifact_root).resolve())
        store = _open_store(uri, experiment, artifact_root, patient)
        if db is not None:  # the file MLflow made where there was none, its journals
            mlflow_tables.make_private(db, Path(artifact_root))
            _check_artifact_location(store, Path(artifact_root).resolve())
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
    recorded; the next training run moves the records (`_check_artifact_location`).
    """
    check_uri(uri)
    if (db := sqlite_file(uri)) is not None:
        _check_store_file(db, reading=True)
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


def _check_store_file(db: Path, reading: bool = False) -> None:
    """Refuse a file that holds no MLflow store in one line, leaving it as it is.

    MLflow would retry a corrupted file for seconds, then print pages of SQLAlchemy's
    traceback. `reading`: a store not made yet is refused too, rather than made.
    """
    try:
        found = mlflow_tables.has_store(db)
    except mlflow_tables.NotAStore as error:
        raise TrackingError(
            f"the run store {db} {error}: move it aside (a new store is then made there) or "
            "restore it from a backup; vaelab left it untouched"
        ) from error
    if reading and not found:
        raise TrackingError(
            f"no run store at {db}: train a run first, or point at an existing one "
            "(tracking.uri=sqlite:////path/to/mlflow.db; in Python, store=...)"
        )


def _copy_empty_store(db: Path, artifact_root: Path) -> None:
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


def _open_store(uri: str, experiment: str, artifact_root: str | None, patient: bool) -> Store:
    mlflow.set_tracking_uri(uri)
    try:
        with contextlib.nullcontext() if patient else _no_retries():
            client = MlflowClient(uri)
            found = client.get_experiment_by_name(experiment)
            if found is None:
                location = (
                    Path(artifact_root).resolve().as_uri()
                    if artifact_root and _is_local(uri)
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
    if refusal := _refusal(uri, error, experiment):
        return refusal
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


def _check_artifact_location(store: Store, wanted: Path) -> None:
    """Keep a moved store's artifacts where its config says, or say why that cannot be.

    MLflow records each experiment's artifact location, as an absolute path, in the database.
    A store copied or moved elsewhere (another checkout, another VAELAB_HOME) would go on
    writing to the old place. When the old place is gone, the store was moved: its recorded
    locations are rewritten to `tracking.artifact_root`. When it still exists, two stores
    would share one artifact directory, so this refuses and names both fixes.
    """
    recorded = local_path(store.client.get_experiment(store.experiment_id).artifact_location)
    if recorded == wanted:
        return
    if recorded.exists():
        raise TrackingError(
            f"the run store {store.uri} keeps the artifacts of its experiment in {recorded}, "
            f"not in tracking.artifact_root={wanted}, and {recorded} still exists (the store "
            "was copied, or artifact_root changed): new runs would write there. Either run "
            f"with tracking.artifact_root={recorded}, or move that directory to {wanted} "
            "and relaunch; vaelab then rewrites the store's recorded locations."
        )
    moved = mlflow_tables.rewrite_artifact_locations(
        sqlite_file(store.uri), recorded.as_uri(), wanted.as_uri()
    )
    if moved is None:  # a schema this code does not know: MLflow has no API for it
        raise TrackingError(
            f"the run store {store.uri} was moved: its artifacts are recorded in {recorded}, "
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


class _Heartbeats:
    """Renews the heartbeat of every run this process holds open, from one daemon thread.

    An epoch can take longer than any fixed timeout (a large packed group on a CPU), so
    life is not read from epochs: while the process lives, its runs' heartbeats stay fresh;
    once it dies (even by SIGKILL) they age, and after the store's `stale_after_s` another
    process may take the run over.
    """

    def __init__(self) -> None:
        self._runs: dict[str, Store] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, store: Store, run_id: str) -> None:
        with self._lock:
            self._runs[run_id] = store
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._beat, name="vaelab-heartbeat", daemon=True
                )
                self._thread.start()
        self._wake.set()  # a shorter interval takes effect now

    def remove(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _beat(self) -> None:
        while True:
            with self._lock:
                runs = dict(self._runs)
            for run_id, store in runs.items():
                with contextlib.suppress(Exception):  # a store outage: the next beat retries
                    store.client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            interval = min((s.heartbeat_s for s in runs.values()), default=60.0)
            self._wake.wait(interval)
            self._wake.clear()


_HEARTBEATS = _Heartbeats()


def heartbeat_age(tags: Mapping[str, str], start_time_ms: int, now: float | None = None) -> float:
    """Seconds since a run last showed life (its heartbeat tag, else its start)."""
    try:
        last = float(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        last = start_time_ms / 1000
    return (time.time() if now is None else now) - last


@dataclass(frozen=True)
class RunRecord:
    """A run as read back from the store."""

    run_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_time: int = 0


def is_stale(store: Store, run: RunRecord, now: float | None = None) -> bool:
    """A RUNNING run whose process is gone: its heartbeat older than the store's timeout."""
    age = heartbeat_age(run.tags, run.start_time, now)
    return run.status == "RUNNING" and age > store.stale_after_s


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run.info.run_id,
        run.info.status,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
        run.info.start_time or 0,
    )


def find_runs(store: Store, tags: Mapping[str, str], status: str | None = None) -> list[RunRecord]:
    """Runs of the experiment whose tags match, oldest first, optionally of one status."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    clauses += [f"attributes.status = '{status}'"] if status else []
    runs = store.client.search_runs(
        [store.experiment_id],
        " and ".join(clauses),
        order_by=["attributes.start_time ASC"],
        max_results=50000,
    )
    return [_record(run) for run in runs]


def get_run(store: Store, run_id: str) -> RunRecord:
    """A run by id; TrackingError names the id when the store has no such live run."""
    try:
        run = store.client.get_run(run_id)
    except Exception as error:  # MlflowException for unknown ids, also malformed ones
        raise TrackingError(
            f"run_id={run_id} is not in the store at {store.uri}: check the id (MLflow UI, "
            "`make ui`) and tracking.uri"
        ) from error
    if run.info.lifecycle_stage == "deleted":
        raise TrackingError(f"run {run_id} was deleted; restore it in the MLflow UI first")
    return _record(run)


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
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    try:
        uri = store.client.get_run(run_id).info.artifact_uri
        get_artifact_repository(uri).delete_artifacts(path)
    except Exception as error:  # not supported by this store, or already gone
        log.debug("Could not delete %s of run %s: %s", path, run_id, error)
        return False
    return True


def metric_history(store: Store, run_id: str, name: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, by step."""
    return sorted((m.step, m.value) for m in store.client.get_metric_history(run_id, name))


def runs_frame(store: Store, filter_string: str = "", run_ids: list[str] | None = None):
    """Runs as a pandas DataFrame (params.*, metrics.*, tags.* columns), newest first."""
    frame = mlflow.search_runs(
        experiment_ids=[store.experiment_id],
        filter_string=filter_string,
        max_results=50000,
        order_by=["attributes.start_time DESC"],
    )
    if run_ids is not None:
        frame = frame[frame["run_id"].isin(run_ids)]
    return frame.reset_index(drop=True)


def logged_model_id(store: Store, run_id: str) -> str:
    """The id of the model a run logged (its newest, should it have several)."""
    found = store.client.search_logged_models(
        experiment_ids=[store.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        max_results=1,
    )
    if not found:
        run = get_run(store, run_id)  # says so if the run itself is not in the store
        raise TrackingError(
            f"run {run_id} ({run.status}) logged no model: it did not finish, or it was "
            "trained with tracking.log_model=false"
        )
    return found[0].model_id


def register_version(
    store: Store, name: str, run_id: str, tags: Mapping[str, str], description: str
) -> str:
    """The run's logged model as a new version of registered model `name`; its number.

    The registered model is created on first use.
    """
    model_id = logged_model_id(store, run_id)
    client = store.client
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="The best run of a vaelab sweep's comparable group, per sweep."
        )
    version = client.create_model_version(
        name, f"models:/{model_id}", run_id=run_id, tags=dict(tags), description=description,
        model_id=model_id,
    )  # fmt: skip
    return str(version.version)


def load_logged_keras_model(store: Store, run_id: str) -> Any:
    """The Keras model a run logged, loaded through MLflow's keras flavour."""
    import mlflow.keras

    mlflow.set_tracking_uri(store.uri)
    return mlflow.keras.load_model(f"models:/{logged_model_id(store, run_id)}")


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


@dataclass(frozen=True)
class StoreReader:
    """What a report reads, through MLflow: the same methods as `local_store.LocalStore`."""

    store: Store

    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def experiment_id(self) -> str:
        return self.store.experiment_id

    def runs_frame(self, filter_string: str = "", run_ids: list[str] | None = None):
        return runs_frame(self.store, filter_string, run_ids)

    def metric_history(self, run_id: str, name: str) -> list[tuple[int, float]]:
        return metric_history(self.store, run_id, name)

    def download_artifact(self, run_id: str, path: str, destination: Path) -> Path | None:
        return download_artifact(self.store, run_id, path, destination)

    def log_files(self, run_id: str, paths: list[Path], directory: str) -> None:
        log_files(self.store, run_id, paths, directory)


class Run:
    """The handle a run is logged through, by id: any number can be open at once."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id
        self._client = store.client
        # Each metric's newest entry through this handle (`log_to_model` sends it again).
        self._latest: dict[str, Metric] = {}

    def log(
        self,
        metrics: Mapping[str, float] | None = None,
        step: int = 0,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        heartbeat: bool = False,
        model: tuple[str, tuple[str, str]] | None = None,
    ) -> None:
        """Metrics at one step, params and tags: one call to the store (or a few, if huge).

        `model`: (model id, (dataset name, digest)) when the metrics also belong to the run's
        LoggedModel, measured on that dataset (the Models view compares models by them).
        """
        now = int(time.time() * 1000)
        tags = {**(tags or {}), **({HEARTBEAT_TAG: f"{time.time():.3f}"} if heartbeat else {})}
        entries = [
            _model_metric(Metric(k, float(v), now, step), model) for k, v in (metrics or {}).items()
        ]
        self._latest.update((entry.key, entry) for entry in entries)
        self._send(
            entries,
            [Param(k, v) for k, v in loggable_params(params or {}).items()],
            [RunTag(k, v) for k, v in loggable_tags(tags).items()],
        )

    def log_to_model(
        self, values: Mapping[str, float], step: int, model: tuple[str, tuple[str, str]]
    ) -> None:
        """Metrics the run logged at `step` (its last epoch's) against its LoggedModel too.

        The entries this handle sent are sent again (name, value, step and time), now with
        the model's id: the LoggedModel gets them, so the Models view sorts by the sweep's
        objective, and the run's history keeps one point each, since MLflow stores a metric
        logged twice with the same identity once (so that a retried write is harmless). A
        value this handle did not log (a resumed run's epoch, logged before its process
        died) is logged anew: the run then shows it twice at that step, nothing worse.
        """
        now = int(time.time() * 1000)
        entries = [
            self._latest[k]
            if k in self._latest and self._latest[k].step == step
            else Metric(k, float(v), now, step)
            for k, v in values.items()
        ]
        self._send([_model_metric(entry, model) for entry in entries], [], [])

    def _send(self, *entries: list) -> None:
        """Metrics, params and tags in as few `log_batch` calls as MLflow's limit allows."""
        while any(entries):
            batch, room = [], _BATCH_LIMIT
            for entry in entries:
                batch.append(entry[:room])
                room -= len(batch[-1])
            self._client.log_batch(self.run_id, *batch)
            entries = tuple(
                entry[len(taken) :] for entry, taken in zip(entries, batch, strict=True)
            )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.log(tags=tags)

    def rename(self, name: str) -> None:
        """The run's name in the UI's runs table (e.g. a pruned run says so)."""
        self._client.update_run(self.run_id, name=name)

    def log_artifacts(self, directory: Path, path: str | None = None) -> None:
        """Every file under `directory`, at `path` in the run's artifacts: one copy operation."""
        self._client.log_artifacts(self.run_id, str(directory), path)

    def log_text(self, text: str, path: str) -> None:
        self._client.log_text(self.run_id, text, path)

    def log_bytes(self, data: bytes, path: str) -> None:
        """One file of `data` at `path` among the run's artifacts."""
        directory, _, name = path.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / name
            local.write_bytes(data)
            self._client.log_artifact(self.run_id, str(local), directory or None)

    def log_dataset(
        self, name: str, digest: str, url: str, profile: Mapping[str, Any], context: str
    ) -> None:
        """What the run trained on, shown in the runs table's Dataset column."""
        dataset = Dataset(
            name=name,
            digest=digest,
            source_type="http",
            source=json.dumps({"url": url}),
            profile=json.dumps(dict(profile)),
        )
        tags = [InputTag("mlflow.data.context", context)]
        inputs = [DatasetInput(dataset, tags)]
        try:
            self._client.log_inputs(self.run_id, datasets=inputs)
        except MlflowException as error:
            # MLflow creates a dataset on its first use without a lock: two runs (workers of
            # a parallel sweep) logging it at once both insert it, and one is refused. By
            # then it exists, and logging it again only links it to this run.
            if "unique" not in str(error).lower():
                raise
            self._client.log_inputs(self.run_id, datasets=inputs)

    def create_logged_model(self, name: str, params: Mapping[str, Any]) -> str:
        """A LoggedModel of this run, its files to come (`log_keras_model`); its id.

        Created first so that the run's final metrics can be logged against it before
        anything else that could fail (a figure, the model's files) is written. It carries
        the run's `params` too: the Models view shows and sorts models by their own.
        """
        model = self._client.create_logged_model(
            self.store.experiment_id,
            name=name,
            source_run_id=self.run_id,
            params=loggable_params(params),
        )
        return model.model_id

    def log_keras_model(
        self, model: Any, model_id: str, example: Any, requirements: list[str]
    ) -> None:
        """The model's files into its LoggedModel (`create_logged_model`), which loads anywhere.

        Logged with an input example and the signature inferred from it, so the UI shows
        what goes in and comes out, and `mlflow models serve` can check a request. MLflow's
        own check of the example (`validate_serving_input`) is skipped: it reloads the model
        and runs Keras' `predict`, which prints a progress bar and, through tf.data's
        parallel map, a native "E0000 ... node_def_util.cc" line on every run's console; the
        signature comes from the same example through the same model, called here.
        """
        from keras import ops
        from mlflow.models import Model, infer_signature

        # A direct call, not predict(): no data pipeline (and no TensorFlow data-op noise).
        outputs = model(example)
        if isinstance(outputs, dict):
            outputs = {k: ops.convert_to_numpy(v) for k, v in outputs.items()}
        else:
            outputs = ops.convert_to_numpy(outputs)
        Model.log(
            artifact_path=None,
            model_id=model_id,
            flavor=_KERAS_FLAVOUR,
            model=model,
            run_id=self.run_id,
            signature=infer_signature(example, outputs),
            input_example=example,
            pip_requirements=requirements,
            validate_serving_input=False,
        )

    def monitor_system(self) -> None:
        """MLflow's system metrics beside the run's own, every 10 s until it ends.

        `system/*`: CPU, memory, disk, network, and NVIDIA GPUs' utilisation and memory
        (`tracking.system_metrics=true`).
        """
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            self.run_id, tracking_uri=self.store.uri, resume_logging=True
        )
        monitor.start()
        _SYSTEM_MONITORS[self.run_id] = monitor

    def end(self, status: str, error: BaseException | str | None = None) -> None:
        """Close the run, recording why when it did not finish."""
        if (monitor := _SYSTEM_MONITORS.pop(self.run_id, None)) is not None:
            monitor.finish()
        if error is not None:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.set_tags({ERROR_TAG: text})
            detail = (
                f"{error}\n"
                if isinstance(error, str)
                else "".join(traceback.format_exception(error))
            )
            self.log_text(detail, "error.txt")
        _HEARTBEATS.remove(self.run_id)
        self._client.set_terminated(self.run_id, status=status)


def _model_metric(metric: Metric, model: tuple[str, tuple[str, str]] | None) -> Metric:
    """`metric` as one of a LoggedModel's too: (model id, (dataset name, digest)); or as is."""
    if model is None:
        return metric
    model_id, (dataset, digest) = model
    return Metric(
        metric.key, metric.value, metric.timestamp, metric.step,
        model_id=model_id, dataset_name=dataset, dataset_digest=digest,
    )  # fmt: skip


def _save_keras_model(path: str, validate_serving_input: bool = True, **kwargs: Any) -> None:
    """mlflow.keras.save_model, into a directory that exists first.

    MLflow 3.17's keras flavour writes the input example before it creates the model's
    directory (FileNotFoundError: .../model/input_example.json). `Model.log` hands its own
    `validate_serving_input` on to the flavour, whose `save_model` does not take it.
    """
    import mlflow.keras

    Path(path).mkdir(parents=True, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# What `Model.log` needs of a flavour: its name and `save_model`.
_KERAS_FLAVOUR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)

# Each run's system-metrics monitor, while it is open (Run.monitor_system).
_SYSTEM_MONITORS: dict[str, Any] = {}

# Where MLflow's UI reads a run's owner and origin (its User and Source columns).
USER_TAG = "mlflow.user"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
# Where MLflow's UI reads a run's description (its page's "Description", markdown).
NOTE_TAG = "mlflow.note.content"


def origin_tags(store: Store) -> dict[str, str]:
    """Who made a run and from what: the server login, else this machine's user; the script.

    MlflowClient, unlike MLflow's fluent API, sets neither, and the UI's User column then
    reads "unknown".
    """
    login = os.environ.get("MLFLOW_TRACKING_USERNAME") if not _is_local(store.uri) else None
    try:
        user = login or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid())
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        script = Path(script.name)
    return {USER_TAG: user, SOURCE_NAME_TAG: str(script), SOURCE_TYPE_TAG: "LOCAL"}


def create_run(
    store: Store,
    run_name: str,
    tags: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> Run:
    """A RUNNING run with its params and tags; close it with `Run.end`."""
    parent = {PARENT_TAG: parent_run_id} if parent_run_id else {}
    # The heartbeat comes with the run itself: no run is ever RUNNING without one.
    alive = {HEARTBEAT_TAG: f"{time.time():.3f}"}
    with _writing(store):
        created = store.client.create_run(
            store.experiment_id,
            run_name=run_name,
            tags=loggable_tags({**origin_tags(store), **tags, **parent, **alive}),
        )
    run = Run(store, created.info.run_id)
    _HEARTBEATS.add(store, run.run_id)
    run.log(params=params)
    return run


def delete_run(store: Store, run_id: str) -> None:
    """Withdraw a run this process created but must not keep (a claim another process won)."""
    _HEARTBEATS.remove(run_id)
    store.client.delete_run(run_id)


def reopen_run(store: Store, run_id: str) -> None:
    with _writing(store):
        store.client.update_run(run_id, status="RUNNING")


def resume_run(store: Store, run_id: str, tags: Mapping[str, Any]) -> Run:
    """A KILLED run RUNNING again in this process (its heartbeat renewed from now)."""
    reopen_run(store, run_id)
    run = Run(store, run_id)
    _HEARTBEATS.add(store, run_id)
    run.log(tags=tags, heartbeat=True)
    return run


def close_run(store: Store, run_id: str, status: str, error: str | None = None) -> None:
    """End a run that no process holds open, recording why when it did not finish."""
    Run(store, run_id).end(status, error)


def update_run(
    store: Store,
    run_id: str,
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    texts: Mapping[str, str] | None = None,
) -> None:
    """Write to a run that no process holds open (a sweep's parent, a stale child)."""
    run = Run(store, run_id)
    run.log(metrics=metrics, tags=tags)
    for path, text in (texts or {}).items():
        run.log_text(text, path)


def end_runs(runs: list[Run], error: BaseException, log_path: Path | None) -> None:
    """End runs that an exception cut short: KILLED for an interrupt, FAILED otherwise."""
    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    for run in runs:
        log.warning("Run %s %s: %s", run.run_id, status, error or "SIGINT")
        with contextlib.suppress(Exception):  # the store may be what failed
            if log_path is not None and log_path.exists():
                run._client.log_artifact(run.run_id, str(log_path))
            run.end(status, error)
