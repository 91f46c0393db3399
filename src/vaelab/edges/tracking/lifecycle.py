"""A run's life in the store: created, reopened, resumed, closed, withdrawn, cut short.

A run is created RUNNING with who made it and from what (`origin_tags`), the UI's columns.
A run's status must tell the truth: FINISHED, FAILED (with the error as a tag and the
traceback as an artifact) or KILLED for Ctrl-C and SIGTERM (`end_runs`; `process` turns
SIGTERM into an exception). No run is RUNNING without a heartbeat (`heartbeats`).
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from vaelab.edges.tracking.heartbeats import HEARTBEATS
from vaelab.edges.tracking.store import Store, is_local, refusal
from vaelab.edges.tracking.writer import Run, loggable_tags
from vaelab.vocab.tags import HEARTBEAT_TAG, PARENT_TAG

log = logging.getLogger(__name__)

# Where MLflow's UI reads a run's owner and origin (its User and Source columns).
USER_TAG = "mlflow.user"
SOURCE_NAME_TAG = "mlflow.source.name"
SOURCE_TYPE_TAG = "mlflow.source.type"
# Where MLflow's UI reads a run's description (its page's "Description", markdown).


@contextmanager
def _writing(store: Store) -> Iterator[None]:
    """A server's refusal of a first write (a READ-only user) as a TrackingError, not a trace."""
    try:
        yield
    except MlflowException as error:
        experiment = store.client.get_experiment(store.experiment_id).name
        refused = refusal(store.uri, error, experiment)
        if refused is None:
            raise
        raise refused from error


def origin_tags(store: Store) -> dict[str, str]:
    """Who made a run and from what: the server login, else this machine's user; the script.

    MlflowClient, unlike MLflow's fluent API, sets neither, and the UI's User column then
    reads "unknown".
    """
    login = os.environ.get("MLFLOW_TRACKING_USERNAME") if not is_local(store.uri) else None
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
    HEARTBEATS.add(store, run.run_id)
    run.log(params=params)
    return run


def delete_run(store: Store, run_id: str) -> None:
    """Withdraw a run this process created but must not keep (a claim another process won)."""
    HEARTBEATS.remove(run_id)
    store.client.delete_run(run_id)


def reopen_run(store: Store, run_id: str) -> None:
    with _writing(store):
        store.client.update_run(run_id, status="RUNNING")


def resume_run(store: Store, run_id: str, tags: Mapping[str, Any]) -> Run:
    """A KILLED run RUNNING again in this process (its heartbeat renewed from now)."""
    reopen_run(store, run_id)
    run = Run(store, run_id)
    HEARTBEATS.add(store, run_id)
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
