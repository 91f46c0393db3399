"""Reports read the store alone; the MLflow server serves what the runs logged."""

import html
import itertools
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow.tracking._tracking_service.client as mlflow_client
import pandas as pd
import pytest

from tests.conftest import TINY, compose_config, isolated, mlflow_server
from vaelab.edges import tracking
from vaelab.edges.ui import ML_VIEW
from vaelab.orchestration.report import experiment_url, make_report, run_url
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules.lifecycle.children import child_tags
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.rules.lifecycle.verdict import finish_sweep
from vaelab.vocab import metrics
from vaelab.vocab.errors import RunFailed, UserError
from vaelab.vocab.tags import BEST_RUN, CHILD, OVERRIDES, PARENT, SWEEP_ID, SWEEP_ROLE


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """A real little sweep: two ELBO runs, a collapsing notebook run, a NaN run, an old run."""
    tmp = tmp_path_factory.mktemp("report")
    base = ["experiment=smoke", *isolated(tmp), "tracking.log_model=false", "train.epochs=2"]
    cfg = compose_config(*base)
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    context = start_sweep(store, "r1", {}, total=4, objective="val/total")
    ids = {}
    for name, overrides in {
        "elbo": [],
        "elbo_z2": ["model.latent_dim=2"],
        "collapsed": ["loss=notebook_functional"],
        "nan": ["loss=notebook_functional", "train.learning_rate=1e12"],
    }.items():
        try:
            ids[name] = train_and_evaluate(compose_config(*base, *overrides), sweep=context).run_id
        except RunFailed as failure:
            ids[name] = failure.run_id
    # A run from an older version: fewer metrics, no artifacts, other params.
    old = tracking.create_run(store, "old", {SWEEP_ID: "r1", SWEEP_ROLE: CHILD}).run_id
    tracking.update_run(store, old, metrics={"val/total": 999.0, "val/kl": 0.0, "test/kl": 0.0})
    tracking.close_run(store, old, "FINISHED")
    ids["old"] = old
    return tmp, store, context.parent_run_id, ids


def report_cfg(tmp, *overrides):
    return compose_config(*isolated(tmp), f"out_dir={tmp}/reports", *overrides, name="report")


def test_report_ranks_only_comparable_runs_and_never_a_collapsed_one(sweep_store):
    tmp, store, parent, ids = sweep_store
    paths = make_report(report_cfg(tmp))  # the latest sweep: r1
    table = pd.read_csv(paths["csv"]).set_index("run_id")
    # Groups: the ELBO runs, the notebook's MSE loss, and the old run whose settings are
    # unknown. The collapsed notebook run has a tiny val/total (~0.07) but is never ranked,
    # let alone first.
    assert table["group"].nunique() == 3
    assert table.loc[ids["old"], "group"] == "loss ?"
    elbo = table.loc[[ids["elbo"], ids["elbo_z2"]]]
    assert sorted(elbo["rank"]) == [1, 2] and elbo["group"].nunique() == 1
    best = elbo["metrics.val/total"].idxmin()
    assert table.loc[best, "rank"] == 1
    assert pd.isna(table.loc[ids["collapsed"], "rank"])
    assert table.loc[ids["collapsed"], "flag"] == "collapsed"
    assert table.loc[ids["nan"], "status"] == "FAILED"
    assert (
        table.loc[ids["elbo"], "active"]
        == f"{int(elbo.loc[ids['elbo'], 'metrics.' + metrics.VAL_ACTIVE_UNITS])} / 32"
    )

    page = paths["html"].read_text()
    assert "non-finite loss at epoch 1" in page and ids["nan"] in page
    assert f">{ids['old'][:8]}</a>" in page  # in its group's table, not only in table.csv
    assert page.count('src="data:image/png;base64,') >= 4 and 'src="http' not in page
    assert f"#/experiments/{store.experiment_id}/runs/{ids['elbo']}" in page
    # Headers say what each number is and its unit; continuous pixels are not a likelihood.
    assert "val −ELBO on intensities (nats)" in page and "not a likelihood" in page
    assert "val loss (loss units)" in page  # the notebook's MSE group
    text = re.sub(r'src="data:[^"]*"', "", page)  # the words, not the embedded images
    assert "nll" not in text.lower() and "likelihood" in text
    summary = paths["md"].read_text()
    assert "Posterior collapse: 2 of 4 measured runs (finished: pruned and failed runs" in summary
    assert "Test numbers average over 256 test digits." in summary
    # K for the ELBO group, which has an IW estimate; not for the notebook's MSE.
    assert re.findall(r"estimate \((.*)\) uses K = 5 samples per digit", summary) == ["loss elbo"]
    attached = {a.path for a in store.client.list_artifacts(parent, "report")}
    assert attached == {"report/report.html", "report/report.md", "report/table.csv"}


