"""Reading never writes: reports and the Python interface never create a store, a folder or an
experiment, and say what is missing instead."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

import vaelab
from vaelab.edges import tracking
from vaelab.vocab.errors import TrackingError


def files(root: Path) -> set[str]:
    """Every path under root, but a command's own log (Hydra's job folder in outputs/)."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if "outputs" not in p.parts}


def experiments(db: Path) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        return connection.execute(
            "SELECT experiment_id, name, lifecycle_stage, last_update_time FROM experiments "
            "ORDER BY experiment_id"
        ).fetchall()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A VAELAB_HOME whose store holds one finished run in `vaelab` and an experiment `other`."""
    monkeypatch.setenv("VAELAB_HOME", str(tmp_path))
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    run = tracking.create_run(tracking.open_store(uri, "vaelab"), "kept", {}, {"seed": 1})
    run.log({"val/total": 100.0}, step=1)
    run.log_text("kept\n", "note.txt")
    run.end("FINISHED")
    tracking.open_store(uri, "other")
    return tmp_path


@pytest.fixture
def unchanged(home):
    """After the test: not a file more or less under the home, and the same experiments."""
    db = home / "mlruns" / "mlflow.db"
    before = (files(home), experiments(db))
    yield db
    assert (files(home), experiments(db)) == before


NO_EXPERIMENT = r"no experiment 'nope' in the run store at sqlite:///.*; experiments there: "

READERS = {
    "runs": lambda **where: vaelab.runs(**where),
    "history": lambda **where: vaelab.history("0123456789abcdef0123456789abcdef", **where),
    "load_model": lambda **where: vaelab.load_model("0123456789abcdef0123456789abcdef", **where),
    "report": lambda **where: vaelab.report(**where),
}


@pytest.mark.parametrize("reader", READERS)
def test_an_unknown_experiment_is_named_with_those_there_and_not_created(reader, unchanged):
    with pytest.raises(TrackingError, match=NO_EXPERIMENT) as refused:
        READERS[reader](experiment="nope")  # the project's own store (VAELAB_HOME here)
    assert {"Default", "other", "vaelab"} <= set(str(refused.value).rsplit(": ", 1)[1].split(", "))


@pytest.mark.parametrize("reader", READERS)
def test_a_store_that_is_not_there_is_named_and_not_created(reader, home, unchanged):
    missing = home / "nowhere" / "x.db"
    with pytest.raises(TrackingError, match=f"no run store at {missing}: train a run first"):
        READERS[reader](store=f"sqlite:///{missing}")
    assert not (home / "nowhere").exists()


def test_reading_through_mlflow_changes_nothing_either(home, unchanged, tmp_path_factory):
    frame = vaelab.runs("all")
    assert list(frame["run_name"]) == ["kept"]
    with pytest.raises(TrackingError, match="logged no model"):  # through MLflow's client
        vaelab.load_model(frame["run_id"][0])
    # A filter beyond equalities goes through MLflow's client too, not the direct reader.
    out = tmp_path_factory.mktemp("reports")  # its files are all a report writes
    paths = vaelab.report(filter="metrics.`val/total` < 1000", out_dir=str(out))
    assert paths["html"].is_file()


def test_the_report_command_names_a_missing_experiment_in_one_line(run_app, home, unchanged):
    result = run_app("report.py", "experiment_name=nope")
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: no experiment 'nope' in the run store at"), line
