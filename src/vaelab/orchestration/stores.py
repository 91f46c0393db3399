"""Each job's run store, opened once per process and shared by the jobs that name it."""

from __future__ import annotations

from vaelab.edges import tracking
from vaelab.edges.config import Config


class StoreCache:
    """Each job's store (its `tracking` settings, shared by a group), opened once.

    `patient`: inside a sweep, a store that stops answering is waited for (`open_configured`).
    """

    def __init__(self, patient: bool) -> None:
        self.patient = patient
        self._open: dict[tuple, tracking.Store] = {}

    def of(self, config: Config) -> tracking.Store:
        t = config.tracking
        key = (t.uri, t.experiment, t.artifact_root)
        if key not in self._open:
            self._open[key] = tracking.open_configured(t, self.patient)
        return self._open[key]
