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
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from vaelab import lifecycle, metrics, plots, ranking, tracking
from vaelab.config import check_objective
from vaelab.errors import ReportError
from vaelab.report import figures, render, tables

log = logging.getLogger(__name__)

DEFAULT_UI = "http://127.0.0.1:5000"
# `make ui` writes the address it serves here, so run links follow its HOST and PORT.
UI_URL_FILE = "ui_url.txt"


@dataclass
class Selection:
    title: str
    runs: pd.DataFrame
    sweep_id: str | None = None
    parent_run_id: str | None = None


def select(
    store: tracking.Store,
    sweep_id: str | None,
    runs: list[str] | None,
    filter_string: str | None,
    latest: int,
) -> Selection:
    """The runs to compare: given ids, a filter, a sweep, the latest sweep, or the latest runs."""
    if runs:
        frame = tracking.runs_frame(store, run_ids=list(runs))
        missing = sorted(set(runs) - set(frame["run_id"])) if len(frame) else sorted(runs)
        if missing:
            raise ReportError(f"runs not in the store at {store.uri}: {', '.join(missing)}")
        return Selection(f"{len(frame)} selected runs", frame)
    if filter_string:
        frame = tracking.runs_frame(store, filter_string)
        if frame.empty:
            raise ReportError(f"no run matches filter={filter_string!r} in {store.uri}")
        return Selection(f"runs matching {filter_string}", frame)
    if sweep_id is None:
        parents = tracking.runs_frame(store, lifecycle.PARENTS_FILTER)
        if parents.empty:
            return _latest_runs(store, latest)
        sweep_id = parents.iloc[0][lifecycle.SWEEP_ID_COLUMN]
    frame = tracking.runs_frame(store, lifecycle.children_filter(sweep_id))
    if frame.empty:
        raise ReportError(f"sweep_id={sweep_id} has no runs in {store.uri}")
    parent = lifecycle.parent(store, sweep_id)
    return Selection(
        tables.sweep_title(sweep_id, len(frame)),
        frame,
        sweep_id,
        parent.run_id if parent else None,
    )


def _latest_runs(store: tracking.Store, latest: int) -> Selection:
    frame = tracking.runs_frame(store)
    role = f"tags.{lifecycle.SWEEP_ROLE}"
    if role in frame:
        frame = frame[frame[role].ne(lifecycle.PARENT)]
    frame = frame.head(latest).reset_index(drop=True)
    if frame.empty:
        raise ReportError(
            f"no runs in experiment {store.experiment_id} of {store.uri}: train one "
            "(python pipelines/train.py, or --multirun sweep=demo) first"
        )
    return Selection(tables.sweep_title(None, len(frame)), frame)


def ui_address(configured: str | None, store_dir: str) -> str:
    """Where the user serves the MLflow UI: the setting, what `make ui` recorded, or 5000."""
    if configured:
        return configured.rstrip("/")
    recorded = Path(store_dir) / UI_URL_FILE
    return recorded.read_text().strip() if recorded.is_file() else DEFAULT_UI


def _histories(store: tracking.Store, run_ids: list[str], name: str) -> dict[str, list]:
    return {run_id: tracking.metric_history(store, run_id, name) for run_id in run_ids}


