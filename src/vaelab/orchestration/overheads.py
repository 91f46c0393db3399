"""Costs a run would pay on its way, paid once ahead instead (docs/benchmarks.md).

Logging a group's first model of each shape imports TensorFlow and compiles every op anew;
full garbage collections walk every object start-up made. Neither changes a number.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

from vaelab.engines.base import Job
from vaelab.rules.runs import PlannedRun
from vaelab.vae import data as mnist_data
from vaelab.vae.models import build_vae, warm_up_logging


def model_logging_warm_up(
    jobs: Sequence[Job], planned: Sequence[PlannedRun], pools: mnist_data.Pools
) -> Callable[[], None]:
    """What logging the group's models will first pay, to be paid while the group trains.

    One model of each shape, built here, is called and serialised in a writer thread
    (`models.warm_up_logging`); the members' own models then find both done.
    """
    shapes = {}
    for job, plan in zip(jobs, planned, strict=True):
        if plan.config.tracking.log_model:
            shapes.setdefault((job.architecture, job.intermediate_dim, job.latent_dim), job)
    models = [
        build_vae(j.architecture, j.input_dim, j.intermediate_dim, j.latent_dim, j.seed, j.loss)
        for j in shapes.values()
    ]
    example = pools.x_test[:4]  # as many rows as the logged input example

    def warm_up() -> None:
        for model in models:
            warm_up_logging(model, example)

    return warm_up


def freeze_long_lived_objects() -> None:
    """Keep what start-up made (modules, TensorFlow's runtime) out of later garbage collections.

    A full collection walks every live object, TensorFlow's, Keras's and MLflow's included,
    and one fell inside nearly every run (docs/benchmarks.md). Frozen (`gc.freeze`), they are
    never walked again; they live as long as the process anyway. Not collected first: that
    would cost a full collection to free the few objects start-up leaves as garbage. Each
    run's own garbage is collected as before.
    """
    if not gc.get_freeze_count():
        gc.freeze()
