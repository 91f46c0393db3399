"""Hydra's basic sweeper, without composing every job twice when the launcher does it first.

Hydra's BasicSweeper composes each job of a batch before it hands the batch to the launcher
(`Sweeper.validate_batch_is_legal`: a bad job fails before anything runs), and the launcher
then composes each job again to run it; Hydra's docstring calls this repeated work. A launcher
that composes and checks every job of a batch before it starts any (`composes_batch_first`:
the packed launcher) makes the first pass redundant, so it is skipped for such a launcher:
about 100 ms a job here, 10 s of a 96-job sweep (docs/benchmarks.md). Any other launcher gets
Hydra's check as it is.

It is registered as `hydra/sweeper=basic`, the default every `--multirun` uses, in place of
Hydra's own (a preset that selects another sweeper, such as `sweep=optuna`, still does): a
default in conf/config.yaml would have to be an `override`, and the primary config's override
wins over a preset's. BasicSweeper lives in `hydra._internal`: it is used here only, and the
pass is skipped only on the hydra-core versions this was checked against (`CHECKED`); on
another one this sweeper is Hydra's, checks and all.
"""

from collections.abc import Sequence

import hydra
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper, BasicSweeperConf
from hydra.core.config_store import ConfigStore

# hydra-core versions whose BasicSweeper.sweep composes a batch only to check it.
CHECKED = ("1.3.",)


def skips_composition(launcher: object) -> bool:
    """Whether the sweeper's own composition of a batch repeats the launcher's check."""
    return getattr(launcher, "composes_batch_first", False) and hydra.__version__.startswith(
        CHECKED
    )


class VaelabBasicSweeper(BasicSweeper):
    """Hydra's BasicSweeper; a batch is composed once when the launcher checks it first."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if not skips_composition(self.launcher):
            super().validate_batch_is_legal(batch)


# Imported above, Hydra's module has registered its own `basic` already: this replaces it.
ConfigStore.instance().store(
    group="hydra/sweeper",
    name="basic",
    node=BasicSweeperConf(
        _target_="hydra_plugins.vaelab_basic_sweeper.basic_sweeper.VaelabBasicSweeper"
    ),
    provider="vaelab",
)
