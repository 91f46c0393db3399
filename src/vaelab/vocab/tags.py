"""The names of the tags every run carries, whoever writes or reads them.

`tracking` writes them, reports and sweeps read them; a module that only reads a table of
runs (`report.tables`) imports these names without importing MLflow. A sweep's own tags
(`sweep.id`, `sweep.role`, ...) belong to `lifecycle`.
"""

# Unix time of a run's last sign of life (start, then every epoch): how a run left RUNNING by
# a dead process is told from a live one.
HEARTBEAT_TAG = "heartbeat_at"
# Why a run ended FAILED or KILLED (the traceback is its error.txt artifact).
ERROR_TAG = "error"
PARENT_TAG = "mlflow.parentRunId"
