"""The Python interface: read sweeps back, train a run, load its model, write a report.

For notebooks and scripts, beside the pipelines (which compose these same functions). It
never rewires the console (the pipelines pass fd 2 through a filter of TensorFlow's C++
start-up lines; a notebook keeps its own streams), never exits the interpreter (a mistake is
raised: `vaelab.vocab.errors`), and imports no deep-learning framework until a function that
trains or loads a model is called.

Every function reads the project's run store (mlruns/, or `VAELAB_HOME`), unless given
`store=` (any tracking URI: a sqlite file, whose artifacts are in `artifacts/` beside it, or
an `mlflow server`) and `experiment=`. Reading never writes: a store or an experiment that
is not there is an error naming it (TrackingError), never made on the way.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from vaelab.edges.config import Config
from vaelab.vocab import metrics
from vaelab.vocab.errors import ConfigError
from vaelab.vocab.tags import PARENT, SWEEP_ROLE

# The per-epoch metrics `history` returns when not told which.
EPOCH_METRICS = tuple(
    metrics.name(split, term) for split in ("train", "val") for term in metrics.TERMS
)
# The columns `runs` puts first; params.*, metrics.* and tags.* follow as MLflow names them.
LEADING = ["run_id", "run_name", "status", "group", "rank", "flag", "collapsed", "tied_with"]


def compose(overrides: Sequence[str] = (), *, config_name: str = "config") -> Config:
    """The run config that `python pipelines/train.py <overrides>` would compose, checked.

    Raises ConfigError (naming the key and what it accepts) for a bad value or unknown key.
    """
    from vaelab.edges.config import to_run_config

    return to_run_config(_compose(config_name, list(overrides)))


def train(config: Config | Sequence[str] = ()) -> Any:
    """Train one run as `config` says (a composed Config, or overrides), recorded like any other.

    Returns its RunResult (`run_id`, `metrics`: the final numbers it logged). A run that
    fails is recorded FAILED and raises RunFailed; a configuration already recorded FINISHED
    is not trained again (`force=true` retrains), its result is returned.
    """
    from vaelab.orchestration.train import train_and_evaluate

    if not isinstance(config, Config):
        config = compose(config)
    return train_and_evaluate(config)


def runs(
    sweep: str | None = None,
    *,
    metric: str = metrics.name("val", "total"),
    store: str | None = None,
    experiment: str | None = None,
    **filters: Any,
) -> pd.DataFrame:
    """One row per run of a sweep (the latest by default; `sweep="all"`: every run).

    Columns: run_id, run_name, status (MLflow's, or STALE for a RUNNING run whose process is
    gone, PRUNED for a run its sweep's pruner stopped), group (the comparable group), rank
    within it by `metric` (empty for runs that are not ranked), flag and collapsed (posterior
    collapse), tied_with; then params.*, metrics.* (final values) and tags.* as MLflow's
    `search_runs` names them. For a sweep, its current attempts (a run superseded by a
    relaunch is left out), as its summary and report judged them.

    Filters match a param by its full key or its last part, or a column:
    `runs(latent_dim=8, style="functional", status="FINISHED")`.
    """
    from vaelab.edges.config import check_objective
    from vaelab.orchestration.report import open_source, select, tables

    check_objective(metric, key="metric")  # what the command line refuses, refused here
    _check_status(filters.get("status"))
    cfg = _report_config(store, experiment, metric=metric)
    source = open_source(cfg.tracking, None)
    if sweep == "all":
        frame = _without_parents(source.runs_frame())
        sweep_id = None
    else:
        selection = select(source, sweep, None, None, cfg.latest_runs)
        frame, sweep_id = selection.runs, selection.sweep_id
    table = tables.build_table(
        frame, metric, cfg.partial_collapse, cfg.tracking.stale_after_s, time.time()
    )
    table["run_name"] = table.get("tags.mlflow.runName")
    table = _filtered(table, filters)
    first = [c for c in LEADING if c in table]
    rest = sorted(c for c in table if c.split(".", 1)[0] in ("params", "metrics", "tags"))
    others = [c for c in table if c not in first and c not in rest and c not in ("kind", "active")]
    table = table[first + rest + others].reset_index(drop=True)
    table.attrs.update(sweep_id=sweep_id, store=source.uri, metric=metric)
    return table


def configs(
    sweep: str | None = None,
    *,
    metric: str = metrics.name("val", "total"),
    store: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """One row per configuration of a sweep: its replicates' statistics, ranked by their mean.

    A configuration is a run's identity without its seed; its runs (seeds) are replicates.
    Columns: group (comparable group), configuration (a short key), rank (by mean, within the
    group), n (replicates that finished), mean, sd, se, ci_low and ci_high (the 95% Student's
    t interval for the mean; empty for one seed), indistinguishable (Welch's one-sided test
    cannot say it is worse than the best; empty for one seed), replicates (what became of
    each: "3 finished, 1 pruned"), run_ids, and the params the replicates share. Same store,
    selection and checks as `runs()`, whose rows these summarise.

    As in the report and the sweep's summary, a hyperparameter that changes no number (the
    styles, bit-identical by design) is folded, not ranked as ties: runs that differ only in
    it count once (`rules.comparison.collapse`), the first standing for the others, and its
    column is left out. `attrs["no_effect"]` says so (the report's sentences) and
    `attrs["stands_for"]` maps each run kept to the run ids folded into it.
    """
    from vaelab.rules import console, replicates
    from vaelab.rules.lifecycle import summary

    table = runs(sweep, metric=metric, store=store, experiment=experiment)
    folded = summary.fold(table, metric)
    configurations = replicates.summarise(summary.folded_runs(table, folded), metric)
    configurations.attrs.update(
        table.attrs,
        no_effect=console.no_effect_lines(folded, metric),
        stands_for={kept: ids for c in folded.values() for kept, ids in c.stands_for.items()},
    )
    return configurations


def history(
    runs: pd.DataFrame | str | Iterable[str],
    metrics: str | Sequence[str] | None = None,
    *,
    store: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """Per-epoch values as a long frame: one row per run, metric and epoch.

    `runs` is a frame from `runs()` (its run_id column; read from the same store), a run id
    or several. `metrics`: a name or several (default: EPOCH_METRICS). Columns: run_id,
    run_name (where the frame had it), metric, epoch, value. Raises ConfigError for a run
    the store does not have, or a metric that none of the runs logged.
    """
    from vaelab.orchestration.report import open_source

    names = {}
    if isinstance(runs, pd.DataFrame):
        names = dict(zip(runs["run_id"], runs.get("run_name", runs["run_id"]), strict=True))
        run_ids = list(runs["run_id"])
        store = store or runs.attrs.get("store")  # the store `runs()` read them from
    else:
        run_ids = _names(runs, "runs", "a frame from vaelab.runs(), a run id or a list of them")
    asked = [] if metrics is None else _names(metrics, "metrics", "a metric name or a list")
    source = open_source(_report_config(store, experiment).tracking, None)
    rows = [
        (run_id, names.get(run_id, run_id), name, step, value)
        for run_id in run_ids
        for name in asked or EPOCH_METRICS
        for step, value in source.metric_history(run_id, name)
    ]
    silent = set(run_ids) - {row[0] for row in rows}
    unlogged = [name for name in asked if name not in {row[2] for row in rows}]
    if run_ids and (silent or unlogged):
        _check_history(source, run_ids, unlogged)
    return pd.DataFrame(rows, columns=["run_id", "run_name", "metric", "epoch", "value"])


def load_model(run_id: str, *, store: str | None = None, experiment: str | None = None) -> Any:
    """The run's trained VAE, as logged: a Keras model that encodes and decodes.

    `model(x)` gives the reconstruction (the decoded mean), `model.get_layer("encoder")(x)`
    (z_mean, z_log_var) and `model.get_layer("decoder")(z)` pixels. Built of Keras's own
    layers, it loads without vaelab too: `mlflow.keras.load_model(f"models:/{model_id}")`.
    """
    from vaelab.edges import tracking

    cfg = _report_config(store, experiment)
    store = tracking.open_configured(cfg.tracking, reading=True)
    return tracking.load_logged_keras_model(store, run_id)


def report(
    sweep: str | None = None,
    *,
    store: str | None = None,
    experiment: str | None = None,
    **settings: Any,
) -> dict[str, Path]:
    """Write the report `python pipelines/report.py` writes; returns its files by kind.

    `settings` are the report's own keys (metric, top_k, filter, runs, out_dir, ...).
    """
    from vaelab.orchestration.report import make_report

    return make_report(_report_config(store, experiment, sweep_id=sweep, **settings))


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from vaelab.edges.config import project_root, register_configs
    from vaelab.edges.config_errors import check_home, config_error

    check_home()
    register_configs()
    with initialize_config_dir(config_dir=str(Path(project_root()) / "conf"), version_base="1.3"):
        try:
            return hydra_compose(config_name=config_name, overrides=overrides)
        except Exception as error:  # the command line's one-line message, as a ConfigError
            if (mistake := config_error(error, config_name)) is None:
                raise
            raise mistake from error


def _report_config(store: str | None, experiment: str | None, **settings: Any) -> DictConfig:
    overrides = [f"{key}={_hydra_value(value)}" for key, value in settings.items()]
    if store is not None:
        overrides.append(f"tracking.uri={_hydra_value(store)}")
        if store.startswith("sqlite:///"):  # its artifacts beside it, as vaelab makes them
            artifacts = Path(store.removeprefix("sqlite:///")).parent / "artifacts"
            overrides.append(f"tracking.artifact_root={_hydra_value(str(artifacts))}")
    if experiment is not None:
        overrides.append(f"experiment_name={_hydra_value(experiment)}")
    return _compose("report", overrides)


def _hydra_value(value: Any) -> str:
    """A Python value as the text of a Hydra override (None as null, strings quoted)."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return str(value)


def _without_parents(frame: pd.DataFrame) -> pd.DataFrame:
    role = f"tags.{SWEEP_ROLE}"
    return frame[frame[role].ne(PARENT)] if role in frame else frame


def _filtered(table: pd.DataFrame, filters: dict[str, Any]) -> pd.DataFrame:
    """The rows whose column (a param by full key or last part, or any column) equals each value."""
    for key, value in filters.items():
        column = _column_for(table, key)
        wanted = value if column in LEADING else str(value)
        table = table[table[column].astype(object).eq(wanted)]
    return table


def _column_for(table: pd.DataFrame, key: str) -> str:
    if key in table and key.split(".", 1)[0] not in ("params", "metrics", "tags"):
        return key
    for candidate in (f"params.{key}", key):
        if candidate in table:
            return candidate
    params = [c for c in table if c.startswith("params.") and c.endswith(f".{key}")]
    if len(params) == 1:
        return params[0]
    known = sorted(c.removeprefix("params.") for c in table if c.startswith("params."))
    if len(params) > 1:
        raise ConfigError(f"filter {key!r} is ambiguous: say which of {params}")
    raise ConfigError(
        f"no param or column {key!r} to filter on: use a param's key ({', '.join(known)}) "
        f"or one of {', '.join(c for c in LEADING if c in table)}"
    )


def _check_status(status: Any) -> None:
    """A status filter must name a status a run can have: a typo would match nothing."""
    from vaelab.rules.lifecycle.summary import STATUSES  # the store's modules: when asked

    statuses = (*STATUSES, "STALE")  # STALE: see tables.status_with_staleness
    if status is None or status in statuses:
        return
    close = difflib.get_close_matches(str(status).upper(), statuses, n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise ConfigError(f"status={status!r} is not a run status.{hint} The statuses: "
                      f"{', '.join(statuses)}.")  # fmt: skip


def _names(value: Any, argument: str, accepted: str) -> list[str]:
    """One name or several, as a list; anything else is refused, saying what is accepted."""
    if isinstance(value, str):
        return [value]
    names = list(value) if isinstance(value, Iterable) else None
    if names is not None and all(isinstance(name, str) for name in names):
        return names
    raise TypeError(f"{argument}= takes {accepted}; got {type(value).__name__} {value!r}")


def _check_history(source: Any, run_ids: list[str], unlogged: list[str]) -> None:
    """Refuse run ids the store does not have and metrics none of the runs logged.

    Run only when something came back empty, so it costs nothing otherwise.
    """
    frame = source.runs_frame(run_ids=run_ids)
    if unknown := [r for r in run_ids if r not in set(frame["run_id"])]:
        raise ConfigError(
            f"no run {', '.join(unknown)} in the store {source.uri}: use run ids from "
            "vaelab.runs(), or pass store= and experiment= where they were recorded"
        )
    logged = sorted(
        c.removeprefix("metrics.")
        for c in frame
        if c.startswith("metrics.") and frame[c].notna().any()
    )
    for name in unlogged:
        close = difflib.get_close_matches(name, logged, n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ConfigError(
            f"none of these runs logged the metric {name!r}.{hint} They have: {', '.join(logged)}"
        )