def _child(store, context, style: str, config: str, status: str, value: float | None) -> str:
    """A child run of the sweep as training would leave it (bit-identical styles: same numbers)."""
    tags = {**child_tags(context, config), OVERRIDES: f"style={style}"}
    params = {"style.name": style, "loss.name": "elbo", "model.latent_dim": 2}
    run = tracking.create_run(store, style, tags, params, parent_run_id=context.parent_run_id)
    if value is not None:
        for epoch in (1, 2):
            run.log({"val/total": value + 10 / epoch, "train/total": value}, step=epoch)
        final = {metrics.VAL_ACTIVE_UNITS: 2, metrics.ACTIVE_UNITS: 2}
        run.log({"val/total": value, "test/total": value - 1, **final}, step=2)
    run.end(status)
    return run.run_id


@pytest.fixture
def ticking_clock(monkeypatch):
    """MLflow's clock, one millisecond on at each reading: runs created in turn start in turn.

    The ranking's tie-break is the earlier run; two runs created within one millisecond would
    otherwise be ordered by their random ids.
    """
    ticks = itertools.count(int(time.time() * 1000))
    monkeypatch.setattr(mlflow_client, "get_current_time_millis", lambda: next(ticks))


def test_a_sweeps_report_ranks_its_current_attempts_and_names_the_summarys_best(
    tmp_path, ticking_clock
):
    cfg = compose_config(*isolated(tmp_path))
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    context = start_sweep(store, "s1", {}, total=3, objective="val/total")
    functional = _child(store, context, "functional", "a", "FINISHED", 120.0)
    subclass = _child(store, context, "subclass", "b", "FINISHED", 120.0)
    killed = _child(store, context, "custom_loop", "c", "KILLED", None)
    redone = _child(store, context, "custom_loop", "c", "FINISHED", 125.0)
    # force=true trains the functional configuration again: bit-identical, and superseded.
    forced = _child(store, context, "functional", "a", "FINISHED", 120.0)
    finish_sweep(store, context)
    best = tracking.get_run(store, context.parent_run_id).tags[BEST_RUN]

    paths = make_report(report_cfg(tmp_path, "sweep_id=s1"))
    summary = paths["md"].read_text()
    assert best == functional
    (line,) = [line for line in summary.splitlines() if line.startswith("- Best")]
    assert line == (
        f"- Best: {best[:8]} (style=functional) with val/total = 120.0000, tied with {subclass}."
    )
    assert f"| tied with {best[:8]} |" in summary  # the subclass run's note, in the table
    assert set(pd.read_csv(paths["csv"])["run_id"]) == {functional, subclass, redone}
    assert "Superseded: 2 other attempt(s)" in summary
    assert killed[:8] in summary and forced[:8] in summary


@pytest.mark.parametrize("hostile", ["../escaped", "/tmp/vaelab-escaped", "a/../../b"])
def test_a_sweep_id_from_the_store_never_writes_outside_the_reports_directory(tmp_path, hostile):
    # Anyone who can write to a shared store can tag a run; a reader's report must not follow.
    cfg = compose_config(*isolated(tmp_path))
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    tags = {SWEEP_ID: hostile, SWEEP_ROLE: PARENT}
    tracking.create_run(store, "hostile parent", tags).end("FINISHED")
    child = {SWEEP_ID: hostile, SWEEP_ROLE: CHILD}
    run = tracking.create_run(store, "child", child, params={"loss.name": "elbo"})
    run.log({"val/total": 1.0})
    run.end("FINISHED")
    before = {p for p in tmp_path.parent.rglob("*")} | set(Path("/tmp").glob("vaelab-escaped*"))
    with pytest.raises(UserError, match="not a plain file name"):
        make_report(report_cfg(tmp_path))  # the latest sweep: its id comes from the tag
    after = {p for p in tmp_path.parent.rglob("*")} | set(Path("/tmp").glob("vaelab-escaped*"))
    assert not [p for p in after - before if not p.is_relative_to(tmp_path)]
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").rglob("*.html"))


