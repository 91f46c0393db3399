"""Sweeps: one parent run per sweep, failure isolation, resume, progress and a summary.

Hydra runs the jobs; this module makes a multirun behave like one experiment:
- `SweepCallback.on_multirun_start`, in the launching process before any worker starts,
  creates the store's schema and the sweep's parent run (parallel workers opening a fresh
  sqlite store at once race on schema creation), marks children that a dead process left
  RUNNING as KILLED, and writes the sweep's context next to Hydra's `multirun.yaml`.
- `run_job` (each job) reads that context, skips a configuration that already FINISHED in
  this sweep, and turns a failure into a FAILED run plus an infinite objective, so that the
  launcher carries on with the other jobs.
- `on_multirun_end` counts runs by status, names the best, logs it all to the parent, prints
  a table and exits non-zero if any run failed.
The sweep id is a hash of the sweep's definition, so launching the same sweep again finds
the same parent and the runs it already finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from vaelab import tracking
from vaelab.run import RunResult, SweepContext, run_name, train_and_evaluate

log = logging.getLogger(__name__)

CONTEXT_FILE = "vaelab_sweep.json"
# Overrides that change how a sweep runs, not what it computes: not part of its identity.
_NOT_IDENTITY = ("force", "tracking.", "paths.", "hydra.")
_STATUSES = ("FINISHED", "FAILED", "KILLED", "RUNNING")


def _sweep_overrides(config: DictConfig) -> list[str]:
    """The sweep's definition: command-line task overrides plus the sweeper's params."""
    task = [str(o) for o in config.hydra.overrides.task]
    params = config.hydra.sweeper.get("params")
    params = OmegaConf.to_container(params, resolve=True) if params else {}
    return task + [f"{key}={value}" for key, value in params.items()]


def sweep_id_for(config: DictConfig) -> str:
    """Stable for the same sweep definition, whatever the launcher, `force` or the date."""
    definition = sorted(o for o in _sweep_overrides(config) if not o.startswith(_NOT_IDENTITY))
    sweeper = str(config.hydra.sweeper.get("_target_", ""))
    blob = json.dumps([config.experiment_name, sweeper, definition]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def count_jobs(config: DictConfig) -> int:
    """How many jobs the sweep will launch: the grid's size, or a search's trial budget."""
    if "n_trials" in config.hydra.sweeper:
        return int(config.hydra.sweeper.n_trials)
    overrides = OverridesParser.create().parse_overrides(_sweep_overrides(config))
    sizes = [len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override()]
    return math.prod(sizes) if sizes else 1


def _open_store(config: DictConfig) -> tracking.Store:
    t = config.tracking
    return tracking.open_store(t.uri, t.experiment, t.artifact_root)


def _start_parent(store: tracking.Store, config: DictConfig, sweep_id: str, total: int) -> str:
    """Find this sweep's parent run (a relaunch) or create it, with the sweep's definition."""
    existing = tracking.find_runs(store, {"sweep.id": sweep_id, "sweep.role": "parent"})
    definition = {
        "sweep.id": sweep_id,
        "sweep.role": "parent",
        "sweep.overrides": " ".join(_sweep_overrides(config)),
        "sweep.sweeper": config.hydra.sweeper.get("_target_", ""),
        "sweep.launcher": config.hydra.launcher.get("_target_", ""),
        "sweep.size": total,
        "sweep.objective": config.objective,
    }
    if existing:
        parent = existing[0].run_id
        tracking.reopen_run(store, parent)
        tracking.update_run(store, parent, tags=definition)
        return parent
    return tracking.create_run(store, f"sweep-{sweep_id}", definition)


def _mark_stale_children(store: tracking.Store, sweep_id: str) -> list[str]:
    """Children still RUNNING when their sweep is launched again were left by a dead process."""
    stale = tracking.find_runs(store, {"sweep.id": sweep_id, "sweep.role": "child"}, "RUNNING")
    for run in stale:
        tracking.update_run(store, run.run_id, tags={"stale": "true"})
        tracking.close_run(
            store, run.run_id, "KILLED", error="left RUNNING by a process that died; relaunched"
        )
    return [run.run_id for run in stale]


def write_context(sweep_dir: Path, context: SweepContext) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / CONTEXT_FILE).write_text(json.dumps(asdict(context)))


def read_context(sweep_dir: Path) -> SweepContext:
    path = sweep_dir / CONTEXT_FILE
    if not path.is_file():
        raise RuntimeError(
            f"{path} is missing: the sweep callback did not run. Keep "
            "`hydra.callbacks.vaelab_sweep` in conf/config.yaml."
        )
    return SweepContext(**json.loads(path.read_text()))


def current_attempts(runs: list[tracking.RunRecord]) -> list[tracking.RunRecord]:
    """One run per configuration: its FINISHED attempt if any, else its latest.

    A run killed and then redone by a relaunch is superseded: the sweep is judged by what
    each configuration finally gave, while the store keeps every attempt.
    """
    chosen: dict[str, tracking.RunRecord] = {}
    for run in runs:  # oldest first
        key = run.tags.get("config_hash") or run.tags.get("hydra.overrides") or run.run_id
        if chosen.get(key) is None or chosen[key].status != "FINISHED":
            chosen[key] = run
    return list(chosen.values())


def summarise(store: tracking.Store, sweep_id: str, objective: str) -> dict[str, Any]:
    """Counts by status and the best finished run by the objective (lower is better)."""
    every = tracking.find_runs(store, {"sweep.id": sweep_id, "sweep.role": "child"})
    runs = current_attempts(every)
    counts = {status: sum(r.status == status for r in runs) for status in _STATUSES}
    counts["SUPERSEDED"] = len(every) - len(runs)
    finished = [r for r in runs if r.status == "FINISHED" and objective in r.metrics]
    best = min(finished, key=lambda r: r.metrics[objective], default=None)
    return {"runs": runs, "counts": counts, "best": best}


def format_table(runs: list[tracking.RunRecord], objective: str) -> str:
    """One line per run, best first: what the user reads when the sweep ends."""

    def key(run: tracking.RunRecord) -> tuple[int, float]:
        return (run.status != "FINISHED", run.metrics.get(objective, math.inf))

    header = f"{'status':<9} {objective:>11} {'test/total':>11}  {'run_id':<32}  overrides"
    lines = [header]
    for run in sorted(runs, key=key):
        value = run.metrics.get(objective, math.nan)
        test = run.metrics.get("test/total", math.nan)
        lines.append(
            f"{run.status:<9} {value:>11.4f} {test:>11.4f}  {run.run_id}  "
            f"{run.tags.get('hydra.overrides', '')}"
        )
    return "\n".join(lines)


class SweepFailed(SystemExit):
    """Raised at the end of a sweep in which some runs failed, so the exit code says so."""


class SweepCallback(Callback):
    """Wires a Hydra multirun to one parent run in the store (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra only warns when a callback raises; a sweep that cannot be tracked must stop.
        try:
            self._start(config)
        except Exception as error:
            raise SystemExit(f"Cannot start the sweep: {error}") from error

    def _start(self, config: DictConfig) -> None:
        store = _open_store(config)  # creates the schema before any worker exists
        sweep_id, total = sweep_id_for(config), count_jobs(config)
        parent = _start_parent(store, config, sweep_id, total)
        stale = _mark_stale_children(store, sweep_id)
        write_context(Path(config.hydra.sweep.dir), SweepContext(sweep_id, parent, total))
        log.info(
            "Sweep %s: %d runs, parent run %s%s",
            sweep_id,
            total,
            parent,
            f"; {len(stale)} stale RUNNING runs marked KILLED" if stale else "",
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        store = _open_store(config)
        context = read_context(Path(config.hydra.sweep.dir))
        summary = summarise(store, context.sweep_id, config.objective)
        counts, best = summary["counts"], summary["best"]
        tags = {f"sweep.count.{k.lower()}": v for k, v in counts.items()}
        metrics = {}
        if best is not None:
            tags.update(
                {
                    "sweep.best_run_id": best.run_id,
                    "sweep.best_overrides": best.tags.get("hydra.overrides", ""),
                }
            )
            metrics = {f"best/{config.objective}": best.metrics[config.objective]}
        table = format_table(summary["runs"], config.objective)
        tracking.update_run(
            store,
            context.parent_run_id,
            tags=tags,
            metrics=metrics,
            texts={"summary.txt": table + "\n"},
        )
        failed = [r for r in summary["runs"] if r.status in ("FAILED", "KILLED")]
        tracking.close_run(store, context.parent_run_id, "FAILED" if failed else "FINISHED")
        print(
            f"\nSweep {context.sweep_id}: "
            + ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)
        )
        print(table)
        if best is not None:
            print(f"Best by {config.objective}: {best.run_id} ({best.tags.get('hydra.overrides')})")
        if failed:
            names = ", ".join(f"{r.run_id} ({r.tags.get('hydra.overrides', '')})" for r in failed)
            raise SweepFailed(f"{len(failed)} run(s) of sweep {context.sweep_id} failed: {names}")


def run_job(cfg: DictConfig) -> float:
    """The task function's body: one run, or one job of a sweep. Returns the objective."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return train_and_evaluate(cfg, overrides).metrics[cfg.objective]
    context = read_context(Path(hydra_cfg.sweep.dir))
    log.info(
        "[sweep %s] run %d/%d: %s",
        context.sweep_id,
        hydra_cfg.job.num + 1,
        context.total,
        " ".join(overrides),
    )
    try:
        result: RunResult = train_and_evaluate(cfg, overrides, sweep=context)
    except Exception as error:  # recorded as FAILED in the store; the sweep goes on
        log.error("[sweep %s] run %d failed: %s", context.sweep_id, hydra_cfg.job.num + 1, error)
        if getattr(error, tracking.RUN_ID_ATTRIBUTE, None) is None:
            _record_early_failure(cfg, overrides, context, error)
        return math.inf
    return result.metrics[cfg.objective]


def _record_early_failure(
    cfg: DictConfig, overrides: list[str], context: SweepContext, error: Exception
) -> None:
    """Give a job that failed before its run existed (bad config, bad data) a FAILED child.

    The sweep's summary and exit code then account for every job.
    """
    store = _open_store(cfg)
    tags = {
        "sweep.id": context.sweep_id,
        "sweep.role": "child",
        "mlflow.parentRunId": context.parent_run_id,
        "hydra.overrides": " ".join(overrides),
    }
    run_id = tracking.create_run(store, run_name(cfg), tags)
    tracking.close_run(store, run_id, "FAILED", error=f"{type(error).__name__}: {error}")
