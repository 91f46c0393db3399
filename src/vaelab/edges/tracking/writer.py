"""The handle a run is written through (`Run`), by id: any number can be open at once.

Every write goes through `MlflowClient` with an explicit run id (no "active run"), so one
process can hold many runs open: a packed sweep trains dozens of configurations at once,
each its own run. Metrics, params and tags of one step go to the store in one `log_batch`
call, and nothing that looks like a credential reaches it (`loggable_tags`).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from vaelab.edges.tracking.heartbeats import HEARTBEATS
from vaelab.edges.tracking.models import KerasModelLogging
from vaelab.edges.tracking.store import Store
from vaelab.edges.tracking.system import SystemMetrics
from vaelab.vocab.tags import ERROR_TAG, HEARTBEAT_TAG

# Names that look like credentials are never sent to the store.
_SECRET = re.compile(r"(token|password|passwd|secret|api_?key|credential)", re.IGNORECASE)
_MAX_TAG = 5000
# MLflow's limit on one log_batch call.
_BATCH_LIMIT = 1000


def loggable_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """Tags as MLflow stores them (bounded strings), without anything that looks like a secret."""
    return {k: str(v)[:_MAX_TAG] for k, v in tags.items() if not _SECRET.search(k)}


def loggable_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Params as MLflow stores them (strings), without anything that looks like a secret."""
    return {k: str(v) for k, v in params.items() if not _SECRET.search(k)}


class Run(KerasModelLogging, SystemMetrics):
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

    def end(self, status: str, error: BaseException | str | None = None) -> None:
        """Close the run, recording why when it did not finish."""
        self.stop_monitoring()
        if error is not None:
            text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.set_tags({ERROR_TAG: text})
            detail = (
                f"{error}\n"
                if isinstance(error, str)
                else "".join(traceback.format_exception(error))
            )
            self.log_text(detail, "error.txt")
        HEARTBEATS.remove(self.run_id)
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
