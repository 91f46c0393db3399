"""Turning a built report into files: report.html (self-contained), report.md, table.csv."""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

import pandas as pd

from vaelab.vocab.errors import ReportError

_TEMPLATE = Path(__file__).with_name("template.html")


@dataclass(frozen=True)
class Figure:
    """A drawn figure: its file name, what it shows (the caption) and its PNG bytes.

    `legend` holds a chart's legend entries as drawn (empty: a chart without a legend); None
    marks a picture that has none by nature (a digit grid). The page carries them in the
    image's alt text and a data attribute, which the browser test checks.
    """

    name: str
    caption: str
    png: bytes
    legend: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TableView:
    """One comparable group's table as shown: a heading, what its numbers are, the rows."""

    heading: str
    description: str
    rows: pd.DataFrame  # display columns, headers already the readable ones
    links: dict[str, str] = field(default_factory=dict)  # run column text -> UI address


@dataclass
class Report:
    title: str
    summary: list[str]
    tables: list[TableView]
    figures: list[Figure]
    failures: pd.DataFrame
    full_table: pd.DataFrame
    store: str
    ui_url: str
    experiment_url: str = ""  # the runs table of the experiment in the MLflow UI
    seconds: float = 0.0


def cell(value: object) -> str:
    """Numbers as a reader wants them: integers whole, measurements with two decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 1000 else f"{value:.2f}"
    return str(value)


def _is_text(series: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(series)


def table_html(view: TableView) -> str:
    columns = list(view.rows.columns)
    text = {c for c in columns if _is_text(view.rows[c])}
    head = "".join(
        f'<th class="{"text" if c in text else ""}">{html.escape(c)}</th>' for c in columns
    )
    body = []
    for _, row in view.rows.iterrows():
        cells = []
        for c in columns:
            content = html.escape(cell(row[c]))
            if c == "run" and row[c] in view.links:
                content = f'<a href="{html.escape(view.links[row[c]])}">{content}</a>'
            cells.append(f'<td class="{"text" if c in text else ""}">{content}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f"<h2>{html.escape(view.heading)}</h2>"
        f'<p class="what">{html.escape(view.description)}</p>'
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' to_markdown needs the tabulate package; this does not)."""

    def md_cell(value: object) -> str:
        return cell(value).replace("|", "\\|").replace("\n", " ")

    rows = [" | ".join(map(str, frame.columns)), " | ".join("---" for _ in frame.columns)]
    rows += [" | ".join(md_cell(v) for v in row) for row in frame.itertuples(index=False)]
    return "\n".join(f"| {row} |" for row in rows)


def figure_html(figure: Figure) -> str:
    """A figure with its caption; a chart also says its legend (alt text, data-legend)."""
    alt, attributes = figure.caption, ""
    if figure.legend is not None:
        alt += f" Legend: {'; '.join(figure.legend) or 'none'}."
        attributes = f' class="chart" data-legend="{html.escape(json.dumps(figure.legend))}"'
    return (
        f'<figure{attributes}><img alt="{html.escape(alt)}" '
        f'src="data:image/png;base64,{base64.b64encode(figure.png).decode()}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def page(report: Report) -> str:
    figures = "".join(figure_html(f) for f in report.figures)
    failures = ""
    if len(report.failures):
        view = TableView(
            "Failed, killed and stale runs", "With the error each recorded.", report.failures
        )
        failures = table_html(view)
    return Template(_TEMPLATE.read_text()).substitute(
        title=html.escape(report.title),
        summary="".join(f"<li>{html.escape(line)}</li>" for line in report.summary),
        tables="".join(table_html(view) for view in report.tables),
        figures=figures,
        failures=failures,
        store=html.escape(report.store),
        seconds=f"{report.seconds:.1f}",
        ui_url=html.escape(report.ui_url),
        experiment_url=html.escape(report.experiment_url or report.ui_url),
    )


def markdown(report: Report) -> str:
    lines = [f"# vaelab report: {report.title}", "", *[f"- {s}" for s in report.summary], ""]
    for view in report.tables:
        lines += [f"## {view.heading}", "", view.description, "", markdown_table(view.rows), ""]
    lines += ["## Figures", ""]
    lines += [f"![{f.caption}]({f.name}.png)\n\n{f.caption}\n" for f in report.figures]
    if len(report.failures):
        lines += ["## Failed, killed and stale runs", "", markdown_table(report.failures)]
    return "\n".join(lines) + "\n"


def inside(directory: Path, name: str) -> Path:
    """`directory / name` for a plain file or directory name, refusing anything else.

    Names come partly from the store (a sweep id tag, a run id), which anyone who can write
    to a shared store controls: `../x` or `/etc/x` must never become a path a reader writes.
    """
    if not name or Path(name).name != name or name in (".", "..") or "\\" in name:
        raise ReportError(
            f"{name!r} is not a plain file name: refusing to write outside {directory} (the "
            "name comes from the run store; check its sweep.id tags and run ids)"
        )
    return directory / name


def write(report: Report, out_dir: Path) -> dict[str, Path]:
    """report.html (images embedded), report.md with its PNGs beside it, and table.csv."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for figure in report.figures:
        inside(out_dir, f"{figure.name}.png").write_bytes(figure.png)
    paths = {"html": out_dir / "report.html", "md": out_dir / "report.md"}
    paths["csv"] = out_dir / "table.csv"
    report.full_table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(markdown(report))
    paths["html"].write_text(page(report))
    return paths
