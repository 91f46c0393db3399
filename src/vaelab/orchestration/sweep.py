"""The Hydra side of a sweep: a callback around the multirun and the body of each job.

`SweepCallback` runs in the launching process: before any job it opens the store (creating
its schema before parallel workers race on it) and starts the sweep through `lifecycle`;
after the last job it writes the verdict and turns failures into the exit code. `run_job`
is the task function's body: one run, or one job of a sweep, whose failure is recorded as a
FAILED run and returned as an infinite objective so that the launcher carries on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vaelab.edges import progress
from vaelab.edges.cli import exit_for
from vaelab.edges.config import check_objective, to_run_config
from vaelab.rules import identity
from vaelab.rules.lifecycle.context import SweepContext, read_context, write_context
from vaelab.rules.naming import run_name
from vaelab.vocab.errors import ConfigError, RunFailed
from vaelab.vocab.tags import LAUNCHER, SWEEP_ID, SWEEP_OVERRIDES, SWEEPER

log = logging.getLogger(__name__)

# Hydra builds the callback for every command, `--help` and `--cfg job` included: the run
# store (MLflow, pandas), the frameworks and what needs them are imported in the functions
# that need them, when a sweep or a run starts; `tests/test_cli.py` checks it.


def sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep's definition: command-line task overrides plus the sweeper's params."""
    task = [str(o) for o in config.hydra.overrides.task]
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params else {}
    return task + [f"{key}={value}" for key, value in params.items()]


def sweep_id_for(config: DictConfig) -> str:
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    return identity.sweep_id(config.experiment_name, sweeper, sweep_overrides(config))


def count_jobs(config: DictConfig) -> int:
    """How many jobs the sweep will launch: the grid's size, or a search's trial budget."""
    if "n_trials" in config.hydra.sweeper:
        return int(config.hydra.sweeper.n_trials)
    overrides = OverridesParser.create().parse_overrides(sweep_overrides(config))
    sizes = [len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override()]
    return math.prod(sizes) if sizes else 1


def largest_epochs(config: DictConfig) -> int:
    """The most epochs any job of the sweep trains: its `train.epochs` values, or the config's.

    Hyperband lays its brackets out from it once per sweep (`SweepContext.max_epochs`).
    """
    found = [int(config.train.epochs)]
    for override in OverridesParser.create().parse_overrides(sweep_overrides(config)):
        if override.get_key_element() != "train.epochs":
            continue
        value = override.value()
        if isinstance(value, IntervalSweep):  # a searched interval: its upper end
            found = [int(value.end)]
        elif override.is_sweep_override():
            found = [int(v) for v in override.sweep_string_iterator()]
        else:
            found = [int(value)]
    return max(found)


def open_store(config: DictConfig, patient: bool = False):
    """The sweep's store; `patient` once the sweep has started (it rides out a restart)."""
    from vaelab.edges import tracking

    return tracking.open_configured(config.tracking, patient)


def start_sweep(config: DictConfig):
    """Open the store and start (or resume) the sweep this multirun config defines."""
    from vaelab.rules.lifecycle import parent

    definition = {
        SWEEP_OVERRIDES: " ".join(sweep_overrides(config)),
        SWEEPER: config.hydra.sweeper.get("_target_", ""),
        LAUNCHER: config.hydra.launcher.get("_target_", ""),
    }
    context = parent.start_sweep(
        open_store(config), sweep_id_for(config), definition, count_jobs(config), config.objective
    )
    return dataclasses.replace(context, max_epochs=largest_epochs(config))


def seeds_from_config(config: DictConfig) -> None:
    """A `sweep.seeds: K` set in a config file (a preset) made into the sweep's seed axis.

    On the command line `sweep.seeds=K` becomes `seed=1,...,K` before Hydra reads it
    (`replicates.with_seed_axis`); a preset's K is known only once Hydra has composed it.
    Hydra calls this callback before it builds the sweeper from the config, so the axis
    lands in `hydra.sweeper.params`, where every sweeper reads it, and in the sweep's id.
    """
    from vaelab.rules.replicates import REPLICATE_KEYS, SEEDS_KEY

    seeds = int(config.sweep.seeds)
    keys = {identity.override_key(o) for o in sweep_overrides(config)}
    if seeds <= 1 or keys & set(REPLICATE_KEYS):
        if seeds > 1 and not any(f"{SEEDS_KEY}=" in str(o) for o in config.hydra.overrides.task):
            raise ConfigError(
                f"{SEEDS_KEY}: {seeds} in a config file and a seed= override both choose "
                "seeds: keep one (sweep.seeds=K means seed=1,...,K)"
            )
        return
    with read_write(config), open_dict(config):
        if config.hydra.sweeper.get("params") is None:
            config.hydra.sweeper.params = {}
        config.hydra.sweeper.params[REPLICATE_KEYS[0]] = ",".join(
            str(s) for s in range(1, seeds + 1)
        )


