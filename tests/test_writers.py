"""The recorder's writer threads (`rules.writers`) and a group's view of the recorder.

Each run's writes must happen in the order they were queued, whatever the other runs do; a
run whose write failed writes nothing more; `stop` drops what is queued. And the events an
engine reports for its own numbering reach the recorder under the group's.
"""

from __future__ import annotations

import threading
import time

from tests.conftest import TINY, Collected, compose_config
from vaelab.edges.config import to_run_config
from vaelab.engines.base import ForwardedEvents, Job
from vaelab.orchestration.engine_inputs import engine_job
from vaelab.orchestration.group_bar import GroupBar
from vaelab.rules.writers import OrderedWriters


def test_each_keys_writes_happen_in_order_while_keys_overlap():
    done: list[tuple[str, int]] = []
    lock = threading.Lock()
    writers = OrderedWriters(2, "test-writer", wanted=lambda key: True, failed=lambda *a: None)

    def write(key: str, number: int) -> None:
        time.sleep(0.003 * ((number * 7) % 5))  # uneven: a later write could overtake
        with lock:
            done.append((key, number))

    for number in range(20):
        for key in ("a", "b"):
            writers.write(key, lambda k=key, n=number: write(k, n))
    writers.wait()
    for key in ("a", "b"):
        assert [n for k, n in done if k == key] == list(range(20))


def test_a_failed_write_is_reported_once_and_the_keys_later_writes_are_skipped():
    alive = {"a", "b"}
    failures: list[tuple[str, str]] = []
    written: list[str] = []

    def failed(key, error):
        failures.append((key, str(error)))
        alive.discard(key)

    writers = OrderedWriters(2, "test-writer", wanted=alive.__contains__, failed=failed)

    def disk_full():
        raise OSError("No space left on device")

    writers.write("a", lambda: written.append("a1"))
    writers.write("a", disk_full)
    writers.write("a", lambda: written.append("a3"))  # its run ended FAILED: never written
    writers.write("b", lambda: written.append("b1"))
    writers.wait()
    assert failures == [("a", "No space left on device")]
    assert sorted(written) == ["a1", "b1"]


def test_stop_drops_the_queued_writes_and_waits_for_the_one_under_way():
    started, release = threading.Event(), threading.Event()
    written: list[int] = []
    writers = OrderedWriters(1, "test-writer", wanted=lambda key: True, failed=lambda *a: None)

    def slow() -> None:
        started.set()
        release.wait(5)
        written.append(0)

    writers.write("a", slow)
    for number in range(1, 4):
        writers.write("a", lambda n=number: written.append(n))
    started.wait(5)
    threading.Timer(0.05, release.set).start()
    writers.stop()
    assert written == [0]


def test_once_stopping_a_write_waiting_for_its_keys_previous_one_never_starts():
    # A recorder aborting: a run's results write returns early when its drawing is cancelled,
    # and the run's end, already taken by the second thread, must not then end it FINISHED.
    started, release = threading.Event(), threading.Event()
    written: list[str] = []
    writers = OrderedWriters(2, "test-writer", wanted=lambda key: True, failed=lambda *a: None)

    def results() -> None:
        started.set()
        release.wait(5)

    writers.write("a", results)
    writers.write("a", lambda: written.append("ended"))  # taken, waiting for `results`
    started.wait(5)
    writers.stopping()
    release.set()
    writers.stop()
    assert written == []


def _job(epochs: int) -> Job:
    return engine_job(to_run_config(compose_config(*TINY, f"train.epochs={epochs}")))


def test_the_engines_job_numbers_reach_the_recorder_as_the_groups():
    # The engine trains the kept jobs 3 and 5 of a group as its 0 and 1.
    collected = Collected(stop_at={5: 2})
    shown = GroupBar(ForwardedEvents(collected, [3, 5]), [_job(3), _job(3)], 64, "2 runs")
    with shown:
        shown.epoch_ended(0, 1, {"val/total": 1.0})
        shown.epoch_ended(1, 1, {"val/total": 2.0})
        assert shown.should_stop(1, 2) and not shown.should_stop(0, 2)
        shown.job_stopped(1, 2)
        shown.job_failed(0, 2, RuntimeError("nan"))
    assert collected.epochs == {3: [{"val/total": 1.0}], 5: [{"val/total": 2.0}]}
    assert collected.stopped == {5: 2} and list(collected.failures) == [3]
    assert (shown.stopped, shown.failed) == (1, 1)
