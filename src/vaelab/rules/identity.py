"""What a run is, as opposed to where and how it runs: one policy, used everywhere.

A run's identity is its config minus its *locations*: every path, the run store, whether it
may repeat itself (`force`), how Hydra launches it and how it is carried out (`HOW_KEYS`), plus
the Keras backend it trains on (it changes the numbers). Two runs that differ only in locations
compute the same numbers, so they must share a config hash (a relaunched sweep skips them),
a sweep id, a rerun swaps locations for this machine's, and a report never calls them a
varying parameter, nor logs them as params. These five users import `is_location` from here
and nothing else decides.
A config may come flat (`train.epochs` keys, as params) or nested (`as_dict`, as hashed): the
rule is applied to every key's dotted path in both.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Top-level config sections (and keys) that say where or how, never what.
LOCATION_ROOTS = ("paths", "tracking", "force", "hydra")
# Keys elsewhere that change how a run is carried out, never a number it computes: how often it
# saves a checkpoint, how many it keeps, where a sweep's pruning decisions are stored, whether
# its best models are registered.
HOW_KEYS = (
    "train.checkpoint_every",
    "train.checkpoints_kept",
    "sweep.pruner_storage",
    "sweep.register_best",
    "sweep.seeds",  # how many replicates a sweep trains; each run's own seed is `seed`
)
_ABSENT = object()  # what `OmegaConf.select` returns for a key a config lacks


def override_key(override: str) -> str:
    """The dotted key an override sets.

    `+tracking.uri=x` -> `tracking.uri`, `hydra/launcher=packed` -> `hydra.launcher`.
    """
    key = override.split("=", 1)[0].lstrip("+~")
    return key.replace("/", ".")


def is_location(key: str) -> bool:
    """True for a dotted config key (or a `params.`-less MLflow param) that says where/how."""
    return key.split(".", 1)[0] in LOCATION_ROOTS or key in HOW_KEYS


def identity(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The part of a config (a plain dict, flat or nested) that determines what the run computes.

    Each key is judged by its dotted path from the config's root (`prefix` while descending):
    judged by its own name, a nested `sweep: {pruner_storage: ...}` would never match the
    dotted `sweep.pruner_storage`, and a sweep moved to another home would retrain everything.
    """
    kept = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if is_location(path):
            continue
        kept[key] = identity(value, f"{path}.") if isinstance(value, Mapping) else value
    return kept


def config_hash(config: Mapping[str, Any], code_version: str, backend: str) -> str:
    """Identity of a run for resuming sweeps: what it computes, the code and the Keras backend.

    The backend changes the numbers (TensorFlow's and JAX's kernels and noise differ), so a
    configuration finished or killed on one backend is neither skipped nor resumed on another.
    """
    blob = json.dumps([identity(config), code_version, backend], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def defining_overrides(overrides: Iterable[str]) -> list[str]:
    """The overrides that define what a sweep computes, sorted.

    its launcher, paths, store and `force` are left out, so a relaunch with any of them
    changed is the same sweep.
    """
    return sorted(o for o in overrides if not is_location(override_key(o)))


def sweep_id(experiment: str, sweeper: str, overrides: Iterable[str]) -> str:
    """Stable for the same sweep definition, whatever the launcher, locations or the date."""
    blob = json.dumps([experiment, sweeper, defining_overrides(overrides)]).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def relocate(
    original: DictConfig, here: DictConfig, schema: type, defaults: DictConfig | None = None
) -> DictConfig:
    """A recorded config with this machine's locations swapped in; what it computes is kept.

    A run's resolved config holds the absolute paths and store of the machine that ran it;
    every location section and `HOW_KEYS` setting that `here` has replaces the recorded one. A
    setting the run did not record (older code) takes its value from `defaults`.
    """
    base = [defaults] if defaults is not None else []
    merged = OmegaConf.merge(OmegaConf.structured(schema), *base, original)
    for root in LOCATION_ROOTS:
        if root in here and root in merged:
            section = merged[root]
            merged[root] = (
                OmegaConf.merge(section, here[root]) if OmegaConf.is_config(section) else here[root]
            )
    for key in HOW_KEYS:
        value = OmegaConf.select(here, key, default=_ABSENT)
        if value is not _ABSENT:
            OmegaConf.update(merged, key, value)
    return merged


def varying(params: Mapping[str, Iterable[Any]]) -> list[str]:
    """The params (name -> values over runs) that differ between runs, locations excluded."""
    return [
        name
        for name, values in params.items()
        if not is_location(name) and len({str(v) for v in values}) > 1
    ]
