"""The names of the tags every run carries, whoever writes or reads them.

`tracking` writes them, reports and sweeps read them; a module that only reads a table of
runs (`report.tables`) imports these names without importing MLflow. Every tag name a run or
a sweep's parent carries is spelled here once, a sweep's own (`sweep.id`, ...) included.
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
# The number of a run's Optuna trial in its pruning study (`rules.pruning`).
PRUNE_TRIAL = "prune.trial"
# MLflow's description of a run, shown under its name in the UI (a pruned run says so there).
NOTE = "mlflow.note.content"

# What a run is and where it came from (`rules.naming`).
STYLE = "style"
LOSS = "loss"
BACKEND = "backend"
DATA_SHA256 = "data.sha256"
GIT_COMMIT = "mlflow.source.git.commit"
# The code and machine a run ran on (`edges.provenance`): its commit, uncommitted edits, the
# hash of its source as it was on disk, the platform, and one `version.<package>` per package.
CODE_COMMIT = "git.commit"
CODE_DIRTY = "git.dirty"
CODE_HASH = "code.sha256"
PLATFORM = "platform"
VERSION_PREFIX = "version."
# The overrides that made the run's config: what a rerun replays, what tells attempts apart.
OVERRIDES = "hydra.overrides"
# The hash of what the run computes (`rules.identity`): one configuration, one hash.
CONFIG_HASH = "config_hash"
# Where a run's location settings go: tags `config.<key>`, not params (`naming.run_params`).
LOCATION_TAG_PREFIX = "config."
# How a run was trained: "solo" (its own process or job) or "packed" (with its group), where.
ENGINE = "engine"
DEVICE = "device"
# A packed group's name (a hash of its members) and size.
PACK_GROUP = "pack.group"
PACK_SIZE = "pack.size"
# The run or the sweep this one retrains (`orchestration.rerun`).
RERUN_OF = "rerun_of"
# A child left RUNNING by a dead process, marked KILLED by a relaunch.
STALE = "stale"
# The Ray task that trains a run now (`edges.ray_task`): the task, the worker process of this
# attempt, the node. A retry is the same task in another worker: it takes the run over at
# once (`lifecycle.claims.superseded`). Blank on a run carried on outside Ray.
RAY_TASK_ID = "ray.task_id"
RAY_WORKER_ID = "ray.worker_id"
RAY_NODE_ID = "ray.node_id"
RAY_TASK_TAGS = (RAY_TASK_ID, RAY_WORKER_ID, RAY_NODE_ID)

# A sweep: one parent run whose children are its configurations (`rules.lifecycle`).
SWEEP_ID = "sweep.id"
SWEEP_ROLE = "sweep.role"
PARENT = "parent"  # the values of SWEEP_ROLE
CHILD = "child"
# The parent's record of what the sweep is: its definition, size and objective...
SWEEP_OVERRIDES = "sweep.overrides"
SWEEPER = "sweep.sweeper"
LAUNCHER = "sweep.launcher"
SWEEP_SIZE = "sweep.size"
SWEEP_OBJECTIVE = "sweep.objective"
# ...and its verdict: runs by status (`sweep.count.finished`, ...), the best run (one per
# comparable group: `sweep.best_run_id.group1`, ...) and its overrides.
SWEEP_COUNT_PREFIX = "sweep.count."
BEST_RUN = "sweep.best_run_id"
BEST_OVERRIDES = "sweep.best_overrides"
