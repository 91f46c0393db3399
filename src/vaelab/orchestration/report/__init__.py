"""Comparison reports, read from the run store alone (MLflow -> pandas -> tables and figures).

It never trains, and imports no deep-learning framework: every number it shows was logged by
the runs themselves. `tables` holds the logic (pure pandas), `figures` the drawing,
`render` the files; this module reads the store and puts them together. Runs from older code
versions with fewer columns, failed and killed runs, and runs without artifacts are shown for
what they have.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
from omegaconf import DictConfig

from vaelab.edges import mlflow_tables, tracking
from vaelab.edges.config import check_objective
from vaelab.edges.mlflow_tables import LocalStore
from vaelab.edges.store_uri import check_uri
from vaelab.edges.ui import run_url, runs_table_url, server_ui_url
from vaelab.orchestration.report import configurations, figures, render, tables
from vaelab.rules import comparison
from vaelab.rules.lifecycle import attempts, children, parent
from vaelab.vocab import metrics
from vaelab.vocab.errors import ReportError
from vaelab.vocab.tags import PARENT, SWEEP_ROLE

log = logging.getLogger(__name__)

DEFAULT_UI = "http://127.0.0.1:5000"
# `make ui` writes the address it serves here, so run links follow its HOST and PORT.
UI_URL_FILE = "ui_url.txt"
# MLflow 3.17's UI ignores the experiment's `mlflow.experimentKind` tag: it opens every
# experiment and run on its GenAI (traces) view unless the address asks for the training
# view (ML_VIEW), or the user once picked "Model training" in its sidebar.
# Figures are drawn for the largest comparable groups only; every group has its table.
FIGURE_GROUPS = 3


# Where a report reads its runs: a local store directly, anything else through MLflow.
RunSource = LocalStore | tracking.StoreReader


def open_source(settings: DictConfig, filter_string: str | None) -> RunSource:
    """The local store read directly where it can answer everything the report asks.

    MLflow's client costs a report more than its work (setting up its SQLAlchemy store:
    docs/benchmarks.md); a server, a store of another schema or a moved one, and a filter
    beyond plain equalities go through MLflow. Either way the store is only read: a missing
    store or experiment is an error naming it, never created (`tracking.open_existing`).
    """
    check_uri(settings.uri)  # a relative sqlite path would read whatever the folder holds
    if mlflow_tables.understands(filter_string or ""):
        local = LocalStore.open(settings.uri, settings.experiment, settings.artifact_root)
        if local is not None:
            return local
    return tracking.StoreReader(tracking.open_configured(settings, reading=True))


@dataclass
class Selection:
    """The runs a report compares; for a sweep, the attempts its summary judges."""

    title: str
    runs: pd.DataFrame
    sweep_id: str | None = None
    parent_run_id: str | None = None
    superseded: list[str] = field(default_factory=list)  # run ids not compared, why: lifecycle


def select(
    source: RunSource,
    sweep_id: str | None,
    runs: list[str] | None,
    filter_string: str | None,
    latest: int,
) -> Selection:
    """The runs to compare: given ids, a filter, a sweep, the latest sweep, or the latest runs."""
    if runs:
        frame = source.runs_frame(run_ids=list(runs))
        missing = sorted(set(runs) - set(frame["run_id"])) if len(frame) else sorted(runs)
        if missing:
            raise ReportError(f"runs not in the store at {source.uri}: {', '.join(missing)}")
        return Selection(f"{len(frame)} selected runs", frame)
    if filter_string:
        frame = source.runs_frame(filter_string)
        if frame.empty:
            raise ReportError(f"no run matches filter={filter_string!r} in {source.uri}")
        return Selection(f"runs matching {filter_string}", frame)
    if sweep_id is None:
        parents = source.runs_frame(parent.PARENTS_FILTER)
        if parents.empty:
            return _latest_runs(source, latest)
        sweep_id = parents.iloc[0][parent.SWEEP_ID_COLUMN]
    return _sweep(source, sweep_id)


def _sweep(source: RunSource, sweep_id: str) -> Selection:
    """A sweep's current attempts, the very runs its summary ranked (and named best)."""
    every = source.runs_frame(children.children_filter(sweep_id))
    if every.empty:
        raise ReportError(f"sweep_id={sweep_id} has no runs in {source.uri}")
    current = set(attempts.current_attempt_ids(every))
    frame = every[every["run_id"].isin(current)].reset_index(drop=True)
    parents = source.runs_frame(parent.parent_filter(sweep_id))
    return Selection(
        tables.sweep_title(sweep_id, len(frame)),
        frame,
        sweep_id,
        parents["run_id"].iloc[-1] if len(parents) else None,
        [run_id for run_id in every["run_id"] if run_id not in current],
    )


