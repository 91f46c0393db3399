"""The heartbeat of every run this process holds open, renewed from one daemon thread.

An epoch can take longer than any fixed timeout (a large packed group on a CPU), so life is
not read from epochs: while the process lives, its runs' heartbeats stay fresh; once it dies
(even by SIGKILL) they age, and after the store's `stale_after_s` another process may take the
run over (`queries.is_stale` reads the age).
"""

from __future__ import annotations

import contextlib
import threading
import time

from vaelab.edges.tracking.store import Store
from vaelab.vocab.tags import HEARTBEAT_TAG


class _Heartbeats:
    """The runs whose heartbeats this process renews, and the thread that renews them."""

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


# The one set of heartbeats of this process: runs open it (`lifecycle`), end it (`writer`).
HEARTBEATS = _Heartbeats()
