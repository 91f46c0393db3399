"""The run store through MLflow's public API: open it, read runs, write runs.

The only package that imports mlflow (`mlflow_tables` reads its tables without it), one
module per concern: `store` opens a store (`local`: a sqlite file's care), `queries` reads
runs back, `artifacts` their files, `registry` their models; a run is written through
`writer.Run` (with `models`: its Keras model, `system`: machine metrics) and lives through
`lifecycle` (created, resumed, ended), alive while `heartbeats` says so. Callers use the
names below: `from vaelab.edges import tracking; tracking.open_store(...)`.
"""

# First: MLflow reads its settings when imported, before any module below imports it.
from vaelab.edges.tracking import environment  # noqa: F401

# isort: split

from vaelab.edges.tracking.artifacts import (
    artifact_paths,
    delete_artifact,
    download_artifact,
    read_artifact_bytes,
    read_text_artifact,
)
from vaelab.edges.tracking.lifecycle import (
    close_run,
    create_run,
    delete_run,
    end_runs,
    reopen_run,
    resume_run,
    update_run,
)
from vaelab.edges.tracking.queries import (
    RunRecord,
    StoreReader,
    find_runs,
    get_run,
    heartbeat_age,
    is_stale,
    metric_history,
    runs_frame,
)
from vaelab.edges.tracking.registry import (
    load_logged_keras_model,
    logged_model_id,
    register_version,
)
from vaelab.edges.tracking.store import Store, open_configured, open_existing, open_store
from vaelab.edges.tracking.writer import Run, loggable_tags

__all__ = [
    "Run",
    "RunRecord",
    "Store",
    "StoreReader",
    "artifact_paths",
    "close_run",
    "create_run",
    "delete_artifact",
    "delete_run",
    "download_artifact",
    "end_runs",
    "find_runs",
    "get_run",
    "heartbeat_age",
    "is_stale",
    "load_logged_keras_model",
    "logged_model_id",
    "loggable_tags",
    "metric_history",
    "open_configured",
    "open_existing",
    "open_store",
    "read_artifact_bytes",
    "read_text_artifact",
    "register_version",
    "reopen_run",
    "resume_run",
    "runs_frame",
    "update_run",
]
