"""MLflow's system metrics beside a run's own (`tracking.system_metrics=true`).

A monitor thread per run, from `Run.monitor_system` until the run ends; the `Run` handle has
this as a base (`SystemMetrics`).
"""

from __future__ import annotations

from typing import Any

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from vaelab.edges.tracking.store import Store

# Each run's system-metrics monitor, while it is open (Run.monitor_system).
_SYSTEM_MONITORS: dict[str, Any] = {}


class SystemMetrics:
    """What `Run` measures of the machine; the run's id and store are `Run`'s."""

    run_id: str
    store: Store

    def monitor_system(self) -> None:
        """MLflow's system metrics beside the run's own, every 10 s until it ends.

        `system/*`: CPU, memory, disk, network, and NVIDIA GPUs' utilisation and memory
        (`tracking.system_metrics=true`).
        """
        monitor = SystemMetricsMonitor(
            self.run_id, tracking_uri=self.store.uri, resume_logging=True
        )
        monitor.start()
        _SYSTEM_MONITORS[self.run_id] = monitor

    def stop_monitoring(self) -> None:
        """The run's monitor finished, if it has one (the run ends)."""
        if (monitor := _SYSTEM_MONITORS.pop(self.run_id, None)) is not None:
            monitor.finish()
