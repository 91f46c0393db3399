"""A Hydra launcher that trains a sweep's jobs together, as one compiled program per group.

Like hydra-joblib-launcher, it receives the sweeper's batch of jobs and returns one JobReturn
per job; unlike it, no job runs on its own. It composes and validates every job's config
first (a bad one refuses the batch before anything trains), hands the valid ones to the one
training path (`orchestration.train.train_batch` on the packed engine: grouping, `jax.vmap`,
one MLflow run per job), then gives each job its Hydra job directory and returns its
objective. It trains with
JAX: it selects the JAX backend itself when nothing has loaded Keras yet, and lays a CPU's
cores out as devices so that a group is split across them. With `ray.address` set, each group
is a Ray task on that cluster instead (`orchestration.ray_groups`), in the same environment,
and each job is recorded as its group ends.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

from hydra_plugins.vaelab_packed_launcher.schema import PackedLauncherConf  # noqa: F401 - registers it

log = logging.getLogger(__name__)


def check_settings(
    memory_fraction: float, max_group_size: int | None, ray: DictConfig | None = None
) -> None:
    """Refuse what types allow but packing cannot use, naming the key and the fix."""
    from vaelab.vocab.errors import ConfigError

    if ray is not None and ray.address is not None and not ray.num_cpus > 0:
        raise ConfigError(
            f"hydra.launcher.ray.num_cpus={ray.num_cpus} is invalid: expected the CPUs each "
            "group's task asks for, > 0 (e.g. 1)"
        )
    if ray is not None and ray.max_retries < -1:
        raise ConfigError(
            f"hydra.launcher.ray.max_retries={ray.max_retries} is invalid: expected >= 0 "
            "(or -1: Ray retries without end)"
        )

    if not 0 < memory_fraction <= 1:
        raise ConfigError(
            f"hydra.launcher.memory_fraction={memory_fraction} is invalid: expected the share "
            "of the device's memory a group may use, in (0, 1] (e.g. 0.5)"
        )
    if max_group_size is not None and max_group_size < 1:
        raise ConfigError(
            f"hydra.launcher.max_group_size={max_group_size} is invalid: expected an integer "
            ">= 1, or null for as many as fit in memory"
        )


class PackedLauncher(Launcher):
    # Every job of a batch is composed and checked in `launch` before any trains, so the
    # sweeper's own composition of the batch repeats it (vaelab_basic_sweeper skips it).
    composes_batch_first = True

    def __init__(
        self,
        memory_fraction: float,
        max_group_size: int | None,
        compilation_cache: str | None,
        ray: DictConfig | None = None,
    ) -> None:
        self.memory_fraction = memory_fraction
        self.max_group_size = max_group_size
        self.compilation_cache = compilation_cache
        self.ray = ray  # hydra.launcher.ray: address null trains here
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from vaelab.orchestration.sweep import refused
        from vaelab.vocab.errors import UserError

        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        try:
            check_settings(self.memory_fraction, self.max_group_size, self.ray)
        except UserError as error:  # one line, the parent FAILED: nothing trains
            raise refused(config, error, "the packed launcher refused the sweep") from None

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from vaelab.orchestration.sweep import refused
        from vaelab.rules.lifecycle.context import read_context
        from vaelab.vocab.errors import UserError

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        context = read_context(sweep_dir)
        configs = [
            self._job_config(overrides, initial_job_idx + i)
            for i, overrides in enumerate(job_overrides)
        ]
        try:
            jobs = self._validated(configs, job_overrides)
            use_jax(self.compilation_cache)
            if self._on_ray():
                from vaelab.orchestration import ray_groups

                ray_groups.connect(self.ray.address)
        except UserError as error:  # one line, as every user error; the sweep's parent FAILED
            raise refused(self.config, error, "the packed launcher refused the sweep") from None
        from vaelab.orchestration.sweep import SweepBar

        log.info("Packing %d jobs of sweep %s (output: %s)", len(jobs), context.sweep_id, sweep_dir)
        bar = SweepBar.of(context, initial_job_idx)
        returns = {}
        for indices, results in self._trained(jobs, context):  # as each group ends
            for i, result in zip(indices, results, strict=True):
                returns[i] = self._returned(bar, configs[i], jobs[i], result)
        return [returns[i] for i in range(len(jobs))]

    def _on_ray(self) -> bool:
        return self.ray is not None and self.ray.address is not None

    def _trained(self, jobs, context):
        """Each group's jobs (indices) and results as it ends: here, or as Ray tasks."""
        from vaelab.edges import progress
        from vaelab.engines.packed.engine import PackedEngine
        from vaelab.orchestration import ray_groups
        from vaelab.orchestration.train import train_batch

        if not self._on_ray():
            with progress.logs_above_bars():  # the groups' bars below the sweep's
                results = train_batch(
                    jobs, context, PackedEngine(), self.memory_fraction, self.max_group_size
                )
            yield list(range(len(jobs))), results
            return
        settings = ray_groups.RaySettings(
            str(self.ray.address), float(self.ray.num_cpus), int(self.ray.max_retries)
        )
        yield from ray_groups.train_on_ray(
            jobs,
            context,
            settings,
            self.memory_fraction,
            self.max_group_size,
            jax_environment(settings.num_cpus),
            self.compilation_cache,
        )

    def _returned(self, bar, config: DictConfig, job, result) -> JobReturn:
        """A job's end as Hydra records it: its job directory and its objective."""
        from vaelab.orchestration.sweep import sweeper_value

        bar.record(result)
        objective = math.inf if result is None else sweeper_value(result, job.config.objective)
        HydraConfig.instance().set_config(config)
        return run_job(
            hydra_context=self.hydra_context,
            task_function=lambda _cfg, value=objective: value,
            config=config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def _job_config(self, overrides: Sequence[str], number: int) -> DictConfig:
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = f"{config.hydra.job.name}_{number}"
            config.hydra.job.num = number
        return config

    def _validated(self, configs, job_overrides) -> list:
        """Every job as a Submission; a ConfigError naming each bad job otherwise."""
        from vaelab.edges.config import Submission, to_run_config
        from vaelab.vocab.errors import ConfigError, UserError

        jobs, problems = [], []
        for config, overrides in zip(configs, job_overrides, strict=True):
            try:
                jobs.append(Submission(to_run_config(_task_config(config)), list(overrides)))
            except UserError as error:
                problems.append(f"job {' '.join(filter_overrides(overrides))}: {error}")
        if problems:
            raise ConfigError("; ".join(problems))
        return jobs


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config as its task function would see it: without the `hydra` node."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def jax_environment(cpus: float) -> dict[str, str]:
    """The environment a Ray task trains a packed group in: JAX, its CPUs laid out as devices."""
    devices = max(1, int(cpus))
    return {
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }


def use_jax(compilation_cache: str | None) -> None:
    """Select Keras's JAX backend and show JAX every CPU core as a device, before either loads.

    Refuses, saying what to do, when Keras was already loaded with another backend.
    """
    from vaelab.vocab.errors import ConfigError

    wanted = os.environ.setdefault("KERAS_BACKEND", "jax")
    if wanted != "jax":
        raise ConfigError(
            f"hydra/launcher=packed trains with JAX, but KERAS_BACKEND={wanted}: run with "
            "KERAS_BACKEND=jax (or unset it)"
        )
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "jax":
        raise ConfigError("Keras was loaded with another backend before the packed launcher")
    if "jax" not in sys.modules:
        cores = os.cpu_count() or 1
        flag = f"--xla_force_host_platform_device_count={cores}"
        if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    if compilation_cache:
        # Loads JAX and Keras: only now that the backend and the devices are chosen.
        from vaelab.engines.backend import use_compilation_cache

        use_compilation_cache(compilation_cache)
