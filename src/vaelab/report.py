"""Comparison reports, read from the run store alone (MLflow -> pandas -> tables and plots).

It never trains: every number it shows was logged by the runs themselves (losses per epoch,
test metrics, active units, importance-weighted NLL, reconstruction grids). Runs from older
code versions with fewer columns, failed and killed runs, and runs without artifacts are
shown for what they have.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from vaelab import tracking  # noqa: E402

log = logging.getLogger(__name__)

# Hyperparameters with an effect plot when they vary; the others still appear in the table.
EFFECT_PARAMS = ("model.latent_dim", "model.intermediate_dim", "train.epochs")
# Params that say where a run wrote, never what it computed.
_LOCATION = ("params.paths.", "params.tracking.", "params.data.cache_dir", "params.force")
FINAL_METRICS = [
    f"{split}/{term}"
    for split in ("train", "val", "test")
    for term in ("reconstruction", "kl", "total")
]
QUALITY = ["time/epoch_seconds", "test/active_units", "test/iw_nll"]


class ReportError(RuntimeError):
    """Nothing to report (empty experiment, unknown sweep); the message says what was asked."""


@dataclass
class Selection:
    title: str
    runs: pd.DataFrame
    sweep_id: str | None = None
    parent_run_id: str | None = None


@dataclass
class Report:
    selection: Selection
    table: pd.DataFrame
    varying: list[str]
    figures: dict[str, Figure] = field(default_factory=dict)
    grids: dict[str, Path] = field(default_factory=dict)
    collapsed: list[str] = field(default_factory=list)
    failures: pd.DataFrame | None = None
    seconds: float = 0.0


def _children(store: tracking.Store, sweep_id: str) -> pd.DataFrame:
    return tracking.runs_frame(
        store, f"tags.`sweep.id` = '{sweep_id}' and tags.`sweep.role` = 'child'"
    )


def select(
    store: tracking.Store, sweep_id: str | None, runs: list[str] | None, filter_string: str | None
) -> Selection:
    """The runs to compare: given ids, a filter, a sweep, or else the latest sweep."""
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
        parents = tracking.runs_frame(store, "tags.`sweep.role` = 'parent'")
        if parents.empty:
            raise ReportError(
                f"no sweep in experiment {store.experiment_id} of {store.uri}: run one "
                "(python pipelines/train.py --multirun sweep=demo) or pass runs=[...]"
            )
        sweep_id = parents.iloc[0]["tags.sweep.id"]
    frame = _children(store, sweep_id)
    if frame.empty:
        raise ReportError(f"sweep_id={sweep_id} has no runs in {store.uri}")
    parents = tracking.find_runs(store, {"sweep.id": sweep_id, "sweep.role": "parent"})
    return Selection(f"sweep {sweep_id}", frame, sweep_id, parents[0].run_id if parents else None)


def varying_params(frame: pd.DataFrame) -> list[str]:
    """The params that differ between the selected runs: what the comparison is about."""
    columns = [c for c in frame.columns if c.startswith("params.") and not c.startswith(_LOCATION)]
    return [
        c.removeprefix("params.") for c in columns if frame[c].astype(str).nunique(dropna=False) > 1
    ]


def _metric(frame: pd.DataFrame, name: str) -> pd.Series:
    column = f"metrics.{name}"
    return frame[column] if column in frame else pd.Series(math.nan, index=frame.index)


def is_collapsed(frame: pd.DataFrame, kl_threshold: float) -> pd.Series:
    """Posterior collapse: no active latent unit, or (older runs) a test KL of about zero."""
    units = _metric(frame, "test/active_units")
    kl = _metric(frame, "test/kl")
    return units.eq(0) | (units.isna() & kl.lt(kl_threshold))


def status_with_staleness(frame: pd.DataFrame, stale_after_s: float) -> pd.Series:
    """MLflow's status, except a RUNNING run silent for too long is called STALE.

    A process killed outright (SIGKILL, a lost machine) cannot close its run; its heartbeat
    (a tag renewed every epoch) stops, and that is how it is told from a live one.
    """
    column = f"tags.{tracking.HEARTBEAT_TAG}"
    if column in frame:
        last = pd.to_numeric(frame[column], errors="coerce")
    else:
        last = pd.Series(math.nan, index=frame.index)
    started = pd.to_datetime(frame["start_time"]).astype("int64") / 1e9
    silent = time.time() - last.fillna(started)
    stale = frame["status"].eq("RUNNING") & silent.gt(stale_after_s)
    return frame["status"].where(~stale, "STALE")


def ranked_table(
    frame: pd.DataFrame,
    varying: list[str],
    metric: str,
    kl_threshold: float,
    stale_after_s: float = math.inf,
) -> pd.DataFrame:
    """One row per run, finished runs ranked by the metric (lower is better)."""
    table = pd.DataFrame(
        {"run_id": frame["run_id"], "status": status_with_staleness(frame, stale_after_s)}
    )
    for name in varying:
        table[name] = frame[f"params.{name}"]
    for name in FINAL_METRICS + QUALITY:
        table[name] = _metric(frame, name)
    table["collapsed"] = is_collapsed(frame, kl_threshold)
    table = table.assign(_finished=table["status"].ne("FINISHED"), _key=_metric(frame, metric))
    table = table.sort_values(["_finished", "_key"]).drop(columns=["_finished", "_key"])
    table.insert(0, "rank", range(1, len(table) + 1))
    return table.reset_index(drop=True)


def effect_plot(table: pd.DataFrame, param: str, metric: str) -> Figure:
    """Metric against one hyperparameter, a line per style (means over the other params)."""
    fig, ax = plt.subplots(figsize=(5, 3.4))
    done = table[table["status"] == "FINISHED"].copy()
    done[param] = pd.to_numeric(done[param], errors="coerce")
    groups = done.groupby("style.name") if "style.name" in done else [("all", done)]
    for style, group in groups:
        means = group.groupby(param)[metric].mean().sort_index()
        ax.plot(means.index, means.values, "-o", label=str(style))
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs {param}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def split_scatter(table: pd.DataFrame) -> Figure:
    """Each run's test KL against its reconstruction term; collapsed runs in red."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for collapsed, group in table.groupby("collapsed"):
        ax.scatter(
            group["test/reconstruction"],
            group["test/kl"],
            c="tab:red" if collapsed else "tab:blue",
            marker="x" if collapsed else "o",
            label="collapsed" if collapsed else "active",
        )
    ax.set_xlabel("test/reconstruction")
    ax.set_ylabel("test/kl")
    ax.set_title("KL / reconstruction split")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def learning_curves(store: tracking.Store, table: pd.DataFrame, metric: str) -> Figure:
    """Every run's per-epoch history of the metric (train and val), overlaid."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    term = metric.split("/", 1)[-1]
    for ax, split in zip(axes, ("train", "val"), strict=True):
        for row in table.itertuples():
            history = tracking.metric_history(store, row.run_id, f"{split}/{term}")
            if history:
                steps, values = zip(*history, strict=True)
                ax.plot(steps, values, "-", alpha=0.7, linewidth=1)
        ax.set_title(f"{split}/{term} per epoch ({len(table)} runs)")
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def build(
    store: tracking.Store,
    selection: Selection,
    metric: str,
    top_k: int,
    kl_threshold: float,
    workdir: Path,
    stale_after_s: float = math.inf,
) -> Report:
    """Everything the report shows, computed from the store."""
    start = time.perf_counter()
    frame = selection.runs
    varying = varying_params(frame)
    table = ranked_table(frame, varying, metric, kl_threshold, stale_after_s)
    report = Report(selection, table, varying)
    report.collapsed = list(table.loc[table["collapsed"], "run_id"])
    for param in EFFECT_PARAMS:
        if param in varying and table[metric].notna().any():
            report.figures[f"effect_{param}"] = effect_plot(table, param, metric)
    if table["test/kl"].notna().any():
        report.figures["kl_vs_reconstruction"] = split_scatter(table)
    report.figures["learning_curves"] = learning_curves(store, table, metric)
    for row in table[table["status"] == "FINISHED"].head(top_k).itertuples():
        grid = tracking.download_artifact(
            store, row.run_id, "plots/reconstructions.png", workdir / row.run_id
        )
        if grid is not None:
            report.grids[row.run_id] = grid
    statuses = status_with_staleness(frame, stale_after_s)
    failed = frame[statuses.isin(["FAILED", "KILLED", "STALE"])]
    error = failed["tags.error"] if "tags.error" in failed else pd.Series("", index=failed.index)
    report.failures = pd.DataFrame(
        {
            "run_id": failed["run_id"],
            "status": statuses[failed.index],
            "error": error.fillna("(no error recorded)"),
        }
    )
    report.seconds = time.perf_counter() - start
    return report


def _markdown(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the tabulate package; this does not)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return "–" if math.isnan(value) else f"{value:.4f}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    rows = [" | ".join(map(str, frame.columns)), " | ".join("---" for _ in frame.columns)]
    rows += [" | ".join(cell(v) for v in row) for row in frame.itertuples(index=False)]
    return "\n".join(f"| {row} |" for row in rows)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _summary_lines(report: Report, metric: str) -> list[str]:
    frame, table = report.selection.runs, report.table
    start = pd.to_datetime(frame["start_time"]).min()
    end = pd.to_datetime(frame["end_time"]).max() if "end_time" in frame else pd.NaT
    end = start if pd.isna(end) else end
    commits = sorted(set(frame.get("tags.git.commit", pd.Series(dtype=str)).dropna()))
    counts = frame["status"].value_counts().to_dict()
    best = table.iloc[0]
    lines = [
        f"Compared: {report.selection.title}; {len(frame)} runs "
        f"({', '.join(f'{n} {s.lower()}' for s, n in counts.items())}).",
        f"When: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}. Code: "
        f"{', '.join(c[:10] for c in commits) or 'unknown'}.",
        f"Varying: {', '.join(report.varying) or 'nothing'}. Ranked by {metric} (lower is better).",
    ]
    if best["status"] == "FINISHED":
        settings = ", ".join(f"{p}={best[p]}" for p in report.varying)
        lines.append(f"Best: {best['run_id']} ({settings}) with {metric} = {best[metric]:.4f}.")
    lines.append(
        f"Posterior collapse (no active latent unit): "
        f"{len(report.collapsed)} of {len(table)} runs"
        + (f": {', '.join(report.collapsed)}." if report.collapsed else ".")
    )
    return lines


def _table_for_display(
    table: pd.DataFrame, ui_url: str, experiment_id: str, link: bool
) -> pd.DataFrame:
    shown = table.copy()
    if link:
        shown["run_id"] = [
            f'<a href="{ui_url}/#/experiments/{experiment_id}/runs/{run_id}">{run_id[:8]}</a>'
            for run_id in shown["run_id"]
        ]
    return shown


def write(
    report: Report, out_dir: Path, metric: str, ui_url: str, experiment_id: str
) -> dict[str, Path]:
    """report.html (self-contained), report.md (+ PNGs beside it) and table.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = {name: _png(fig) for name, fig in report.figures.items()}
    images.update(
        {
            f"reconstructions_{run_id[:8]}": path.read_bytes()
            for run_id, path in report.grids.items()
        }
    )
    for name, data in images.items():
        (out_dir / f"{name}.png").write_bytes(data)
    csv = out_dir / "table.csv"
    report.table.to_csv(csv, index=False)
    summary = _summary_lines(report, metric)

    md = [
        "# vaelab report",
        "",
        *[f"- {line}" for line in summary],
        "",
        "## Runs",
        "",
        _markdown(report.table),
        "",
        "## Plots",
        "",
    ]
    md += [f"![{name}]({name}.png)" for name in images]
    if report.failures is not None and len(report.failures):
        md += ["", "## Failed and killed runs", "", _markdown(report.failures)]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")

    embedded = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{html.escape(name)}</figcaption>'
        "</figure>"
        for name, data in images.items()
    )
    table_html = _table_for_display(report.table, ui_url, experiment_id, link=True).to_html(
        index=False, escape=False, float_format=lambda v: f"{v:.4f}", na_rep="–"
    )
    failures_html = (
        ""
        if report.failures is None or report.failures.empty
        else "<h2>Failed and killed runs</h2>" + report.failures.to_html(index=False)
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8">
<title>vaelab report: {html.escape(report.selection.title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1400px}}
table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}.wide{{overflow-x:auto}}
figure{{display:inline-block;margin:8px}}
img{{max-width:640px}}li{{margin:3px 0}}</style></head><body>
<h1>vaelab report: {html.escape(report.selection.title)}</h1>
<ul>{"".join(f"<li>{html.escape(line)}</li>" for line in summary)}</ul>
<h2>Runs, ranked by {html.escape(metric)}</h2><div class="wide">{table_html}</div>
<h2>Plots</h2>{embedded}{failures_html}
<p>Generated from the run store in {report.seconds:.1f} s.</p></body></html>
"""
    html_path = out_dir / "report.html"
    html_path.write_text(page)
    return {"html": html_path, "md": out_dir / "report.md", "csv": csv}


def make_report(cfg) -> dict[str, Path]:
    """The report pipeline's body: select, build, write, attach to the sweep's parent."""
    store = tracking.open_store(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.artifact_root
    )
    selection = select(store, cfg.sweep_id, cfg.runs, cfg.filter)
    name = selection.sweep_id or time.strftime("runs-%Y%m%d-%H%M%S")
    with tempfile.TemporaryDirectory() as tmp:
        report = build(
            store, selection, cfg.metric, cfg.top_k, cfg.collapse_kl, Path(tmp), cfg.stale_after_s
        )
        paths = write(report, Path(cfg.out_dir) / name, cfg.metric, cfg.ui_url, store.experiment_id)
    if selection.parent_run_id:
        tracking.log_files(store, selection.parent_run_id, list(paths.values()), "report")
    log.info("Report of %s written in %.1f s", selection.title, report.seconds)
    return paths
