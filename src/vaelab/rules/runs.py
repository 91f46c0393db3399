"""A configuration on its way to a run: planned, perhaps resumed, then what its run gave back.

The stages after `edges.config.Submission` (what a caller asked to train): the orchestration
turns each into a `PlannedRun` (identified, checked against the store), the recorder opens its
run and keeps it in `GroupRuns`, and hands back a `RunResult`. Kept apart from the recorder so
that the orchestration and the resume claims name them without importing the recorder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vaelab.edges import tracking
from vaelab.edges.config import Config
from vaelab.engines.base import Checkpoint


@dataclass(frozen=True)
class RunResult:
    """What a run gave back to whoever asked for it (CLI, sweep, rerun, notebook)."""

    run_id: str
    # Last epoch's train/ val/ and time/ values, test/ values: the numbers of the run.
    metrics: dict[str, float]
    # True when a sweep found this configuration already FINISHED (or trained elsewhere) and
    # did not train it again.
    skipped: bool = False
    # The epoch at which the sweep's pruner stopped it: its numbers are not a whole run's.
    pruned_at: int | None = None


@dataclass(frozen=True)
class Resumed:
    """A run killed before it finished, to be carried on where its last checkpoint left it."""

    run: tracking.RunRecord
    checkpoint: Checkpoint | None  # its newest valid one; None: from epoch 0
    logged: frozenset[int]  # the epochs it already logged (never logged twice)


@dataclass(frozen=True)
class PlannedRun:
    """A submission the orchestration identified and checked: what its run will record.

    `config_hash` is its identity under this code, backend and data; `resumed` the killed
    attempt it carries on, if any. Made by `orchestration.train`, opened by the recorder.
    """

    config: Config
    overrides: list[str]
    config_hash: str
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    resumed: Resumed | None = None


@dataclass
class GroupRuns:
    """A group's runs by job, as the recorder keeps them.

    A run leaves `open` only once the store has it ended, so whatever stops the group ends
    every other run, never leaving one RUNNING.
    """

    open: dict[int, tracking.Run] = field(default_factory=dict)
    created: dict[int, str] = field(default_factory=dict)  # every run it made, by job: run ids
    results: dict[int, RunResult] = field(default_factory=dict)
    errors: dict[int, BaseException] = field(default_factory=dict)  # why a job's run FAILED
