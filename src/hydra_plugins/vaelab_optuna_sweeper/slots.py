"""Keeping a launcher's workers busy: one trial per launch, several launches in flight at once.

Hydra's launcher API is batch-shaped: `launch(jobs, initial_job_idx)` returns once every job
of the batch has ended, so a sweeper that asks `n` trials per batch leaves workers idle while
the batch's slowest trial trains (hydra #2257, #3091; hydra PR #2461 measured over 25% idle).
Here each trial is a launch of its own, in a thread of its own, `n` of them in flight: the
sweeper asks the next trial as soon as any one ends. Which launchers take that, and how a
launch in flight is stopped, live here; what to ask and tell stays with the sweeper.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import threading
from collections.abc import Callable
from typing import Any

# Launchers that must get a search's trials as whole batches. Hydra's basic launcher runs its
# jobs one after another in this process: two launches at once would share this process's
# Hydra state (the job's config singleton, its logging). The packed launcher trains a batch as
# one program: a batch of one trial would pack nothing.
WHOLE_BATCHES = frozenset({
    "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "hydra_plugins.vaelab_packed_launcher.packed_launcher.PackedLauncher",
})  # fmt: skip
# Launchers that start a runtime in their first launch unless it is up (hydra-ray-launcher:
# `ray.init`). Two first launches at once would both start it, and the second would fail.
STARTS_A_RUNTIME = frozenset({"hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"})


def _class_paths(launcher: object) -> set[str]:
    """The launcher's class and its bases, each as `module.Name` (a subclass is its base too)."""
    return {f"{c.__module__}.{c.__qualname__}" for c in type(launcher).__mro__}


def takes_whole_batches(launcher: object) -> bool:
    """Whether the launcher must get trials as batches (see WHOLE_BATCHES)."""
    return bool(_class_paths(launcher) & WHOLE_BATCHES)


def start_runtime(launcher: Any) -> None:
    """Start the launcher's runtime once, before launches run at once (see STARTS_A_RUNTIME).

    A launch of no jobs runs the launcher's own start-up, with its own settings, and trains
    nothing.
    """
    if _class_paths(launcher) & STARTS_A_RUNTIME:
        launcher.launch([], initial_job_idx=0)


class Slots:
    """At most `size` calls in flight, each in a thread of its own; each ends in `next_ended`.

    Daemon threads, not a thread pool: after Ctrl-C the process must not wait at exit for the
    launches still in flight (a pool's threads are joined at exit), and `interrupt` stops them
    as Ctrl-C stops a launch in the main thread.
    """

    def __init__(self, size: int):
        self.size = size
        self._running: dict[threading.Thread, Any] = {}
        self._ended: queue.Queue[tuple[threading.Thread, Any, BaseException | None]] = queue.Queue()

    def __len__(self) -> int:
        return len(self._running)

    def free(self) -> bool:
        return len(self._running) < self.size

    def start(self, key: Any, call: Callable[[], Any]) -> None:
        """Run `call` in a new thread; `key` names it when it ends."""

        def run() -> None:
            result, error = None, None
            try:
                result = call()
            except BaseException as caught:  # an interrupt, a launcher's error: raised by the sweep
                error = caught
            self._ended.put((thread, result, error))

        thread = threading.Thread(target=run, name="vaelab-optuna-slot", daemon=True)
        self._running[thread] = key
        thread.start()

    def next_ended(self) -> tuple[Any, Any]:
        """The key and return value of the next call to end (waiting for one); its error raised.

        Waiting is interruptible: Ctrl-C raises KeyboardInterrupt here, in the main thread.
        """
        thread, result, error = self._ended.get()
        key = self._running.pop(thread)
        if error is not None:
            raise error
        return key, result

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in every call still in flight, as Ctrl-C does in the main thread.

        A launch waiting in Python (joblib polls its workers) aborts as it would in the main
        thread: joblib kills its workers. A thread blocked in native code gets it when it
        returns; the process does not wait for it at exit.
        """
        for thread in self._running:
            with contextlib.suppress(Exception):  # not CPython: the threads end on their own
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
                )
