"""Reports read the store alone; the MLflow server serves what the runs logged."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from tests.conftest import compose_config, isolated
from vaelab import tracking
from vaelab.report import ReportError, make_report
from vaelab.run import SweepContext, train_and_evaluate


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory):
    """A real little sweep: an ELBO run, a collapsing notebook run, a NaN run, an old run."""
    tmp = tmp_path_factory.mktemp("report")
    base = ["experiment=smoke", *isolated(tmp), "tracking.log_model=false", "train.epochs=2"]
    cfg = compose_config(*base)
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment, None)
    parent = tracking.create_run(store, "sweep-r1", {"sweep.id": "r1", "sweep.role": "parent"})
    context = SweepContext("r1", parent, 3)
    ids = {}
    for name, overrides in {
        "elbo": [],
        "collapsed": ["loss=notebook_functional"],
        "nan": ["loss=notebook_functional", "train.learning_rate=1e12"],
    }.items():
        try:
            ids[name] = train_and_evaluate(compose_config(*base, *overrides), sweep=context).run_id
        except FloatingPointError as error:
            ids[name] = getattr(error, tracking.RUN_ID_ATTRIBUTE)
    # A run from an older version: fewer metrics, no artifacts, other params.
    old = tracking.create_run(store, "old", {"sweep.id": "r1", "sweep.role": "child"})
    tracking.update_run(store, old, metrics={"val/total": 999.0, "test/kl": 0.0})
    tracking.close_run(store, old, "FINISHED")
    ids["old"] = old
    return tmp, store, parent, ids


def report_cfg(tmp, *overrides):
    return compose_config(*isolated(tmp), f"out_dir={tmp}/reports", *overrides, name="report")


def test_report_ranks_flags_collapse_and_lists_failures(sweep_store):
    tmp, store, parent, ids = sweep_store
    paths = make_report(report_cfg(tmp))  # the latest sweep: r1
    table = pd.read_csv(paths["csv"])
    assert list(table["status"]) == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    finished = table[table["status"] == "FINISHED"]
    assert finished["val/total"].is_monotonic_increasing
    assert table.iloc[0]["run_id"] == ids["collapsed"]  # MSE-mean loss is tiny in value
    collapsed = dict(zip(table["run_id"], table["collapsed"], strict=True))
    assert collapsed[ids["collapsed"]] and collapsed[ids["old"]] and not collapsed[ids["elbo"]]
    elbo = table[table["run_id"] == ids["elbo"]].iloc[0]
    assert elbo["test/active_units"] > 0 and elbo["test/iw_nll"] < elbo["test/total"]
    assert "loss.name" in table.columns  # a varying param is a column

    page = paths["html"].read_text()
    assert "non-finite loss at epoch 1" in page and ids["nan"] in page
    assert page.count('src="data:image/png;base64,') >= 4 and 'src="http' not in page
    assert f"#/experiments/{store.experiment_id}/runs/{ids['elbo']}" in page
    assert "Posterior collapse (no active latent unit): 2 of 4 runs" in paths["md"].read_text()
    attached = {a.path for a in tracking.MlflowClient(store.uri).list_artifacts(parent, "report")}
    assert attached == {"report/report.html", "report/report.md", "report/table.csv"}


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
    ],
)
def test_unknown_selection_is_a_clear_error(sweep_store, overrides, message):
    with pytest.raises(ReportError, match=message):
        make_report(report_cfg(sweep_store[0], *overrides))


def test_empty_experiment_exits_non_zero(run_pipeline):
    result = run_pipeline("report.py")
    assert result.returncode != 0
    assert "no sweep in experiment" in result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, payload: dict | None = None) -> dict:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_a_real_mlflow_server_serves_runs_histories_and_artifacts(sweep_store):
    tmp, store, _, ids = sweep_store
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            store.uri,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
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
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_the_report_renders_in_a_headless_browser(sweep_store):
    tmp = sweep_store[0]
    paths = make_report(report_cfg(tmp))
    screenshot = tmp / "report.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp}/chrome",
            "--window-size=1400,2000",
            f"--screenshot={screenshot}",
            paths["html"].as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert screenshot.stat().st_size > 20_000
