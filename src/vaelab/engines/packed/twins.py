"""Jobs of a group whose training is one computation: trained once, on one lane.

In the packed program a job's style only names the Keras model that is logged for it (every
style trains through the same program, so `sweep=grid`'s summary finds that style changes no
number), and a job of fewer epochs is the start of a longer one with the same settings: the
same weights, noise and batches so far (tests/jax/test_packed.py). So `sweep=grid` (3 styles x
epochs {1, 3} x 4 sizes) trains 4 lanes, not 24. Every job still gets its own run with its own
numbers (reported from the shared lane at each of its epochs), its own model of its own style
and its own figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vaelab.engines.base import Job

# Job fields that change nothing a packed lane computes: which Keras model is logged (style,
# loop), how long it trains (a shorter job is a prefix), settings of the other engine, and
# when its state is saved. A resumed job (`start`) continues its own state: it trains alone.
NOT_COMPUTED = frozenset(
    {
        "architecture",
        "loop",
        "epochs",
        "steps_per_execution",
        "deterministic",
        "checkpoint_every",
        "start",
    }
)


def computation(job: Job) -> tuple | None:
    """What decides a job's numbers in the packed program, its epochs aside (None: alone)."""
    if job.start is not None:
        return None
    return tuple(
        getattr(job, f.name) for f in dataclasses.fields(job) if f.name not in NOT_COMPUTED
    )


def riders(jobs: Sequence[Job]) -> dict[int, list[int]]:
    """Each lane's carrier and the jobs trained on it, the carrier (most epochs) first.

    Jobs of one computation share a lane; its carrier is the one of most epochs (the first of
    them on ties), and the others ride on it until their own last epoch.
    """
    shared: dict[tuple, list[int]] = {}
    lanes: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        key = computation(job)
        if key is None:
            lanes[i] = [i]
        else:
            shared.setdefault(key, []).append(i)
    for together in shared.values():
        ordered = sorted(together, key=lambda i: (-jobs[i].epochs, i))
        lanes[ordered[0]] = ordered
    return lanes
