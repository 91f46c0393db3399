"""`hydra/launcher=packed` from the command line: the same sweep lifecycle as any launcher."""

import os
import signal
import time

import pytest

from tests.conftest import TINY
from vaelab.edges import tracking
from vaelab.edges.config import Submission, to_run_config
from vaelab.engines.packed.engine import PackedEngine
from vaelab.orchestration.train import train_batch
from vaelab.rules import figures
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.parent import start_sweep

PACKED = "hydra/launcher=packed"


def test_a_bad_configuration_refuses_the_whole_sweep_before_anything_trains(
    run_app, store_uri, monkeypatch
):
    # Each job is composed once, by the launcher: the sweeper's own pass would repeat it.
    composed = count_compositions(monkeypatch)
    result = run_app("train.py", "--multirun", *TINY, "model.latent_dim=2,0,-1", PACKED)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert sorted(composed) == [f"model.latent_dim={z}" for z in ("-1", "0", "2")]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert line.startswith("Error: the packed launcher refused the sweep; nothing trained: job")
    assert "model.latent_dim=0" in result.stderr and "model.latent_dim=-1" in result.stderr
    store = tracking.open_store(store_uri, "vaelab")
    assert tracking.find_runs(store, {"sweep.role": "child"}) == []
    (parent,) = tracking.find_runs(store, {"sweep.role": "parent"})
    assert parent.status == "FAILED" and "model.latent_dim=0" in parent.tags["error"]


