"""The report's direct reader of a local store gives exactly what MLflow gives."""

import contextlib
import logging
import math
import sqlite3

import mlflow
import pandas as pd
import pytest

from tests.conftest import compose_config
from vaelab.edges import mlflow_tables, tracking
from vaelab.edges.mlflow_tables import LocalStore, Unsupported
from vaelab.orchestration import report
from vaelab.rules.lifecycle.children import child_tags, children_filter
from vaelab.rules.lifecycle.parent import PARENTS_FILTER, start_sweep
from vaelab.rules.lifecycle.verdict import finish_sweep
from vaelab.vocab.tags import PARENT, SWEEP_ID, SWEEP_ROLE


@pytest.fixture
def store(store_uri):
    """A sweep's parent and children, a stray run, a deleted one, another experiment."""
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "s1", {}, total=3, objective="val/total")
    for number in range(3):
        tags = child_tags(context, f"hash{number}")
        run = tracking.create_run(
            store, f"child {number}", tags, {"seed": number, "model.latent_dim": 2**number}
        )
        for epoch in (1, 2, 3):
            run.log({"val/total": 100.0 / (epoch + number), "train/kl": 1.5 * epoch}, step=epoch)
        run.end("FAILED" if number == 2 else "FINISHED", "boom" if number == 2 else None)
    finish_sweep(store, context)
    tracking.create_run(store, "stray", {"note": "it's quoted"}).end("KILLED")
    diverged = tracking.create_run(store, "diverged", {})
    diverged.log({"val/total": 3.0}, step=1)
    diverged.log({"val/total": float("nan"), "test/total": float("inf")}, step=2)
    diverged.end("FAILED", "non-finite loss at epoch 2")
    deleted = tracking.create_run(store, "deleted", {}).run_id
    store.client.delete_run(deleted)
    other = tracking.open_store(store_uri, "elsewhere")
    tracking.create_run(other, "not ours", {}).end("FINISHED")
    return tracking.open_store(store_uri, "vaelab")


def mlflow_frame(store, filter_string="", run_ids=None):
    return tracking.runs_frame(store, filter_string, run_ids)


def local_frame(store, filter_string="", run_ids=None):
    return LocalStore.open(store.uri, "vaelab").runs_frame(filter_string, run_ids)


FILTERS = [
    "",
    children_filter("s1"),
    PARENTS_FILTER,
    "attributes.status = 'FINISHED'",
    f"tags.`{SWEEP_ID}` = 's1' and attributes.status = 'FAILED'",
    "params.seed = '1'",
]


@pytest.mark.parametrize("filter_string", FILTERS)
def test_runs_read_directly_are_what_mlflow_reads_column_for_column(store, filter_string):
    expected = mlflow_frame(store, filter_string)
    found = local_frame(store, filter_string)
    assert len(found) == len(expected) > 0
    assert sorted(found.columns) == sorted(expected.columns)
    pd.testing.assert_frame_equal(found, expected[found.columns])


def test_a_selection_by_id_and_the_metric_histories_agree(store):
    ids = list(mlflow_frame(store, children_filter("s1"))["run_id"])[:2]
    pd.testing.assert_frame_equal(
        local_frame(store, run_ids=ids),
        mlflow_frame(store, run_ids=ids)[local_frame(store, run_ids=ids).columns],
    )
    local = LocalStore.open(store.uri, "vaelab")
    for run_id in ids:
        for name in ("val/total", "train/kl", "missing"):
            assert local.metric_history(run_id, name) == tracking.metric_history(
                store, run_id, name
            )
    assert len(local.metric_history(ids[0], "val/total")) == 3


@pytest.mark.parametrize(
    "filter_string",
    ["metrics.`val/total` < 50", "params.seed != '1'", "tags.note = 'it''s quoted'", "x = 1"],
)
def test_what_it_cannot_answer_exactly_is_left_to_mlflow(store, filter_string):
    with pytest.raises(Unsupported):
        local_frame(store, filter_string)


def test_artifacts_are_read_and_attached_where_mlflow_keeps_them(store, tmp_path):
    (parent,) = tracking.find_runs(store, {SWEEP_ROLE: PARENT})
    local = LocalStore.open(store.uri, "vaelab")
    copy = local.download_artifact(parent.run_id, "summary.txt", tmp_path / "down")
    assert copy.read_text() == tracking.read_text_artifact(store, parent.run_id, "summary.txt")
    assert local.download_artifact(parent.run_id, "nope.txt", tmp_path / "down") is None
    attached = tmp_path / "report.html"
    attached.write_text("<html>report</html>")
    local.log_files(parent.run_id, [attached], "report")
    assert mlflow.artifacts.load_text(f"runs:/{parent.run_id}/report/report.html") == (
        "<html>report</html>"
    )


