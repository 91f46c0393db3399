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
# A run carried on after it was killed: how often, from which epochs (comma-separated), and
# the claim of the process that carries it now.
RESUME_COUNT = "resume.count"
RESUMED_FROM = "resume.from_epochs"
RESUME_CLAIM = "resume.claim"
# A run the sweep's pruner stopped: the epoch it stopped at (its numbers are not a whole run's).
PRUNED = "pruned_at_epoch"
