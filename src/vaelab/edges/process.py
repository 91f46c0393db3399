"""What a process does around its runs: signals turned into exceptions, log lines captured.

Beside `cli` (the other process concern): neither knows MLflow. A run's status must tell the
truth, and left to itself a SIGTERM'd process leaves its runs RUNNING forever; so SIGTERM is
raised like Ctrl-C (`sigterm_as_interrupt`) and the recorder ends the runs KILLED. Where a
cut between two steps would leave a run nobody ends, the signals wait (`interrupts_held`).
"""

from __future__ import annotations

import logging
import signal
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the run ends KILLED."""


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise RunInterrupted(f"received signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises RunInterrupted (a KeyboardInterrupt) like Ctrl-C."""
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
def interrupts_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have.

    Around the store call that creates a run and the line that makes it known (cut between
    the two, a run would exist that nothing ends), and around ending the runs of a group
    that was stopped (a second signal must not leave the rest RUNNING). Outside the main
    thread, where signals cannot be handled, the block just runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum)) for s in wanted}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
    if received:
        signal.raise_signal(received[0])


@contextmanager
def captured_log() -> Iterator[Path]:
    """Copy everything logged in the block to a file that becomes a run artifact."""
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
