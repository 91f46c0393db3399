"""The plugin's settings as a typed schema, registered with Hydra's ConfigStore.

No `from __future__ import annotations` here: Hydra imports plugin modules in a way that leaves
string annotations unresolvable, and OmegaConf reads these types at composition.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class PackedRayConf:
    """Where the groups train: this process (address null) or a Ray cluster, one task each."""

    address: str | None = MISSING
    num_cpus: float = MISSING
    max_retries: int = MISSING


@dataclass
class PackedLauncherConf:
    """The launcher's settings, typed: conf/hydra/launcher/packed.yaml holds their values."""

    _target_: str = "hydra_plugins.vaelab_packed_launcher.packed_launcher.PackedLauncher"
    memory_fraction: float = MISSING
    max_group_size: int | None = None
    compilation_cache: str | None = None
    ray: PackedRayConf = field(default_factory=PackedRayConf)


# Listed first in packed.yaml's defaults: a typo or a wrong type fails at composition.
ConfigStore.instance().store(
    group="hydra/launcher", name="vaelab_packed_schema", node=PackedLauncherConf, provider="vaelab"
)
