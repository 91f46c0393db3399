"""Which Ray task this process runs, as the tags a run's claim carries.

Ray retries a task whose worker or node died (`max_retries`), in another worker: the retry's
runs must know the runs its dead attempt held are its own, and take them over at once instead
of waiting out their heartbeat (`lifecycle.claims.superseded`). So every run a Ray task opens
or resumes records the task, the worker of this attempt and the node. Ray itself is only asked
when something already loaded it: a process that never imported Ray runs no Ray task.
"""

from __future__ import annotations

import sys

from vaelab.vocab.tags import RAY_NODE_ID, RAY_TASK_ID, RAY_WORKER_ID


def task_tags() -> dict[str, str]:
    """The Ray task, worker and node of this process; empty outside a Ray task (a driver too)."""
    if "ray" not in sys.modules:
        return {}
    import ray

    if not ray.is_initialized():
        return {}
    context = ray.get_runtime_context()
    # A driver has no task: asking it for one is a warning on its console.
    if context.worker.mode != ray.WORKER_MODE or context.get_task_id() is None:
        return {}
    return {
        RAY_TASK_ID: context.get_task_id(),
        RAY_WORKER_ID: context.get_worker_id(),
        RAY_NODE_ID: context.get_node_id(),
    }
