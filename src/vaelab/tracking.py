"""The only module that imports mlflow: one thin interface for opening the store and a run.

A run's status must tell the truth: FINISHED, FAILED (with the error as a tag and the
traceback as an artifact) or KILLED for Ctrl-C and SIGTERM. Left to itself MLflow marks Ctrl-C
FAILED and leaves a SIGTERM'd run RUNNING forever, so `tracked_run` turns SIGTERM into an
exception and maps each outcome explicitly.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import signal
import sqlite3
import tempfile
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Reading one small artifact should not draw a progress bar; set before mlflow reads it.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

log = logging.getLogger(__name__)

# Names that look like credentials are never sent to the store.
_SECRET = re.compile(r"(token|password|passwd|secret|api_?key|credential)", re.IGNORECASE)
_MAX_TAG = 5000


# Unix time of a run's last sign of life (start, then every epoch).
HEARTBEAT_TAG = "heartbeat_at"
# Set on an exception that escaped an open run, so callers can tell it was recorded.
RUN_ID_ATTRIBUTE = "mlflow_run_id"


class TrackingError(RuntimeError):
    """The run store cannot be used; the message names the URI and how to fix it."""


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the run ends KILLED."""


@dataclass(frozen=True)
class Store:
    uri: str
    experiment_id: str


def _is_local(uri: str) -> bool:
    return uri.startswith("sqlite:") or uri.startswith("file:")


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite URI (as SQLAlchemy reads it), None for other stores."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _loggable_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow stores them (bounded strings), without anything that looks like a secret."""
    return {k: str(v)[:_MAX_TAG] for k, v in tags.items() if not _SECRET.search(k)}


def _prepare_sqlite_dir(uri: str) -> None:
    db = _sqlite_path(uri)
    if db is None:
        return
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
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
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(uri: str, experiment: str, artifact_root: str | None) -> Store:
    """Reach the store (failing now, not after training), create schema and experiment."""
    _prepare_sqlite_dir(uri)
    with _exclusive(uri):
        return _open_store(uri, experiment, artifact_root)


def _open_store(uri: str, experiment: str, artifact_root: str | None) -> Store:
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    saved = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # fail fast on a dead server
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            location = (
                Path(artifact_root).resolve().as_uri() if artifact_root and _is_local(uri) else None
            )
            experiment_id = client.create_experiment(experiment, artifact_location=location)
        else:
            experiment_id = found.experiment_id
    except Exception as error:  # mlflow raises several types for one cause: unreachable
        raise TrackingError(
            f"cannot use the run store at tracking.uri={uri} ({type(error).__name__}: "
            f"{str(error)[:300]}). Start the server, fix the URI, or use the local store "
            "(tracking=local)."
        ) from error
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        else:
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = saved
    _use_write_ahead_log(uri)
    return Store(uri=uri, experiment_id=experiment_id)


def _use_write_ahead_log(uri: str) -> None:
    """WAL lets readers and one writer work at once: parallel sweep jobs stop blocking.

    The mode is stored in the database file, so setting it once per open is cheap.
    """
    db = _sqlite_path(uri)
    if db is not None:
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")


@dataclass(frozen=True)
class RunRecord:
    """A run as read back from the store."""

    run_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


def _record(run: Any) -> RunRecord:
    return RunRecord(
        run.info.run_id,
        run.info.status,
        dict(run.data.params),
        dict(run.data.metrics),
        dict(run.data.tags),
    )


def find_runs(store: Store, tags: Mapping[str, str], status: str | None = None) -> list[RunRecord]:
    """Runs of the experiment whose tags match, oldest first, optionally of one status."""
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    clauses += [f"attributes.status = '{status}'"] if status else []
    query = " and ".join(clauses)
    runs = MlflowClient(store.uri).search_runs(
        [store.experiment_id], query, order_by=["attributes.start_time ASC"], max_results=5000
    )
    return [_record(run) for run in runs]


def get_run(store: Store, run_id: str) -> RunRecord:
    """A run by id; TrackingError names the id when the store has no such live run."""
    try:
        run = MlflowClient(store.uri).get_run(run_id)
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


def metric_history(store: Store, run_id: str, name: str) -> list[tuple[int, float]]:
    """(step, value) pairs of one metric, by step."""
    history = MlflowClient(store.uri).get_metric_history(run_id, name)
    return sorted((m.step, m.value) for m in history)


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


def download_artifact(store: Store, run_id: str, path: str, destination: Path) -> Path | None:
    """A run's artifact as a local file, or None when it is missing."""
    try:
        local = MlflowClient(store.uri).download_artifacts(run_id, path, str(destination))
    except Exception:  # missing artifact or unreadable artifact store
        return None
    return Path(local)


