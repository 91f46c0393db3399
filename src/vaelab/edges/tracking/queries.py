"""Reading runs back: by tags or id, as a table, one metric's history, and whether one is dead.

`StoreReader` is the MLflow side of what a report reads (`report.RunSource`); the other side,
`mlflow_tables.LocalStore`, reads a local store's tables directly with the same methods.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from vaelab.edges.tracking.artifacts import download_artifact, log_files
from vaelab.edges.tracking.store import Store
from vaelab.vocab.errors import TrackingError
from vaelab.vocab.tags import HEARTBEAT_TAG


@dataclass(frozen=True)
class RunRecord:
    """A run as read back from the store."""

    run_id: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    start_time: int = 0


def heartbeat_age(tags: Mapping[str, str], start_time_ms: int, now: float | None = None) -> float:
    """Seconds since a run last showed life (its heartbeat tag, else its start)."""
    try:
        last = float(tags[HEARTBEAT_TAG])
    except (KeyError, ValueError):
        last = start_time_ms / 1000
    return (time.time() if now is None else now) - last


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


@dataclass(frozen=True)
class StoreReader:
    """What a report reads, through MLflow: the same methods as `mlflow_tables.LocalStore`."""

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