def _latest_runs(source: RunSource, latest: int) -> Selection:
    frame = source.runs_frame()
    role = f"tags.{SWEEP_ROLE}"
    if role in frame:
        frame = frame[frame[role].ne(PARENT)]
    frame = frame.head(latest).reset_index(drop=True)
    if frame.empty:
        raise ReportError(
            f"no runs in experiment {source.experiment_id} of {source.uri}: train one "
            "(python pipelines/train.py, or --multirun sweep=demo) first"
        )
    return Selection(tables.sweep_title(None, len(frame)), frame)


def ui_address(configured: str | None, store_dir: str, store_uri: str) -> str:
    """Where the MLflow UI shows these runs.

    The setting; else a server store's own address; else what `make ui` recorded for the
    local store; else its default address.
    """
    if configured:
        return checked_ui_url(configured, "ui_url")
    if served := server_ui_url(store_uri):
        return served
    recorded = Path(store_dir) / UI_URL_FILE
    if recorded.is_file():
        return checked_ui_url(recorded.read_text().strip(), str(recorded))
    return DEFAULT_UI


def checked_ui_url(address: str, origin: str) -> str:
    """An http(s) address, the only kind a report links to (never `javascript:` and the like).

    `origin`: where the address came from (the setting, or the file `make ui` writes).
    """
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ReportError(
            f"{origin}={address!r} is not an http(s) address of the MLflow UI: give one, e.g. "
            f"ui_url={DEFAULT_UI}, or leave ui_url unset for the address `make ui` serves"
        )
    return address.rstrip("/")


def experiment_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI (its training view, see ML_VIEW)."""
    return runs_table_url(ui_url, experiment_id)


def _histories(source: RunSource, run_ids: list[str], name: str) -> dict[str, list]:
    return {run_id: source.metric_history(run_id, name) for run_id in run_ids}


def _epoch_times(source: RunSource, run_ids: list[str]) -> dict[str, dict[str, float]]:
    """Each run's mean epoch time under the name it logged (solo, or its packed group's share).

    A packed run's share is read only for the runs without a solo epoch time.
    """
    times: dict[str, dict[str, float]] = {}
    left = run_ids
    for name in tables.EPOCH_TIMES:
        histories = {r: h for r, h in _histories(source, left, name).items() if h}
        times[name] = {r: tables.mean_epoch_seconds(h) for r, h in histories.items()}
        left = [r for r in left if r not in histories]
    return times


def _figures(
    source: RunSource,
    table: pd.DataFrame,
    items: list[configurations.GroupConfigurations],
    histories: dict[str, list],
    cfg: DictConfig,
    workdir: Path,
) -> list[render.Figure]:
    """The largest groups' figures and learning curves, their rate–distortion plane, pictures."""
    shown = items[:FIGURE_GROUPS]
    several = table["group"].nunique() > 1
    drawn: list[render.Figure] = []
    for number, item in enumerate(shown, start=1):
        drawn += configurations.group_figures(item, number, cfg.metric, several)
        drawn.append(_learning_curves(item.group, number, histories, cfg.metric, several))
    if (plane := configurations.plane_figure(shown)) is not None:
        drawn.append(plane)
    return drawn + _reconstructions(source, table, cfg.metric, cfg.top_k, workdir)


def _learning_curves(
    group: tables.ComparableGroup, number: int, histories: dict[str, list], by: str, several: bool
) -> render.Figure:
    among = f" ({group.label})" if several else ""
    within = tables.varying_params(group.table)
    labels = {row["run_id"]: tables.run_label(row, within) for _, row in group.table.iterrows()}
    order = list(group.table["run_id"])
    mine = {run_id: histories.get(run_id, []) for run_id in order}
    return figures.chart(
        f"learning_curves_{number}",
        f"{by} after each epoch, one line per run{among}; runs with identical numbers "
        "share a line, named together.",
        figures.learning_curves(mine, labels, order, by, group.kind),
    )


