"""`hydra/launcher=packed` from the command line: the same sweep lifecycle as any launcher."""

import os
import signal
import time

import pytest

from tests.conftest import TINY
from vaelab import lifecycle, tracking
from vaelab.config import to_run_config
from vaelab.packed_run import train_packed
from vaelab.packing import Job

PACKED = "hydra/launcher=packed"


def test_a_bad_configuration_refuses_the_whole_sweep_before_anything_trains(run_app, store_uri):
    result = run_app("train.py", "--multirun", *TINY, "model.latent_dim=2,0,-1", PACKED)
    assert result.returncode == 1
    assert "refused the sweep; nothing trained" in result.stderr
    assert "model.latent_dim=0" in result.stderr and "model.latent_dim=-1" in result.stderr
    store = tracking.open_store(store_uri, "vaelab")
    assert tracking.find_runs(store, {"sweep.role": "child"}) == []
    (parent,) = tracking.find_runs(store, {"sweep.role": "parent"})
    assert parent.status == "FAILED" and "model.latent_dim=0" in parent.tags["error"]


def test_sigterm_marks_every_unfinished_run_of_the_group_killed(smoke_cfg, store_uri, monkeypatch):
    real = tracking.Run.log

    def log(self, metrics=None, step=0, **kwargs):  # a real SIGTERM after epoch 2
        real(self, metrics, step, **kwargs)
        if metrics and "train/total" in metrics and step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)

    monkeypatch.setattr(tracking.Run, "log", log)
    jobs = [
        Job(to_run_config(smoke_cfg(*TINY, "train.epochs=4", f"seed={s}")), []) for s in (1, 2, 3)
    ]
    store = tracking.open_store(store_uri, "vaelab")
    context = lifecycle.start(store, "p3", {}, total=3, objective="val/total")
    with pytest.raises(KeyboardInterrupt):
        train_packed(jobs, context, memory_fraction=0.5)
    runs = lifecycle.children(store, "p3")
    assert len(runs) == 3 and {r.status for r in runs} == {"KILLED"}
    assert all("received signal SIGTERM" in r.tags["error"] for r in runs)
    for run in runs:  # the epochs that finished before the signal are kept
        assert [s for s, _ in tracking.metric_history(store, run.run_id, "val/total")] in (
            [1],
            [1, 2],
        )