def log_files(store: Store, run_id: str, paths: list[Path], directory: str) -> None:
    """Attach local files to a run that is not the active one (e.g. a sweep's parent)."""
    client = MlflowClient(store.uri)
    for path in paths:
        client.log_artifact(run_id, str(path), directory)


def create_run(store: Store, run_name: str, tags: Mapping[str, Any]) -> str:
    """A run that no process holds open (e.g. a sweep's parent); close it with `close_run`."""
    run = MlflowClient(store.uri).create_run(
        store.experiment_id, run_name=run_name, tags=_loggable_tags(tags)
    )
    return run.info.run_id


def reopen_run(store: Store, run_id: str) -> None:
    MlflowClient(store.uri).update_run(run_id, status="RUNNING")


def close_run(store: Store, run_id: str, status: str, error: str | None = None) -> None:
    """End a run that no process holds open, recording why when it did not finish."""
    if error is not None:
        update_run(store, run_id, tags={"error": error}, texts={"error.txt": f"{error}\n"})
    MlflowClient(store.uri).set_terminated(run_id, status=status)


def update_run(
    store: Store,
    run_id: str,
    tags: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    texts: Mapping[str, str] | None = None,
) -> None:
    """Write to a run that is not the active one (a sweep's parent, a stale child)."""
    client = MlflowClient(store.uri)
    for key, value in _loggable_tags(tags or {}).items():
        client.set_tag(run_id, key, value)
    for key, value in (metrics or {}).items():
        client.log_metric(run_id, key, value)
    for path, text in (texts or {}).items():
        client.log_text(run_id, text, path)


def loggable_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them (strings), without anything that looks like a secret."""
    return {k: str(v) for k, v in params.items() if not _SECRET.search(k)}


class Run:
    """The handle a training run logs through."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def beat(self) -> None:
        """Record that the run is alive; a RUNNING run whose heartbeat is old was killed."""
        mlflow.set_tag(HEARTBEAT_TAG, f"{time.time():.3f}")

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics(dict(metrics), step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        mlflow.set_tags(_loggable_tags(tags))

    def log_text(self, text: str, path: str) -> None:
        mlflow.log_text(text, path)

    def log_figure(self, figure: Any, path: str) -> None:
        import matplotlib.pyplot as plt

        mlflow.log_figure(figure, path)
        plt.close(figure)

    def log_keras_model(self, model: Any, example: Any, requirements: list[str]) -> None:
        """Log a loadable model with an inferred signature (input_example crashes in 3.17)."""
        outputs = {k: v for k, v in model.predict(example, verbose=0).items()}
        import mlflow.keras

        mlflow.keras.log_model(
            model,
            name="model",
            signature=infer_signature(example, outputs),
            pip_requirements=requirements,
        )


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise RunInterrupted(f"received signal {signal.Signals(signum).name}")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread: leave signals to whoever owns them
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _captured_log() -> Iterator[Path]:
    """Copy everything logged during the run to a file that becomes the run's artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.log"
        handler = logging.FileHandler(path)
        handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] %(message)s")
        )
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            yield path
        finally:
            root.removeHandler(handler)
            handler.close()


def _end(status: str, log_path: Path, error: BaseException | None = None) -> None:
    if error is not None:
        mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:_MAX_TAG])
        mlflow.log_text("".join(traceback.format_exception(error)), "error.txt")
    if log_path.exists():
        mlflow.log_artifact(str(log_path))
    mlflow.end_run(status=status)


@contextmanager
def tracked_run(
    store: Store,
    run_name: str | None,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    parent_run_id: str | None = None,
) -> Iterator[Run]:
    """Open a run and close it FINISHED, FAILED or KILLED according to what happened."""
    mlflow.set_tracking_uri(store.uri)
    active = mlflow.start_run(
        experiment_id=store.experiment_id,
        run_name=run_name,
        parent_run_id=parent_run_id,
        tags=_loggable_tags(tags),
    )
    run = Run(active.info.run_id)
    run.beat()
    run.beat()
    with _captured_log() as log_path, _sigterm_as_interrupt():
        try:
            mlflow.log_params(loggable_params(params))
            yield run
        except KeyboardInterrupt as interrupt:
            log.warning("Run %s interrupted: %s", run.run_id, interrupt or "SIGINT")
            setattr(interrupt, RUN_ID_ATTRIBUTE, run.run_id)
            _end("KILLED", log_path, interrupt)
            raise
        except BaseException as error:
            log.error("Run %s failed: %s", run.run_id, error)
            setattr(error, RUN_ID_ATTRIBUTE, run.run_id)
            _end("FAILED", log_path, error)
            raise
        else:
            _end("FINISHED", log_path)