def _reconstructions(
    source: RunSource, table: pd.DataFrame, by: str, top_k: int, workdir: Path
) -> list[render.Figure]:
    """The pictures of the first group's best distinct configurations, each run described."""
    best = tables.distinct_best(table, by, top_k)
    first = table[table["group"].eq(table["group"].iloc[0])]
    within = tables.varying_params(first)
    among = f" ({first['group'].iloc[0]})" if table["group"].nunique() > 1 else ""
    drawn = []
    for _, row in best.iterrows():
        grid = source.download_artifact(
            row["run_id"], "plots/reconstructions.png", render.inside(workdir, row["run_id"])
        )
        if grid is not None:
            drawn.append(
                render.Figure(
                    f"reconstructions_{row['run_id'][:8]}",
                    f"Test digits (top) and their reconstructions (bottom) by run "
                    f"{tables.run_description(row, within)}, rank {row['rank']} in its "
                    f"group{among}.",
                    grid.read_bytes(),
                )
            )
    return drawn


def _table_view(
    item: configurations.GroupConfigurations,
    by: str,
    varying: list[str],
    ui_url: str,
    experiment_id: str,
) -> render.TableView:
    group = item.group
    notes = tables.notes(group.table, item.folded.notes())
    rows = group.table.assign(run=group.table["run_id"].str[:8], note=notes)
    shown = tables.display_columns(group, by, varying)
    view = pd.DataFrame({header: rows[column] for column, header in shown if column in rows})
    links = {run_id[:8]: run_url(ui_url, experiment_id, run_id) for run_id in group.table["run_id"]}
    heading = f"Runs ranked by {by}" + (f": {group.label}" if group.label != "all runs" else "")
    return render.TableView(heading, metrics.describe(group.kind), view, links)


def build(source: RunSource, selection: Selection, cfg: DictConfig, workdir: Path):
    """Everything the report shows, computed from the store."""
    started = time.perf_counter()
    frame, by = selection.runs, cfg.metric
    table = tables.build_table(
        frame,
        by,
        cfg.partial_collapse,
        cfg.tracking.stale_after_s,
        time.time(),
        _epoch_times(source, list(frame["run_id"])),
    )
    histories = _histories(source, list(table["run_id"]), by)
    best = comparison.best_epochs(histories)
    table["best_epoch"] = [tables.best_epoch_text(best.get(r)) for r in table["run_id"]]
    varying = tables.varying_params(frame)
    ui_url = ui_address(cfg.ui_url, cfg.paths.store_dir, source.uri)
    items = [configurations.of_group(group, by) for group in tables.groups(table)]
    folded = {run: said for item in items for run, said in item.folded.notes().items()}
    summary = tables.summary_lines(
        selection.title, table, varying, by, selection.superseded, folded
    )
    report = render.Report(
        title=selection.title,
        summary=summary + configurations.lines(items, by),
        tables=[
            view
            for item in items
            for view in configurations.table_views(
                item, by, varying, _table_view(item, by, varying, ui_url, source.experiment_id)
            )
        ],
        figures=_figures(source, table, items, histories, cfg, workdir),
        failures=tables.failures(table),
        full_table=table,
        store=source.uri,
        ui_url=ui_url,
        experiment_url=experiment_url(ui_url, source.experiment_id),
    )
    report.seconds = time.perf_counter() - started
    return report


def make_report(cfg: DictConfig) -> dict[str, Path]:
    """The report pipeline's body: select, build, write, attach to the sweep's parent."""
    check_objective(cfg.metric, "metric")
    if cfg.ui_url:  # before any work
        checked_ui_url(cfg.ui_url, "ui_url")
    source = open_source(cfg.tracking, cfg.filter)
    selection = select(source, cfg.sweep_id, cfg.runs, cfg.filter, cfg.latest_runs)
    name = selection.sweep_id or time.strftime("runs-%Y%m%d-%H%M%S")
    out_dir = render.inside(Path(cfg.out_dir), name)  # before any work: the id may be hostile
    with tempfile.TemporaryDirectory() as tmp:
        report = build(source, selection, cfg, Path(tmp))
        paths = render.write(report, out_dir)
    if selection.parent_run_id:
        source.log_files(selection.parent_run_id, list(paths.values()), "report")
    log.info("Report of %s written in %.1f s", selection.title, report.seconds)
    return paths
