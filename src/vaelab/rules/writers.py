"""A few writer threads whose writes stay in order per key, while the main thread works on.

Dozens of runs ending at once must not queue behind one another, and each run's writes must
happen in its order (its end last). `OrderedWriters` chains each key's writes: a write waits
for the key's previous one, and threads take writes first in, first out, so the wait never
deadlocks. A key whose writes are no longer wanted (`wanted`), or all of them after `stop`,
are skipped; a write that raises is handed to `failed` and the key's later writes are
skipped by `wanted`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor, wait

log = logging.getLogger(__name__)


class OrderedWriters:
    """A thread pool that runs each key's writes in the order they were queued."""

    def __init__(
        self,
        threads: int,
        name: str,
        wanted: Callable[[Hashable], bool],
        failed: Callable[[Hashable, Exception], None],
    ):
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._wanted, self._failed = wanted, failed
        self._last: dict[Hashable, Future] = {}
        self._stopping = False

    def write(self, key: Hashable, work: Callable[[], object]) -> Future:
        """Queue a write for `key`, to happen after its earlier ones."""
        self._last[key] = self._pool.submit(self._in_turn, key, self._last.get(key), work)
        return self._last[key]

    def warm_up(self, work: Callable[[], object]) -> None:
        """Work that only makes later writes faster: queued now, its failure only logged."""

        def warm() -> None:
            try:
                work()
            except Exception as error:
                log.debug("warm-up failed (the writes will pay for it): %s", error)

        self._pool.submit(warm)

    def _in_turn(self, key: Hashable, previous: Future | None, work: Callable[[], object]) -> None:
        if previous is not None:
            # Queued earlier, so already taken by a thread (the queue is first in, first
            # out): waiting for it cannot deadlock.
            wait([previous])
        if self._stopping or not self._wanted(key):
            return
        try:
            work()
        except Exception as error:
            self._failed(key, error)

    def wait(self) -> None:
        """Until every queued write is done; no write is queued after."""
        wait(list(self._last.values()))
        self._pool.shutdown()

    def stopping(self) -> None:
        """From now on no write starts, even one already waiting for its key's previous one."""
        self._stopping = True

    def stop(self) -> None:
        """Drop the queued writes and wait for those under way."""
        self.stopping()
        self._pool.shutdown(wait=True, cancel_futures=True)
