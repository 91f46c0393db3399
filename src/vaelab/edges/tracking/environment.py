"""MLflow's process-wide settings, in place before any module of this package imports mlflow.

MLflow reads them when it is imported, so the package's `__init__` imports this module first.
Only where the user has not set them already: an explicit setting wins.
"""

from __future__ import annotations

import os

from vaelab.edges import telemetry

# Reading one small artifact should not draw a progress bar; set before mlflow reads it.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# vaelab's own log names each run; a server store would add two "View run" lines per run.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# No usage reports to MLflow's makers unless the user opts in (`telemetry`).
telemetry.off_unless_opted_in(os.environ)

from mlflow.telemetry import get_telemetry_client, set_telemetry_client  # noqa: E402
from mlflow.telemetry.utils import is_telemetry_disabled  # noqa: E402

# MLflow imported before vaelab (a notebook's `import mlflow`) started its reporter already.
if (reporter := get_telemetry_client()) is not None and is_telemetry_disabled():
    set_telemetry_client()
    reporter.flush(terminate=True)