def _figures(
    store: tracking.Store, table: pd.DataFrame, varying: list[str], by: str, top_k: int, workdir
) -> list[render.Figure]:
    drawn: list[render.Figure] = []
    for number, group in enumerate(tables.groups(table)[:3], start=1):
        among = f" ({group.label})" if table["group"].nunique() > 1 else ""
        within = tables.varying_params(group.table)
        labels = {row["run_id"]: tables.run_label(row, within) for _, row in group.table.iterrows()}
        ranked = group.table[group.table["rank"].notna()]
        for param in tables.EFFECT_PARAMS:
            if param in varying and len(ranked):
                effect = tables.effects(group.table, param, by)
                drawn.append(
                    render.Figure(
                        f"effect_{param}_{number}",
                        f"Mean {by} over the finished runs at each {param}, one line per style"
                        f" (the other settings averaged){among}.",
                        plots.png_bytes(figures.effect_plot(effect, param, by, group.kind)),
                    )
                )
        order = list(group.table["run_id"])
        histories = _histories(store, order, by)
        drawn.append(
            render.Figure(
                f"learning_curves_{number}",
                f"{by} after each epoch, one line per run{among}; runs with identical "
                "numbers share a line, named together.",
                plots.png_bytes(figures.learning_curves(histories, labels, order, by, group.kind)),
            )
        )
    if ranking.metric(table, "test/kl").notna().any():
        kind = tables.groups(table)[0].kind
        drawn.append(
            render.Figure(
                "kl_vs_reconstruction",
                "Each run's test KL against its test reconstruction term; runs with no active "
                "latent unit (collapsed) or too few (partial) are marked.",
                plots.png_bytes(figures.split_scatter(table, kind)),
            )
        )
    best = tables.distinct_best(table, by, top_k)
    within = tables.varying_params(table[table["group"].eq(table["group"].iloc[0])])
    for _, row in best.iterrows():
        grid = tracking.download_artifact(
            store, row["run_id"], "plots/reconstructions.png", workdir / row["run_id"]
        )
        if grid is not None:
            drawn.append(
                render.Figure(
                    f"reconstructions_{row['run_id'][:8]}",
                    f"Test digits (top) and their reconstructions (bottom) by run "
                    f"{tables.run_label(row, within)}, rank {row['rank']} in its group.",
                    grid.read_bytes(),
                )
            )
    return drawn


def _table_view(
    group: tables.Group, by: str, varying: list[str], ui_url: str, experiment_id: str
) -> render.TableView:
    rows = group.table.assign(run=group.table["run_id"].str[:8], note=tables.notes(group.table))
    shown = tables.display_columns(group, by, varying)
    view = pd.DataFrame({header: rows[column] for column, header in shown if column in rows})
    links = {
        run_id[:8]: f"{ui_url}/#/experiments/{experiment_id}/runs/{run_id}"
        for run_id in group.table["run_id"]
    }
    heading = f"Runs ranked by {by}" + (f": {group.label}" if group.label != "all runs" else "")
    return render.TableView(heading, metrics.describe(group.kind), view, links)


def build(store: tracking.Store, selection: Selection, cfg: DictConfig, workdir: Path):
    """Everything the report shows, computed from the store."""
    started = time.perf_counter()
    frame, by = selection.runs, cfg.metric
    seconds = {
        run_id: tables.mean_epoch_seconds(history)
        for run_id, history in _histories(
            store, list(frame["run_id"]), metrics.EPOCH_SECONDS
        ).items()
    }
    table = tables.build_table(
        frame, by, cfg.collapse_kl, cfg.partial_collapse, cfg.stale_after_s, time.time(), seconds
    )
    varying = tables.varying_params(frame)
    samples = ranking.column(table, "params.eval.iw_samples", "").dropna().unique()
    ui_url = ui_address(cfg.ui_url, cfg.paths.store_dir)
    report = render.Report(
        title=selection.title,
        summary=tables.summary_lines(
            selection.title, table, varying, by, ", ".join(map(str, samples)) or "no"
        ),
        tables=[
            _table_view(group, by, varying, ui_url, store.experiment_id)
            for group in tables.groups(table)
        ],
        figures=_figures(store, table, varying, by, cfg.top_k, workdir),
        failures=tables.failures(table),
        full_table=table,
        store=store.uri,
        ui_url=ui_url,
    )
    report.seconds = time.perf_counter() - started
    return report


def make_report(cfg: DictConfig) -> dict[str, Path]:
    """The report pipeline's body: select, build, write, attach to the sweep's parent."""
    check_objective(cfg.metric, "metric")
    store = tracking.open_store(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root
    )
    selection = select(store, cfg.sweep_id, cfg.runs, cfg.filter, cfg.latest_runs)
    name = selection.sweep_id or time.strftime("runs-%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        report = build(store, selection, cfg, Path(tmp))
        paths = render.write(report, Path(cfg.out_dir) / name)
    if selection.parent_run_id:
        tracking.log_files(store, selection.parent_run_id, list(paths.values()), "report")
    log.info("Report of %s written in %.1f s", selection.title, report.seconds)
    return paths
