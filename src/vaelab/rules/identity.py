"""What a run is, as opposed to where and how it runs: one policy, used everywhere.

A run's identity is its config minus its *locations*: every path, the run store, whether it
may repeat itself (`force`) and how Hydra launches it. Two runs that differ only in locations
compute the same numbers, so they must share a config hash (a relaunched sweep skips them),
a sweep id, a rerun swaps locations for this machine's, and a report never calls them a
varying parameter. The four users import `is_location` from here and nothing else decides.
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
)


def override_key(override: str) -> str:
    """The dotted key an override sets.

    `+tracking.uri=x` -> `tracking.uri`, `hydra/launcher=packed` -> `hydra.launcher`.
    """
    key = override.split("=", 1)[0].lstrip("+~")
    return key.replace("/", ".")


def is_location(key: str) -> bool:
    """True for a dotted config key (or a `params.`-less MLflow param) that says where/how."""
    return key.split(".", 1)[0] in LOCATION_ROOTS or key in HOW_KEYS


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a config (as a plain dict) that determines what the run computes."""
    return {key: value for key, value in config.items() if not is_location(key)}


def config_hash(config: Mapping[str, Any], code_version: str) -> str:
    """Identity of a run for resuming sweeps: what it computes and the code that computes it."""
    blob = json.dumps([identity(config), code_version], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
    every location section that `here` has replaces the recorded one. A setting the run did
    not record (older code) takes its value from `defaults`.
    """
    base = [defaults] if defaults is not None else []
    merged = OmegaConf.merge(OmegaConf.structured(schema), *base, original)
    for root in LOCATION_ROOTS:
        if root in here and root in merged:
            section = merged[root]
            merged[root] = (
                OmegaConf.merge(section, here[root]) if OmegaConf.is_config(section) else here[root]
            )
    return merged


def varying(params: Mapping[str, Iterable[Any]]) -> list[str]:
    """The params (name -> values over runs) that differ between runs, locations excluded."""
    return [
        name
        for name, values in params.items()
        if not is_location(name) and len({str(v) for v in values}) > 1
    ]