def count_compositions(monkeypatch) -> list[str]:
    """Each job composed from now on, by its override of model.latent_dim or train.epochs."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    real, composed = ConfigLoaderImpl.load_sweep_config, []

    def load_sweep_config(self, master_config, sweep_overrides):
        composed.extend(o for o in sweep_overrides if o.startswith(("model.latent", "train.ep")))
        return real(self, master_config, sweep_overrides)

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", load_sweep_config)
    return composed


def test_a_key_that_does_not_exist_refuses_the_sweep_in_one_line(run_app, store_uri):
    result = run_app("train.py", "--multirun", *TINY, "model.latnt_dim=2,3", PACKED)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "latnt_dim" in result.stderr
    store = tracking.open_store(store_uri, "vaelab")
    assert tracking.find_runs(store, {"sweep.role": "child"}) == []


def test_another_backend_is_one_line_naming_the_fix(run_app, store_uri, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    result = run_app("train.py", "--multirun", *TINY, "seed=1,2", PACKED)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert "run with KERAS_BACKEND=jax (or unset it)" in line
    (parent,) = tracking.find_runs(
        tracking.open_store(store_uri, "vaelab"), {"sweep.role": "parent"}
    )
    assert parent.status == "FAILED" and "KERAS_BACKEND=tensorflow" in parent.tags["error"]


def test_sigterm_marks_every_unfinished_run_of_the_group_killed(smoke_cfg, store_uri, monkeypatch):
    real, sent = tracking.Run.log, []

    def log(self, metrics=None, step=0, **kwargs):  # one real SIGTERM, as epoch 2 is logged
        real(self, metrics, step, **kwargs)
        if metrics and "train/total" in metrics and step == 2 and not sent:
            sent.append(self.run_id)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)

    monkeypatch.setattr(tracking.Run, "log", log)
    jobs = [
        Submission(to_run_config(smoke_cfg(*TINY, "train.epochs=4", f"seed={s}")), [])
        for s in (1, 2, 3)
    ]
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "p3", {}, total=3, objective="val/total")
    with pytest.raises(KeyboardInterrupt):
        train_batch(jobs, context, PackedEngine(), 0.5)
    runs = children_of(store, "p3")
    assert len(runs) == 3 and {r.status for r in runs} == {"KILLED"}
    assert all("received signal SIGTERM" in r.tags["error"] for r in runs)
    for run in runs:  # the epochs that finished before the signal are kept
        assert [s for s, _ in tracking.metric_history(store, run.run_id, "val/total")] in (
            [1],
            [1, 2],
        )


def three_jobs(smoke_cfg):
    return [Submission(to_run_config(smoke_cfg(*TINY, f"seed={s}")), []) for s in (1, 2, 3)]


def test_sigterm_while_runs_are_created_leaves_none_running(smoke_cfg, store_uri, monkeypatch):
    real, made = tracking.create_run, []

    def create_run(*args, **kwargs):  # a real SIGTERM as the store makes the second run
        run = real(*args, **kwargs)
        made.append(run.run_id)
        if len(made) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return run

    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "p4", {}, total=3, objective="val/total")
    monkeypatch.setattr(tracking, "create_run", create_run)
    with pytest.raises(KeyboardInterrupt):
        train_batch(three_jobs(smoke_cfg), context, PackedEngine(), 0.5)
    runs = children_of(store, "p4")
    assert sorted(r.run_id for r in runs) == sorted(made)  # the third was never made
    assert {r.status for r in runs} == {"KILLED"}


def test_sigterm_while_results_are_recorded_leaves_none_running(smoke_cfg, store_uri, monkeypatch):
    real, drawn = figures.picture_figures, []

    def picture_figures(*args, **kwargs):  # a real SIGTERM as the second run's are drawn
        drawn.append(1)
        if len(drawn) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(figures, "picture_figures", picture_figures)
    store = tracking.open_store(store_uri, "vaelab")
    context = start_sweep(store, "p5", {}, total=3, objective="val/total")
    with pytest.raises(KeyboardInterrupt):
        train_batch(three_jobs(smoke_cfg), context, PackedEngine(), 0.5)
    runs = children_of(store, "p5")
    statuses = sorted(r.status for r in runs)
    # The second and third were not done: KILLED. The first had all it needed queued: it
    # ended FINISHED with everything, or KILLED if the signal came before its writes began.
    assert len(runs) == 3 and statuses.count("KILLED") >= 2 and "RUNNING" not in statuses
    for run in runs:
        plots = store.client.list_artifacts(run.run_id, "plots")
        if run.status == "FINISHED":
            assert len(plots) == 4
        else:
            assert "received signal SIGTERM" in run.tags["error"]


@pytest.mark.long
def test_a_packed_sweep_prunes_against_the_whole_group_and_drops_the_pruned_from_its_program(
    run_app, store_uri
):
    # Six configurations (learning rates) report epoch 1 together and are judged there at once
    # (successive halving, reduction factor 3): exactly the best ceil(6 / 3) = 2 go on, by
    # their value at the rung; the pruned leave the program: the next rounds train the rest.
    rates = "0.0003,0.0005,0.0007,0.001,0.002,0.003"
    result = run_app(
        "train.py", "--multirun", *TINY, "train.epochs=3", f"train.learning_rate={rates}",
        PACKED, "sweep.pruner=successive_halving", "sweep.pruner_reduction_factor=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    store = tracking.open_store(store_uri, "vaelab")
    runs = sorted(
        tracking.find_runs(store, {"sweep.role": "child"}),
        key=lambda r: float(r.params["train.learning_rate"]),
    )
    pruned = [r for r in runs if "pruned_at_epoch" in r.tags]
    kept = [r for r in runs if r not in pruned]
    assert {r.tags["pruned_at_epoch"] for r in pruned} == {"1"} and len(kept) == 2
    first = {r.run_id: tracking.metric_history(store, r.run_id, "val/total")[0][1] for r in runs}
    assert {r.run_id for r in kept} == set(sorted(first, key=first.get)[:2])  # the best two
    assert all(len(tracking.metric_history(store, r.run_id, "val/total")) == 3 for r in kept)
    rounds = [line for line in result.stderr.splitlines() if "packed round:" in line]
    trained = [line.split("packed round: ")[1].split()[0] for line in rounds]
    assert trained == ["6", str(len(kept)), str(len(kept))]
