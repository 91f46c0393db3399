"""Where a report's links and a run's last line send a user: the UI that shows those runs."""

import dataclasses
import re
from pathlib import Path

import pytest

from tests.conftest import TINY, compose_config, isolated, mlflow_server
from vaelab.edges import tracking
from vaelab.edges.mlflow_tables import LocalStore
from vaelab.edges.ui import ML_VIEW, browse_hint
from vaelab.orchestration.report import UI_URL_FILE, build, make_report, render, select
from vaelab.vocab.errors import ReportError

SERVER = "http://mlflow.team.example:5000"


def report_cfg(tmp: Path, *overrides: str):
    return compose_config(*isolated(tmp), f"out_dir={tmp}/reports", *overrides, name="report")


@pytest.fixture
def two_runs(tmp_path) -> tuple[tracking.Store, list[str]]:
    """A local store with two finished runs (numbers only: a report needs no training)."""
    cfg = compose_config("experiment=smoke", *isolated(tmp_path))
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    ids = []
    for seed, total in ((1, 500.0), (2, 490.0)):
        run = tracking.create_run(store, f"seed={seed}", {}, params={"seed": seed})
        run.log({"val/total": total, "val/kl": 5.0, "test/kl": 5.0}, step=1)
        run.end("FINISHED")
        ids.append(run.run_id)
    # What `make ui` last served on this machine: not the UI of a server's runs.
    (tmp_path / "mlruns" / UI_URL_FILE).write_text("http://127.0.0.1:5077\n")
    return store, ids


def test_a_server_stores_report_links_to_that_server(two_runs, tmp_path):
    store, ids = two_runs
    local = LocalStore.open(store.uri, "vaelab")
    source = dataclasses.replace(local, uri=f"{SERVER}/")  # the runs as a server serves them
    report = build(source, select(source, None, None, None, 50), report_cfg(tmp_path), tmp_path)
    page = render.page(report)
    links = re.findall(r'href="([^"]+)"', page)
    assert len(links) == 3 and all(link.startswith(f"{SERVER}/#/experiments/") for link in links)
    for run_id in ids:
        assert f"{SERVER}/#/experiments/{store.experiment_id}/runs/{run_id}?{ML_VIEW}" in links
    assert "127.0.0.1" not in page and "make ui" not in page
    # The local store's report still follows what `make ui` serves.
    page = render.page(
        build(local, select(local, None, None, None, 50), report_cfg(tmp_path), tmp_path)
    )
    assert all(
        link.startswith("http://127.0.0.1:5077/#/") for link in re.findall(r'href="([^"]+)"', page)
    )


def test_where_to_browse_a_run_is_its_server_or_make_ui():
    assert browse_hint("sqlite:////data/mlruns/mlflow.db", "1", "abc") == "make ui"
    assert browse_hint(f"{SERVER}/", "1", "abc") == (f"{SERVER}/#/experiments/1/runs/abc?{ML_VIEW}")
    assert browse_hint(SERVER) == f"{SERVER}/#/experiments?{ML_VIEW}"


@pytest.mark.parametrize(
    "address",
    ["'javascript:alert(1)'", "ftp://mlflow.example", "file:///etc/passwd", "mlflow:5000"],
)
def test_a_ui_url_that_is_not_http_is_refused_in_one_line(run_app, address):
    result = run_app("report.py", f"ui_url={address}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: ui_url={address.strip(chr(39))!r} is not an http(s) address")
    assert "ui_url=http://127.0.0.1:5000" in line


def test_a_recorded_ui_address_that_is_not_http_is_refused(two_runs, tmp_path):
    (tmp_path / "mlruns" / UI_URL_FILE).write_text("javascript:alert(1)\n")
    with pytest.raises(ReportError, match=r"ui_url.txt='javascript:alert\(1\)' is not an http"):
        make_report(report_cfg(tmp_path))
    page = make_report(report_cfg(tmp_path, "ui_url=https://ui.example/"))["html"].read_text()
    assert re.findall(r'href="([^"]+)"', page)[0].startswith("https://ui.example/#/experiments/")


@pytest.mark.server
def test_a_run_on_a_server_and_its_report_send_the_user_to_that_server(run_app, tmp_path):
    (tmp_path / "server").mkdir()
    with mlflow_server(
        "--backend-store-uri",
        f"sqlite:///{tmp_path}/server/mlflow.db",
        "--artifacts-destination",
        f"{tmp_path}/server/artifacts",
        cwd=tmp_path,
    ) as base:
        on_server = ["tracking=server", f"tracking.uri={base}"]
        trained = run_app("train.py", *TINY[:-1], *on_server)  # with its model, as by default
        console = trained.stdout + trained.stderr
        assert trained.returncode == 0, console[-3000:]
        store = tracking.open_store(base, "vaelab")
        (run,) = tracking.find_runs(store, {})
        page = f"{base}/#/experiments/{store.experiment_id}/runs/{run.run_id}?{ML_VIEW}"
        assert "FINISHED: val/total" in console and f"(browse: {page})" in console
        assert "make ui" not in console
        # Through the server too, the model carries the objective, the run one point of it.
        model = store.client.get_logged_model(tracking.logged_model_id(store, run.run_id))
        assert {m.key: m.value for m in model.metrics}["val/total"] == run.metrics["val/total"]
        assert [step for step, _ in tracking.metric_history(store, run.run_id, "val/total")] == [1]
        reported = run_app("report.py", *on_server, f"out_dir={tmp_path}/reports")
        assert reported.returncode == 0, reported.stderr[-3000:]
        assert f"Browse the runs themselves: {base}/#/experiments?{ML_VIEW}" in reported.stdout
        assert "make ui" not in reported.stdout + reported.stderr
        (html,) = (tmp_path / "reports").glob("*/report.html")
        links = re.findall(r'href="([^"]+)"', html.read_text())
        assert page in links and all(link.startswith(f"{base}/#/") for link in links)
