"""A group's progress bar on a terminal, moved by the events it passes on to the recorder.

A solo run's bar is its own; a packed group's is one for all its members. Steps count each
member's epochs in batches; the bar moves at epoch ends (seconds apart on MNIST).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from vaelab.edges import progress
from vaelab.engines.base import Events, ForwardedEvents, Job
from vaelab.rules.recorder import Recorder
from vaelab.vocab import metrics


class GroupBar(ForwardedEvents):
    """The events, passed on unchanged, and on a terminal a progress bar of them."""

    def __init__(self, events: Events, trained: Sequence[Job], train_rows: int, title: str):
        super().__init__(events)
        self.trained = trained  # the engine's jobs, as it numbers them
        self.steps = [-(-train_rows // job.batch_size) for job in trained]  # batches per epoch
        total = sum(job.epochs * steps for job, steps in zip(trained, self.steps, strict=True))
        start = [job.start.epoch if job.start else 0 for job in trained]
        self.bar = progress.bar(total, title, "steps")
        self.reached = dict(enumerate(start))
        self.stopped = self.failed = 0
        if self.bar is not None:
            self.bar.update(sum(e * n for e, n in zip(start, self.steps, strict=True)))

    def __enter__(self) -> GroupBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def epoch_ended(self, job: int, epoch: int, values: Mapping[str, float]) -> None:
        super().epoch_ended(job, epoch, values)
        if self.bar is None:
            return
        self.bar.update((epoch - self.reached[job]) * self.steps[job])
        self.reached[job] = epoch
        loss = values.get(metrics.name("val", "total"), math.nan)
        if len(self.trained) == 1:
            train = values.get(metrics.name("train", "total"), math.nan)
            postfix = f"epoch {epoch}/{self.trained[job].epochs}, train/total {train:.2f}, "
            self.bar.set_postfix_str(postfix + f"val/total {loss:.2f}", refresh=False)
        else:
            training = len(self.trained) - self.stopped - self.failed - self._finished()
            self.bar.set_postfix_str(
                f"epoch {max(self.reached.values())}, {training} of {len(self.trained)} "
                f"training, {self.stopped} pruned, {self.failed} failed",
                refresh=False,
            )

    def job_stopped(self, job: int, epoch: int) -> None:
        super().job_stopped(job, epoch)
        self.stopped += 1
        self._left(job)

    def job_failed(self, job: int, epoch: int, error: BaseException) -> None:
        super().job_failed(job, epoch, error)
        self.failed += 1
        self._left(job)

    def _finished(self) -> int:
        return sum(self.reached[j] >= job.epochs for j, job in enumerate(self.trained))

    def _left(self, job: int) -> None:
        """A member that stops early: its remaining steps leave the total."""
        if self.bar is not None:
            self.bar.total -= (self.trained[job].epochs - self.reached[job]) * self.steps[job]
            self.bar.refresh()


def bar_title(recorder: Recorder, kept: Sequence[int]) -> str:
    """A solo run's bar names its run; a group's counts its runs."""
    if len(kept) == 1:
        return f"run {recorder.runs.open[kept[0]].run_id[:8]}"
    return f"{len(kept)} runs"