class SweepCallback(Callback):
    """Wires a Hydra multirun to one parent run in the store (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra only warns when a callback raises; a sweep that cannot be tracked must stop.
        try:
            check_objective(config.objective)  # before a parent run exists
            seeds_from_config(config)
            context = start_sweep(config)
        except Exception as error:
            raise exit_for(error, "cannot start the sweep") from error
        write_context(Path(config.hydra.sweep.dir), context)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from vaelab.rules import console
        from vaelab.rules.lifecycle import verdict

        SweepBar.close()
        try:
            context = read_context(Path(config.hydra.sweep.dir))
            summary = verdict.finish_sweep(open_store(config, patient=True), context)
        except Exception as error:
            raise exit_for(error, "cannot record the end of the sweep") from error
        print(console.verdict(summary))
        if config.sweep.register_best:
            register_best(open_store(config, patient=True), config.experiment_name, summary)
        verdict.raise_if_failed(summary)


def refused(config: DictConfig, error: Exception, what: str) -> SystemExit:
    """A sweep a plugin refuses before anything trains: its parent FAILED, one line, exit 1.

    Hydra would print a traceback for an error raised in a plugin; the parent the callback
    opened would stay RUNNING.
    """
    from vaelab.edges import tracking

    with contextlib.suppress(Exception):  # the store itself may be what is wrong
        context = read_context(Path(config.hydra.sweep.dir))
        tracking.close_run(open_store(config), context.parent_run_id, "FAILED", error=str(error))
    return exit_for(error, f"{what}; nothing trained")


def run_job(cfg: DictConfig) -> float:
    """The task function's body: one run, or one job of a sweep. Returns the objective.

    The config is validated before the training framework is even imported, so a mistake
    costs a second, not the framework's start-up.
    """
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        config = to_run_config(cfg)  # before any framework or the store is imported
        from vaelab.orchestration.train import train_and_evaluate

        return sweeper_value(train_and_evaluate(config, overrides), config.objective)
    context = read_context(Path(hydra_cfg.sweep.dir))
    bar = SweepBar.of(context, done_before=hydra_cfg.job.num)
    # Hydra set up this job's console handler just now: its lines go above the bars.
    with progress.logs_above_bars():
        result = _sweep_job(cfg, context, hydra_cfg.job.num + 1, overrides)
    bar.record(result)
    return math.inf if result is None else sweeper_value(result, cfg.objective)


def _sweep_job(cfg: DictConfig, context: SweepContext, number: int, overrides: list[str]) -> Any:
    """One job of a sweep: its RunResult, or None when it failed (recorded FAILED)."""
    from vaelab.rules.lifecycle import children

    log.info(
        "[sweep %s] run %d/%d: %s", context.sweep_id, number, context.total, " ".join(overrides)
    )
    try:
        config = to_run_config(cfg)
        from vaelab.orchestration.train import train_and_evaluate

        return train_and_evaluate(config, overrides, sweep=context)
    except RunFailed as failure:  # recorded as FAILED in the store; the sweep goes on
        log.error("[sweep %s] run %d failed: %s", context.sweep_id, number, failure.__cause__)
    except Exception as error:  # failed before its run existed: record it now
        log.error("[sweep %s] run %d failed: %s", context.sweep_id, number, error)
        children.record_early_failure(
            open_store(cfg, patient=True), context, run_name(cfg), overrides, error
        )
    return None


def register_best(store: Any, experiment: str, summary: Any) -> None:
    """The best run of each comparable group as a new version of its registered model.

    Named `<experiment>-<group>` ("vaelab" alone when every run compares), so each sweep
    adds a version and the Registry lists a group's best across sweeps.
    """
    from vaelab.edges import tracking

    for _, row in summary.best.iterrows():
        group = str(row["group"])
        suffix = (
            "" if group == "all runs" else "-" + re.sub(r"[^A-Za-z0-9]+", "-", group).strip("-")
        )
        name = f"{experiment}{suffix}"
        objective = float(row[f"metrics.{summary.objective}"])
        tags = {SWEEP_ID: summary.sweep_id, "group": group, summary.objective: f"{objective}"}
        description = (
            f"Best of sweep {summary.sweep_id} ({group}) by {summary.objective} = "
            f"{objective:.4f}: run {row['run_id']}"
        )
        try:
            version = tracking.register_version(store, name, row["run_id"], tags, description)
        except Exception as error:  # a run without a model, a store without a registry
            log.warning("Sweep %s: could not register %s: %s", summary.sweep_id, name, error)
            continue
        log.info("Sweep %s: registered %s version %s (run %s)", summary.sweep_id, name, version,
                 row["run_id"])  # fmt: skip


class SweepBar:
    """A sweep's progress on a terminal: runs done, pruned, failed and skipped of the total.

    One per sweep, in the process that runs its jobs (the basic and packed launchers; the
    workers of a parallel one show plain lines).
    """

    _current: SweepBar | None = None

    def __init__(self, sweep_id: str, total: int, done_before: int):
        self.sweep_id = sweep_id
        self.counts = {"done": 0, "pruned": 0, "failed": 0, "skipped": 0}
        self.bar = progress.bar(total, f"sweep {sweep_id}", "runs")
        if self.bar is not None:
            self.bar.update(done_before)

    @classmethod
    def of(cls, context: SweepContext, done_before: int = 0) -> SweepBar:
        if cls._current is None or cls._current.sweep_id != context.sweep_id:
            cls._current = cls(context.sweep_id, context.total, done_before)
        return cls._current

    def record(self, result: Any) -> None:
        """One job's end: a RunResult, or None for a run that failed."""
        kind = (
            "failed" if result is None
            else "skipped" if result.skipped
            else "pruned" if result.pruned_at is not None
            else "done"
        )  # fmt: skip
        self.counts[kind] += 1
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(f"{n} {k}" for k, n in self.counts.items()), False)
            self.bar.update(1)
            if self.bar.n < self.bar.total:
                # Hydra's launcher logs the next job's line itself, past our handlers: a clean
                # line for it. The bar comes back with the next job's first line.
                self.bar.clear()

    @classmethod
    def close(cls) -> None:
        if cls._current is not None and cls._current.bar is not None:
            cls._current.bar.close()
        cls._current = None


def sweeper_value(result, objective: str) -> float:
    """The objective as ranking sees it: a collapsed, failed or pruned run is never the minimum."""
    from vaelab.rules import ranking

    if result.pruned_at is not None:
        return ranking.Pruned(result.pruned_at)
    return ranking.sweeper_value(result.metrics, objective)
