"""A packed sweep's groups as Ray tasks: one task per group, each recorded as it ends.

The driver (the packed launcher's process) plans the batch as a local packed sweep does
(`train.prepare`: checks, identities, what the store already holds; `grouping.packed_groups`),
with the memory Ray schedules on the cluster's largest node as the device. The verified MNIST
goes into Ray's object store once; each node fetches it from there once, whatever its own
disks hold (`paths.mnist_dir` is read by the driver only). Each group is one task that asks
for the group's estimated memory, `num_cpus` and one GPU where the cluster has GPUs, and that
Ray retries when its worker or node dies. The task refuses, in one line, to train on a node
whose code differs from the driver's (`code.sha256`), then trains its group on the one training
path (`train.train_batch`) with its runs tagged by task, worker and node (`edges.ray_task`), so
that a retry takes its dead attempt's runs over at once and resumes them from their
checkpoints (`lifecycle.claims.superseded`). Groups come back as they end (`ray.wait`), not in
the order they were submitted.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from vaelab.edges import provenance
from vaelab.edges.config import Submission
from vaelab.orchestration import grouping, train
from vaelab.rules import console
from vaelab.rules.lifecycle import children
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.naming import run_name
from vaelab.rules.packing import PackedGroup
from vaelab.rules.runs import RunResult
from vaelab.vae.data import Mnist
from vaelab.vocab.errors import ConfigError
from vaelab.vocab.tags import CODE_HASH, PACK_GROUP

log = logging.getLogger(__name__)

# After Ctrl-C or SIGTERM the driver cancels the groups' tasks (each ends its runs KILLED, as a
# local group does) and waits this long for them before it leaves: a driver that leaves at once
# takes its tasks down with it, their runs left RUNNING until their heartbeats age.
CANCEL_WAIT_S = 30.0
# How long the driver blocks in one `ray.wait` for the next group to end.
WAIT_S = 1.0
# The format of the lines a task logs; Ray forwards them to the driver's console, each line
# prefixed with the task and its node.
TASK_LOG_FORMAT = "[%(name)s][%(levelname)s] - %(message)s"

# Each group's jobs (indices into the batch) and their results (None: its run FAILED).
Finished = tuple[list[int], list[RunResult | None]]


@dataclass(frozen=True)
class RaySettings:
    """Where the cluster is and what each group's task asks of it (`hydra.launcher.ray`)."""

    address: str
    num_cpus: float
    max_retries: int


def connect(address: str) -> None:
    """Join the Ray cluster at `address` as its driver (`auto`: RAY_ADDRESS, else this machine's).

    A cluster that cannot be reached is a `ConfigError` naming the key, before anything trains.
    """
    import ray

    if ray.is_initialized():  # joined already (an earlier batch of this sweep, a test)
        return
    try:
        ray.init(address=address, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"hydra.launcher.ray.address={address}: no Ray cluster there ({reason}); start "
            "one with `ray start --head`, or name a running one's address (host:port)"
        ) from None


def train_on_ray(
    submissions: Sequence[Submission],
    context: SweepContext,
    settings: RaySettings,
    memory_fraction: float,
    max_group_size: int | None,
    worker_env: Mapping[str, str],
    compilation_cache: str | None,
) -> Iterator[Finished]:
    """Train the batch on the cluster `connect` joined; each group's results as it ends.

    The jobs the store already holds come first (skipped). `worker_env`: the environment a
    task trains in (the backend, set by the launcher that chooses it).
    """
    import ray

    from vaelab.engines.packed.engine import PackedEngine

    engine = PackedEngine()
    batch = train.prepare(submissions, context, engine)
    skipped = [i for i, (result, _) in enumerate(batch.outcomes) if result is not None]
    if skipped:
        yield skipped, [batch.outcomes[i][0] for i in skipped]
    budget = node_budget(memory_fraction, ray.nodes())
    plan = grouping.packed_groups(batch.planned, batch.todo, batch.mnist, budget, max_group_size)
    if not plan:
        return
    data = ray.put(batch.mnist)  # once; each node fetches it once
    gpus = ray.cluster_resources().get("GPU", 0) >= 1
    task = ray.remote(train_group_task)
    pending = {}
    for number, group in enumerate(plan):
        members = [batch.planned[i] for i in group.jobs]
        name = grouping.group_tags(engine, context, members, number)[PACK_GROUP]
        # A configuration alone over the budget is a group of its own: it asks for the budget.
        asked = min(group.estimated_bytes, budget)
        options = task_options(asked, settings, gpus, worker_env)
        ref = task.options(**options).remote(
            batch.environment[CODE_HASH],
            [submissions[i] for i in group.jobs],
            context,
            data,
            memory_fraction,
            max_group_size,
            compilation_cache,
        )
        pending[ref] = (group, name)
        asks = (options["num_cpus"], options["num_gpus"], options["memory"])
        log.info(console.group_submitted(context.sweep_id, name, len(group.jobs), *asks))
    try:
        while pending:
            # In short waits: a signal reaches Python between them (Ctrl-C, `ray job stop`).
            done, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            if not done:
                continue
            ref = done[0]
            group, name = pending.pop(ref)
            results = _results(ref, group, name, context, submissions, batch)
            failed = sum(result is None for result in results)
            log.info(console.group_returned(context.sweep_id, name, len(results), failed))
            yield list(group.jobs), results
    except BaseException:  # Ctrl-C, SIGTERM: each task ends its runs KILLED, then the driver
        for ref in pending:
            ray.cancel(ref)
        ray.wait(list(pending), num_returns=len(pending), timeout=CANCEL_WAIT_S)
        raise


