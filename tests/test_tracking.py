"""The run store: artifacts follow a moved store; a copy is not silently shared."""

import shutil

import pytest

from vaelab import tracking
from vaelab.errors import TrackingError


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
