"""The plugin's settings as a typed schema, registered with Hydra's ConfigStore.

No `from __future__ import annotations` here: Hydra imports plugin modules in a way that leaves
string annotations unresolvable, and OmegaConf reads these types at composition.
"""

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class OptunaSweeperConf:
    """The sweeper's settings, typed: conf/hydra/sweeper/optuna.yaml holds their values."""

    _target_: str = "hydra_plugins.vaelab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    n_trials: int = MISSING
    n_jobs: int = MISSING
    seed: int = MISSING
    storage: str = MISSING
    params: dict[str, str] = field(default_factory=dict)
    # true: `n_jobs` launches of one trial each in flight, the next trial asked as soon as one
    # ends (no worker idles). false: batch mode, `n_jobs` trials per launch, the next batch
    # once all of them ended (benchmarks/bench_sweeper.py compares the two). The basic and
    # packed launchers always get batches (slots.WHOLE_BATCHES).
    async_trials: bool = MISSING


# Listed first in optuna.yaml's defaults: a typo or a wrong type fails at composition.
ConfigStore.instance().store(
    group="hydra/sweeper", name="vaelab_optuna_schema", node=OptunaSweeperConf, provider="vaelab"
)