def test_no_local_store_or_no_experiment_is_none(tmp_path, store):
    assert LocalStore.open("http://127.0.0.1:5000", "vaelab") is None
    assert LocalStore.open(f"sqlite:///{tmp_path}/none.db", "vaelab") is None
    assert not (tmp_path / "none.db").exists()  # reading never creates a store
    assert LocalStore.open(store.uri, "no such experiment") is None


def test_non_finite_values_read_back_as_mlflow_reads_them(store):
    runs = tracking.find_runs(store, {}, status="FAILED")
    (diverged,) = [r for r in runs if SWEEP_ID not in r.tags]
    local = LocalStore.open(store.uri, "vaelab")
    found = local.runs_frame(run_ids=[diverged.run_id]).iloc[0]
    expected = mlflow_frame(store, run_ids=[diverged.run_id]).iloc[0]
    assert math.isnan(found["metrics.val/total"]) and math.isnan(expected["metrics.val/total"])
    # MLflow keeps inf as the largest float; so does the direct reader, by reading it.
    assert found["metrics.test/total"] == expected["metrics.test/total"] > 1e300
    history = local.metric_history(diverged.run_id, "val/total")
    assert history[0] == (1, 3.0) and history[1][0] == 2 and math.isnan(history[1][1])
    assert math.isnan(tracking.metric_history(store, diverged.run_id, "val/total")[1][1])


def test_a_store_whose_artifacts_are_recorded_elsewhere_is_left_to_mlflow(store, tmp_path):
    assert LocalStore.open(store.uri, "vaelab", str(tmp_path / "elsewhere")) is None


def fake_schema(db, version="0000fake0000"):
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("UPDATE alembic_version SET version_num = ?", (version,))


def test_a_store_of_another_schema_version_is_read_through_mlflow(store, store_uri, caplog):
    db = mlflow_tables.sqlite_file(store_uri)
    assert mlflow_tables.LocalStore.open(store_uri, "vaelab") is not None  # today's schema
    fake_schema(db)
    caplog.set_level(logging.DEBUG, logger="vaelab.edges.mlflow_tables")
    assert mlflow_tables.LocalStore.open(store_uri, "vaelab") is None
    assert "schema version 0000fake0000, not dc11669786a5" in caplog.text
    assert mlflow_tables.rewrite_artifact_locations(db, "file:///a", "file:///b") is None
    # A report still reads every run, through MLflow's API.
    source = report.open_source(_tracking_at(store_uri), None)
    assert isinstance(source, tracking.StoreReader)
    assert len(source.runs_frame()) == len(mlflow_frame(store))


def test_an_unknown_schema_keeps_mlflows_journal_and_a_template_of_it_is_not_copied(
    tmp_path, monkeypatch
):
    # A template made by another MLflow version: a new store is built by MLflow itself.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = tracking.open_store(f"sqlite:///{tmp_path}/a/mlflow.db", "vaelab")
    (template,) = (tmp_path / "cache" / "vaelab").glob("mlflow-*-empty.db")
    fake_schema(template)
    second = tmp_path / "b" / "mlflow.db"
    tracking.open_store(f"sqlite:///{second}", "vaelab")
    assert mlflow_tables.schema_version(second) == mlflow_tables.SCHEMA_WRITTEN_FOR  # MLflow's
    # A database of an unknown schema is left in the journal mode it has.
    plain = tmp_path / "plain.db"
    with contextlib.closing(sqlite3.connect(plain)) as connection, connection:
        connection.execute("CREATE TABLE alembic_version (version_num TEXT)")
        connection.execute("INSERT INTO alembic_version VALUES ('0000fake0000')")
    mlflow_tables.use_write_ahead_log(plain)
    with contextlib.closing(sqlite3.connect(plain)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert first.experiment_id


def _tracking_at(uri):
    cfg = compose_config(name="report")
    cfg.tracking.uri = uri
    cfg.tracking.artifact_root = str(mlflow_tables.sqlite_file(uri).parent / "artifacts")
    return cfg.tracking