def node_budget(memory_fraction: float, nodes: Sequence[Mapping]) -> int:
    """What a group may plan to use: the share of the memory Ray schedules on its largest node.

    `nodes`: `ray.nodes()`. A group planned within it can be placed; a node whose device holds
    less (a GPU) splits it again when its task trains (`train.train_batch`).
    """
    largest = max((n["Resources"].get("memory", 0) for n in nodes if n["Alive"]), default=0)
    return int(memory_fraction * largest)


def task_options(
    estimated_bytes: int, settings: RaySettings, gpus: bool, worker_env: Mapping[str, str]
) -> dict:
    """What a group's task asks of Ray: its memory estimate, CPUs, a GPU if any, retries.

    Spread over the nodes: a group is a long task, better alone on a node than queued behind
    another on the node that submitted it.
    """
    return {
        "num_cpus": settings.num_cpus,
        "num_gpus": 1 if gpus else 0,
        "memory": max(int(estimated_bytes), 1),
        "max_retries": settings.max_retries,
        "scheduling_strategy": "SPREAD",
        "runtime_env": {"env_vars": dict(worker_env)},
    }


def train_group_task(
    code: str,
    submissions: list[Submission],
    context: SweepContext,
    mnist: Mnist,
    memory_fraction: float,
    max_group_size: int | None,
    compilation_cache: str | None,
) -> list[RunResult | None]:
    """The body of a group's Ray task: check the code, then train the group on this node."""
    check_code(code)
    logging.basicConfig(level=logging.INFO, format=TASK_LOG_FORMAT)  # Ray forwards the lines
    from vaelab.engines import backend
    from vaelab.engines.packed.engine import PackedEngine

    if compilation_cache:
        backend.use_compilation_cache(compilation_cache)
    with _cancellable():
        return train.train_batch(
            submissions, context, PackedEngine(), memory_fraction, max_group_size, mnist=mnist
        )


@contextlib.contextmanager
def _cancellable() -> Iterator[None]:
    """Let `ray.cancel` interrupt the task: its runs then end KILLED, as after Ctrl-C.

    Ray cancels a running task by simulating SIGINT in it, but its workers start with SIGINT
    ignored (measured on Ray 2.60), which would leave the group training until the driver's
    departure kills the worker, its runs RUNNING.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_code(driver_code: str) -> None:
    """Refuse, in one line, to train with other code than the driver's.

    The runs would record the driver's identity for numbers another version computed.
    """
    mine = provenance.source_hash()
    if mine != driver_code:
        import ray

        node = ray.get_runtime_context().get_node_id()
        raise ConfigError(
            f"node {node[:12]} runs other code than the driver ({CODE_HASH} {mine[:12]} here, "
            f"{driver_code[:12]} on the driver): install the driver's checkout on every node"
        )


def _results(
    ref,
    group: PackedGroup,
    name: str,
    context: SweepContext,
    submissions: Sequence[Submission],
    batch: train.Batch,
) -> list[RunResult | None]:
    """What a group's task gave back; its jobs FAILED when the task itself failed."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:  # raised by the task before its runs opened
        cause = error.cause if error.cause is not None else error
        log.error(console.group_failed(context.sweep_id, name, cause))
        for i in group.jobs:
            plan = batch.planned[i]
            store = batch.stores.of(plan.config)
            children.record_early_failure(
                store, context, run_name(plan.config), submissions[i].overrides, cause
            )
    except ray.exceptions.RayError as error:  # its retries spent: the runs wait to be resumed
        reason = str(error).strip().splitlines()[0]
        log.error(console.group_task_lost(context.sweep_id, name, reason))
    return [None] * len(group.jobs)
