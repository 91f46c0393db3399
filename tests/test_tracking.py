"""The run store: artifacts follow a moved store; a copy is not silently shared."""

import getpass
import os
import shutil
import sqlite3
import stat
import threading

import pytest
from mlflow.tracking import MlflowClient

from vaelab.edges import tracking
from vaelab.vocab.errors import TrackingError


def store_at(root):
    return tracking.open_store(f"sqlite:///{root}/mlflow.db", "vaelab", f"{root}/artifacts")


def logged_run(store):
    run = tracking.create_run(store, "r", {})
    run.log_text("kept\n", "note.txt")
    run.end("FINISHED")
    return run.run_id


def test_a_moved_store_keeps_reading_and_writing_its_artifacts_in_its_new_place(tmp_path):
    old = tmp_path / "old" / "mlruns"
    run_id = logged_run(store_at(old))
    new = tmp_path / "new" / "mlruns"
    shutil.move(old, new)  # the old place is gone
    store = store_at(new)
    assert tracking.read_text_artifact(store, run_id, "note.txt") == "kept\n"
    later = logged_run(store)
    assert (new / "artifacts" / later / "artifacts" / "note.txt").is_file()
    assert not old.exists()


def test_a_copied_store_whose_original_still_exists_is_refused_naming_both(tmp_path):
    original = tmp_path / "a" / "mlruns"
    logged_run(store_at(original))
    copy = tmp_path / "b" / "mlruns"
    shutil.copytree(original, copy)
    with pytest.raises(
        TrackingError, match=rf"keeps the artifacts of its experiment in {original}"
    ):
        store_at(copy)


def schema(db):
    """Every table's columns and the migration version (MLflow's own DDL text varies from one
    creation to the next: it lists CHECK constraints in set order)."""
    with sqlite3.connect(db) as connection:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
        tables = {
            name: [column[1:] for column in connection.execute(f'PRAGMA table_info("{name}")')]
            for name in sorted(names)
        }
        version = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return tables, version


def test_a_fresh_store_is_a_copy_of_an_empty_one_mlflow_made_and_works_as_one(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store_at(tmp_path / "a")  # the first fresh store on this machine makes the template
    (template,) = (tmp_path / "cache" / "vaelab").glob("mlflow-*-empty.db")
    store = store_at(tmp_path / "b")
    run_id = logged_run(store)
    assert tracking.read_text_artifact(store, run_id, "note.txt") == "kept\n"
    direct = tmp_path / "direct.db"
    MlflowClient(f"sqlite:///{direct}").search_experiments()  # MLflow building a store itself
    assert schema(tmp_path / "b" / "mlflow.db") == schema(direct) == schema(template)
    default = MlflowClient(store.uri).get_experiment("0").artifact_location
    assert default == str(tmp_path / "b" / "artifacts" / "0")  # beside this store, not the cache


def test_runs_logging_one_new_dataset_at_once_all_get_it(tmp_path):
    """MLflow creates a dataset on first use without a lock; eight writers race to create it."""
    store = store_at(tmp_path / "mlruns")
    runs = [tracking.create_run(store, f"r{i}", {}) for i in range(8)]
    start = threading.Barrier(len(runs))
    errors = []

    def log(run):
        start.wait()
        try:
            run.log_dataset("mnist", "abc", "http://registry/mnist.tgz", {"train": 1}, "training")
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=log, args=(run,)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for run in runs:
        (logged,) = store.client.get_run(run.run_id).inputs.dataset_inputs
        assert logged.dataset.digest == "abc"


def test_a_new_local_store_is_its_owners_only_under_umask_022(tmp_path):
    previous = os.umask(0o022)
    try:
        store = store_at(tmp_path / "mlruns")
        logged_run(store)
    finally:
        os.umask(previous)
    root = tmp_path / "mlruns"
    assert stat.S_IMODE((root / "mlflow.db").stat().st_mode) == 0o600
    for journal in root.glob("mlflow.db-*"):  # sqlite's WAL and shared memory
        assert stat.S_IMODE(journal.stat().st_mode) == 0o600, journal
    for directory in (root, root / "artifacts"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_every_run_says_who_made_it_and_from_what(tmp_path):
    store = store_at(tmp_path / "mlruns")
    record = tracking.get_run(store, logged_run(store))
    assert record.tags["mlflow.user"] == getpass.getuser()  # the UI's User column
    assert record.tags["mlflow.source.type"] == "LOCAL"
    assert record.tags["mlflow.source.name"]  # the script (here, pytest's)


@pytest.mark.parametrize(
    "uri, says",
    [
        ("postgresql://vaelab:hunter2@db:5432/mlflow", "not a run store vaelab can open"),
        ("mysql://db/mlflow", "not a run store vaelab can open"),
        ("ftp://host/mlruns", "not a run store vaelab can open"),
        ("http://alice:hunter2@mlflow:5000", "carries credentials"),
        ("https://token@mlflow.example", "carries credentials"),
        ("http://:5000", "is malformed"),
    ],
)
def test_a_store_uri_that_cannot_work_or_would_record_a_password_is_refused(uri, says):
    with pytest.raises(TrackingError, match=says) as refused:
        tracking.open_store(uri, "vaelab")
    assert "hunter2" not in str(refused.value)  # the password is never repeated back


def test_one_log_call_of_thousands_of_entries_reaches_the_store_whole(tmp_path):
    # MLflow takes at most 1,000 entries per log_batch: Run.log splits, in order, losing none.
    store = store_at(tmp_path / "mlruns")
    run = tracking.create_run(store, "big", {})
    metrics = {f"m/{i}": float(i) for i in range(1500)}
    params = {f"p.{i}": i for i in range(700)}
    tags = {f"t.{i}": f"v{i}" for i in range(400)}
    run.log(metrics, step=3, params=params, tags=tags)
    run.end("FINISHED")
    record = tracking.get_run(store, run.run_id)
    assert record.metrics == metrics
    assert record.params == {k: str(v) for k, v in params.items()}
    assert {k: v for k, v in record.tags.items() if k.startswith("t.")} == tags
    assert tracking.metric_history(store, run.run_id, "m/1499") == [(3, 1499.0)]
