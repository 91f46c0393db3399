"""What each job of a sweep knows of the sweep, and the file that carries it to the job.

The sweep callback starts the sweep in the launching process; its jobs may run elsewhere
(a parallel launcher's workers), so the context travels as a JSON file beside Hydra's
multirun.yaml. Light on purpose: the callback reads it without importing the run store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from vaelab.vocab import metrics
from vaelab.vocab.errors import ConfigError

CONTEXT_FILE = "vaelab_sweep.json"


@dataclass(frozen=True)
class SweepContext:
    """What each job of a sweep needs to know about the sweep it belongs to."""

    sweep_id: str
    parent_run_id: str
    total: int
    objective: str = metrics.OBJECTIVES[0]
    # The most epochs any of its runs trains: Hyperband's brackets, the same for every trial.
    max_epochs: int | None = None


def write_context(sweep_dir: Path, context: SweepContext) -> None:
    """Leave the context beside Hydra's multirun.yaml, where every launcher's jobs can read it."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / CONTEXT_FILE).write_text(json.dumps(asdict(context)))


def read_context(sweep_dir: Path) -> SweepContext:
    path = sweep_dir / CONTEXT_FILE
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: the sweep callback did not run. Keep "
            "`hydra.callbacks.vaelab_sweep` in conf/config.yaml."
        )
    return SweepContext(**json.loads(path.read_text()))