def test_report_of_chosen_runs_and_of_a_filter(sweep_store):
    tmp, _, _, ids = sweep_store
    chosen = make_report(report_cfg(tmp, f"runs=[{ids['elbo']},{ids['collapsed']}]"))
    assert len(pd.read_csv(chosen["csv"])) == 2
    filtered = make_report(report_cfg(tmp, "filter='params.`loss.name` = \"notebook_functional\"'"))
    assert len(pd.read_csv(filtered["csv"])) == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["sweep_id=nope"], "sweep_id=nope has no runs"),
        (["runs=[0123456789abcdef0123456789abcdef]"], "runs not in the store"),
        (["metric=test/total"], "metric='test/total': tuning on the test set"),
        (["metric=val/kl"], "rewards a collapsed posterior"),
    ],
)
def test_unknown_selection_or_metric_is_a_clear_error(sweep_store, overrides, message):
    with pytest.raises(UserError, match=message):
        make_report(report_cfg(sweep_store[0], *overrides))


def test_without_a_sweep_the_report_shows_the_latest_runs(smoke_cfg, tmp_path):
    first = train_and_evaluate(smoke_cfg("tracking.log_model=false")).run_id
    store = tracking.open_store(smoke_cfg().tracking.uri, "vaelab")
    later = tracking.create_run(store, "later", {}, params={"seed": 2})
    later.log({"val/total": 400.0})
    later.end("FINISHED")
    second = later.run_id
    paths = make_report(report_cfg(tmp_path, "latest_runs=1"))
    assert list(pd.read_csv(paths["csv"])["run_id"]) == [second]
    assert first not in paths["html"].read_text()
    assert "the latest 1 runs" in paths["md"].read_text()


def test_run_links_follow_the_address_make_ui_serves(sweep_store):
    tmp, store, _, ids = sweep_store
    (tmp / "mlruns" / "ui_url.txt").write_text("http://127.0.0.1:5077\n")
    try:
        page = make_report(report_cfg(tmp))["html"].read_text()
    finally:
        (tmp / "mlruns" / "ui_url.txt").unlink()
    assert f'href="http://127.0.0.1:5077/#/experiments/{store.experiment_id}/runs/' in page


def test_empty_experiment_exits_1_with_one_clear_line(run_app, tmp_path):
    tracking.open_store(f"sqlite:///{tmp_path}/mlruns/mlflow.db", "vaelab")  # (none: no store)
    result = run_app("report.py")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: no runs in experiment")


def test_a_report_imports_no_deep_learning_framework(sweep_store):
    tmp = sweep_store[0]
    # Exit handlers run even on the command's fast exit: the probe reports from one.
    probe = (
        "import atexit, sys, runpy; sys.argv = ['report.py', *sys.argv[1:]]"
        "\natexit.register(lambda: print(sorted("
        "m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules), flush=True))"
        "\nrunpy.run_path('pipelines/report.py', run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, *isolated(tmp), f"out_dir={tmp}/reports"],
        capture_output=True,
        text=True,
        cwd=compose_config().paths.root,
        timeout=120,
        check=False,
    )
    assert "Report:" in result.stdout, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _get(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.server
def test_a_real_mlflow_server_serves_runs_histories_and_artifacts(sweep_store):
    tmp, store, _, ids = sweep_store
    with mlflow_server("--backend-store-uri", store.uri) as base:
        runs = _get(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [store.experiment_id], "max_results": 100},
        )["runs"]
        by_id = {r["info"]["run_id"]: r for r in runs}
        assert ids["elbo"] in by_id and ids["nan"] in by_id
        params = {p["key"]: p["value"] for p in by_id[ids["elbo"]]["data"]["params"]}
        assert params["model.latent_dim"] == "32" and params["style.name"] == "functional"
        history = _get(
            f"{base}/api/2.0/mlflow/metrics/get-history?run_id={ids['elbo']}&metric_key=val/kl"
        )["metrics"]
        assert [m["step"] for m in history] == [1, 2]
        files = _get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={ids['elbo']}")["files"]
        assert {"config.yaml", "plots", "run.log"} <= {f["path"] for f in files}


_LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const width = window.innerWidth;
  document.body.setAttribute("data-probe", JSON.stringify({
    width: width,
    pageOverflows: document.documentElement.scrollWidth > width,
    tablesFit: [...document.querySelectorAll("table")].map(
      t => t.getBoundingClientRect().right <= width),
    imagesLoaded: [...document.images].map(i => i.complete && i.naturalWidth > 0),
    charts: [...document.querySelectorAll("figure.chart")].map(f => {
      const image = f.querySelector("img"), box = image.getBoundingClientRect();
      return {
        legend: JSON.parse(f.dataset.legend),
        shown: box.width > 0,
        drawn: image.naturalWidth,
        width: box.width,
        right: box.right,
      };
    }),
  }));
});
</script></body>"""


def _chromium(*args: str, tmp) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            shutil.which("chromium"),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}/chrome",
            "--window-size=1400,2400",
            "--hide-scrollbars",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wide_sweep(store: tracking.Store, sweep_id: str = "wide") -> None:
    """A sweep of 12 configurations (latent_dim x intermediate_dim), 2 seeds each, each trained
    by 2 bit-identical styles (48 runs); the widest is best at epoch 2 of 3."""
    context = start_sweep(store, sweep_id, {}, total=48, objective="val/total")
    loss = {"loss.name": "elbo", "loss.reconstruction": "bce", "loss.beta": 1.0}
    loss |= {"loss.pixel_reduction": "sum", "loss.kl_reduction": "sum"}
    axes = ((2, 4, 8, 16), (32, 64, 128), (1, 2), ("functional", "subclass"))
    for z, h, seed, style in itertools.product(*axes):
        kl = 4.0 * z**0.5 + 0.3 * seed * (1 + z / 16)
        reconstruction = 150.0 - 8.0 * z**0.5 - h / 32 + 0.5 * seed
        total = reconstruction + kl
        params = {"style.name": style, "model.latent_dim": z, "model.intermediate_dim": h}
        params |= {"seed": seed, "train.epochs": 3, **loss}
        tags = child_tags(context, f"{z}-{h}-{seed}-{style}")
        run = tracking.create_run(store, style, tags, params, context.parent_run_id)
        for epoch, value in {1: total + 12.0, 2: total - 0.5 if h == 128 else total + 3.0}.items():
            run.log({"val/total": value}, step=epoch)
        final = {"val/total": total, "val/kl": kl, "val/reconstruction": reconstruction}
        final |= {"test/total": total + 1, "test/kl": kl, metrics.VAL_ACTIVE_UNITS: z}
        run.log(final, step=3)
        run.end("FINISHED")
    finish_sweep(store, context)


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory):
    """A report's worth of 12 configurations, written to a real store (no training)."""
    tmp = tmp_path_factory.mktemp("wide")
    cfg = compose_config(*isolated(tmp))
    wide_sweep(tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment))
    return tmp, None, None, {}


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
@pytest.mark.parametrize("store", ["sweep_store", "wide_store"])
def test_the_report_reads_at_a_glance_in_a_real_browser(store, request, keep_dir):
    """At 1400 px: no horizontal scrolling, every image loaded, every chart with a legend as
    drawn (its entries, read from the figure, ride on the page) and shown at the size it was
    drawn (never shrunk to fit: its text stays readable), with 4 runs or 12 configurations;
    a screenshot is kept."""
    tmp, _, _, ids = request.getfixturevalue(store)
    page = make_report(report_cfg(tmp))["html"]
    probed = page.with_name("probed.html")
    probed.write_text(page.read_text().replace("</body>", _LAYOUT_PROBE))
    dom = _chromium("--virtual-time-budget=5000", "--dump-dom", probed.as_uri(), tmp=tmp).stdout
    probe = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    assert probe["width"] == 1400
    assert not probe["pageOverflows"] and all(probe["tablesFit"]), probe
    assert len(probe["imagesLoaded"]) >= 4 and all(probe["imagesLoaded"]), probe
    charts = probe["charts"]
    assert len(charts) >= 4 and all(c["legend"] and c["shown"] for c in charts), charts
    # Readable: each chart at its drawn size, within the page.
    assert all(c["width"] >= c["drawn"] and c["right"] <= 1400 for c in charts), charts
    if store == "sweep_store":
        # Learning curves of each group, the rate–distortion plane, the latent_dim effect.
        assert any(ids["elbo"][:8] in entry for c in charts for entry in c["legend"]), charts
    else:
        # Effects, parallel coordinates, learning curves, the rate–distortion plane.
        legends = [entry for c in charts for entry in c["legend"]]
        assert "12 configurations, coloured by mean" in legends, legends
        assert "Pareto front (4)" in legends, legends
    screenshot = keep_dir / f"report_{store}.png"
    _chromium(f"--screenshot={screenshot}", page.as_uri(), tmp=tmp)
    assert screenshot.stat().st_size > 20_000


