"""Checkpoints that go wrong: a corrupt one is passed over, a failed write loses nothing."""

import errno
import logging
import os
import signal

import pytest

from tests.conftest import signal_at_epoch
from vaelab.edges import tracking
from vaelab.edges.mlflow_tables import local_path
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules import checkpoints
from vaelab.vocab import metrics

RUN = ["train.epochs=3", "tracking.log_model=false"]


@pytest.fixture
def killed(smoke_cfg, store_uri, monkeypatch):
    """A single run of 3 epochs interrupted as it reports its third: checkpoints 1 and 2."""
    with monkeypatch.context() as patch:
        signal_at_epoch(patch, signal.SIGINT, epoch=3)
        with pytest.raises(KeyboardInterrupt):
            train_and_evaluate(smoke_cfg(*RUN))
    store = tracking.open_store(store_uri, "vaelab")
    (run,) = tracking.find_runs(store, {})
    assert run.status == "KILLED"
    saved = tracking.artifact_paths(store, run.run_id, checkpoints.DIRECTORY)
    assert sorted(saved) == [checkpoints.path(1), checkpoints.path(2)]
    return store, run


def artifact_file(store, run_id, path):
    return local_path(store.client.get_run(run_id).info.artifact_uri) / path


def uninterrupted(tmp_path, smoke_cfg):
    return train_and_evaluate(smoke_cfg(*RUN, f"paths.store_dir={tmp_path}/reference")).metrics


@pytest.mark.parametrize("damaged, resumed_from", [((2,), "1"), ((1, 2), "0")])
def test_a_corrupt_checkpoint_is_passed_over_in_one_warning_line(
    killed, smoke_cfg, tmp_path, caplog, damaged, resumed_from
):
    store, run = killed
    for epoch in damaged:  # truncated, as a crash mid-write would leave it
        file = artifact_file(store, run.run_id, checkpoints.path(epoch))
        file.write_bytes(file.read_bytes()[:1000])
    caplog.set_level(logging.WARNING)
    result = train_and_evaluate(smoke_cfg(*RUN))  # the same command: the run resumes
    assert result.run_id == run.run_id
    (warning,) = [r.getMessage() for r in caplog.records if "unusable checkpoint" in r.getMessage()]
    assert all(checkpoints.path(e) in warning for e in damaged) and "checksum" in warning
    resumed = tracking.get_run(store, run.run_id)
    assert resumed.status == "FINISHED" and resumed.tags["resume.from_epochs"] == resumed_from
    assert [s for s, _ in tracking.metric_history(store, run.run_id, "val/total")] == [1, 2, 3]
    # train.checkpoints_kept=2: the newest two, the rewritten epoch 2 among them when damaged.
    saved = sorted(tracking.artifact_paths(store, run.run_id, checkpoints.DIRECTORY))
    assert saved == [checkpoints.path(2), checkpoints.path(3)]
    assert checkpoints.decode(tracking.read_artifact_bytes(store, run.run_id, saved[0])).epoch == 2
    reference = uninterrupted(tmp_path, smoke_cfg)
    for name in (*metrics.TEST_METRICS, "val/total"):
        # Both trained in this process, op-deterministic: bit for bit.
        assert result.metrics[name] == reference[name], name


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_the_run_goes_on(
    smoke_cfg, store_uri, monkeypatch, caplog
):
    real = tracking.Run.log_bytes

    def disk_full_at_epoch_2(self, data, path):
        if path == checkpoints.path(2):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        real(self, data, path)

    monkeypatch.setattr(tracking.Run, "log_bytes", disk_full_at_epoch_2)
    caplog.set_level(logging.WARNING)
    result = train_and_evaluate(smoke_cfg(*RUN))
    store = tracking.open_store(store_uri, "vaelab")
    run = tracking.get_run(store, result.run_id)
    assert run.status == "FINISHED"
    (warning,) = [
        r.getMessage() for r in caplog.records if "could not be written" in r.getMessage()
    ]
    assert "No space left on device" in warning and "previous checkpoint" in warning
    saved = sorted(tracking.artifact_paths(store, result.run_id, checkpoints.DIRECTORY))
    assert saved == [checkpoints.path(1), checkpoints.path(3)]  # the newest two that exist
    first = tracking.read_artifact_bytes(store, result.run_id, checkpoints.path(1))
    assert checkpoints.decode(first).epoch == 1  # intact
