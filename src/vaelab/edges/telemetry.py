"""MLflow's usage reports stay off unless the user turns them on.

MLflow 3 sends usage events to its makers by default (its UI says so), and keeps an
installation id on disk to do it. vaelab sets MLflow's own switch, MLFLOW_DISABLE_TELEMETRY,
wherever MLflow runs on its behalf: in its own processes before MLflow is imported
(`tracking`), and in the environment of `mlflow ui` (`make ui`) and `mlflow server`
(`make server`). Only where the switch is not set already: MLFLOW_DISABLE_TELEMETRY=false is
a user's opt-in, and wins. This module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import MutableMapping

SWITCH = "MLFLOW_DISABLE_TELEMETRY"


def off_unless_opted_in(environ: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """`environ` with MLflow's telemetry off, unless it already says otherwise; returned."""
    environ.setdefault(SWITCH, "true")
    return environ