def _visible_text(dom: str) -> str:
    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_mlflow_ui_opens_on_the_runs_table_in_a_real_browser(smoke_cfg, tmp_path, keep_dir):
    """The address the report links to shows the training runs, not the GenAI traces view.

    MLflow 3.17 ignores the experiment's `mlflow.experimentKind` tag (its UI decides by a
    per-browser setting, GenAI by default), so the report's links ask for the runs view.
    """
    cfg = smoke_cfg(*TINY[1:])
    run_id = train_and_evaluate(cfg).run_id
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    name = store.client.get_run(run_id).info.run_name
    with mlflow_server("--backend-store-uri", store.uri) as base:
        url = experiment_url(base, store.experiment_id)
        dom = _chromium("--virtual-time-budget=20000", "--dump-dom", url, tmp=tmp_path).stdout
        text = _visible_text(dom)
        assert "Run Name" in text and name in text and "1 matching run" in text, text[:2000]
        assert "Token Usage" not in text and "Tokens per Trace" not in text, text[:2000]
        screenshot = keep_dir / "mlflow_ui.png"
        _chromium("--virtual-time-budget=20000", f"--screenshot={screenshot}", url, tmp=tmp_path)
    assert screenshot.stat().st_size > 20_000


@pytest.mark.browser
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_models_view_lists_each_model_with_its_metrics_and_a_run_shows_its_user(
    smoke_cfg, tmp_path, keep_dir
):
    """The experiment's Models view lists the run's LoggedModel, named after the run, with the
    final metrics logged against it; the run's page shows who made it (its User)."""
    cfg = smoke_cfg(*TINY[1:-1])  # with its model
    run_id = train_and_evaluate(cfg).run_id
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    (model,) = store.client.search_logged_models([store.experiment_id])
    with mlflow_server("--backend-store-uri", store.uri) as base:
        models = f"{base}/#/experiments/{store.experiment_id}/models?{ML_VIEW}"
        # Wide enough that the grid renders every column (it draws only those in view).
        wide = ("--window-size=3600,1200", "--virtual-time-budget=20000")
        text = _visible_text(_chromium(*wide, "--dump-dom", models, tmp=tmp_path).stdout)
        linked = {m.key: m.value for m in model.metrics}
        assert model.name in text and "Dataset: mnist" in text, text[:3000]
        for name in ("test/total", "test/reconstruction", "test/kl"):
            assert name in text and str(linked[name])[:6] in text, (name, text[:3000])
        screenshot = keep_dir / "mlflow_models.png"
        _chromium(*wide, f"--screenshot={screenshot}", models, tmp=tmp_path)
        page = run_url(base, store.experiment_id, run_id)
        dom = _chromium("--virtual-time-budget=20000", "--dump-dom", page, tmp=tmp_path).stdout
        text = _visible_text(dom)
        user = store.client.get_run(run_id).data.tags["mlflow.user"]
        assert f"Created by {user}" in text, text[:3000]
