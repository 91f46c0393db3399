"""Real Hydra multiruns of the real pipeline, shrunk: grouping, failures, resume, parallel."""

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, TINY
from vaelab import lifecycle, tracking


def output(result):
    return result.stdout + result.stderr


def sweep_runs(store_uri, role=lifecycle.CHILD):
    store = tracking.open_store(store_uri, "vaelab")
    return tracking.find_runs(store, {lifecycle.SWEEP_ROLE: role})


def test_grid_records_each_run_once_under_one_parent(run_app, store_uri):
    grid = ["train.py", "--multirun", *TINY, "style=functional,custom_loop"]
    result = run_app(*grid)
    assert result.returncode == 0, result.stderr[-3000:]
    (parent,) = sweep_runs(store_uri, "parent")
    children = sweep_runs(store_uri)
    assert parent.status == "FINISHED" and parent.tags["sweep.count.finished"] == "2"
    assert sorted(r.params["style.name"] for r in children) == ["custom_loop", "functional"]
    assert all(r.tags["mlflow.parentRunId"] == parent.run_id for r in children)
    assert all(r.tags["sweep.id"] == parent.tags["sweep.id"] for r in children)
    best = min(children, key=lambda r: r.metrics["val/total"])
    assert parent.tags["sweep.best_run_id"] == best.run_id
    assert "Sweep " in result.stdout and best.run_id in result.stdout

    # A process that died mid-run left an attempt RUNNING (no one could close it).
    store = tracking.open_store(store_uri, "vaelab")
    ghost = tracking.create_run(
        store,
        "ghost",
        {**{k: best.tags[k] for k in ("sweep.id", "config_hash")}, "sweep.role": "child"},
    ).run_id
    # Launching the same sweep again trains nothing (every configuration FINISHED) and marks
    # the dead attempt KILLED; it is superseded by the finished one, so the sweep succeeds.
    again = run_app(*grid)
    assert again.returncode == 0, again.stderr[-3000:]
    assert output(again).count("Skipping: this configuration already FINISHED") == 2
    assert "1 stale RUNNING runs marked KILLED" in output(again)
    (stale,) = [r for r in sweep_runs(store_uri) if r.run_id == ghost]
    assert stale.status == "KILLED" and stale.tags["stale"] == "true"
    assert len(sweep_runs(store_uri, "parent")) == 1
    (parent,) = sweep_runs(store_uri, "parent")
    assert parent.tags["sweep.count.superseded"] == "1" and parent.status == "FINISHED"


def test_a_failing_run_is_recorded_and_the_sweep_goes_on_then_exits_non_zero(run_app, store_uri):
    result = run_app(
        "train.py",
        "--multirun",
        *TINY,
        "loss=notebook_functional",
        "train.learning_rate=0.001,1e12",
    )
    assert result.returncode != 0
    children = sweep_runs(store_uri)
    by_lr = {r.params["train.learning_rate"]: r for r in children}
    assert by_lr["1000000000000.0"].status == "FAILED"
    assert "non-finite loss at epoch 1" in by_lr["1000000000000.0"].tags["error"]
    assert by_lr["0.001"].status == "FINISHED"
    assert "1 run(s) of sweep" in output(
        result
    ) and "train.learning_rate=1000000000000.0" in output(result)
    (parent,) = sweep_runs(store_uri, "parent")
    assert parent.status == "FAILED" and parent.tags["sweep.count.failed"] == "1"


def test_parallel_workers_lose_nothing_in_a_fresh_store_and_an_error_spares_the_others(
    run_app, store_uri
):
    # 2 worker processes, 2 runs, both starting against a store that does not exist yet;
    # one run's loss turns NaN in its worker.
    result = run_app(
        "train.py",
        "--multirun",
        *TINY,
        "train.epochs=2",
        "data.train_limit=128",
        "train.learning_rate=0.001,1e12",
        "loss=notebook_functional",
        "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
    )
    assert result.returncode != 0  # the sweep reports its failed run
    children = sweep_runs(store_uri)
    by_status = sorted((r.status, r.params["train.learning_rate"]) for r in children)
    assert by_status == [("FAILED", "1000000000000.0"), ("FINISHED", "0.001")]
    client = MlflowClient(store_uri)
    for run in children:
        if run.status == "FINISHED":
            for name in ("train/total", "val/kl"):
                assert [m.step for m in client.get_metric_history(run.run_id, name)] == [1, 2]


def test_optuna_preset_runs_the_requested_trials(run_app, store_uri, tmp_path):
    result = run_app("train.py", "--multirun", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=1")
    assert result.returncode == 0, result.stderr[-3000:]
    children = sweep_runs(store_uri)
    assert len(children) == 1 and all(r.status == "FINISHED" for r in children)
    assert "Best trial" in output(result)
    # The study is persistent: asking for 2 trials runs exactly one more.
    more = run_app("train.py", "--multirun", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=2")
    assert more.returncode == 0, more.stderr[-3000:]
    assert "1 of 2 trials done" in output(more)
    # Two completed trials in the study; TPE may propose a configuration twice, which the
    # sweep then reuses instead of training again: one run per distinct configuration.
    import optuna

    (study,) = optuna.get_all_study_summaries(f"sqlite:///{tmp_path}/mlruns/optuna.db")
    trials = optuna.load_study(
        study_name=study.study_name, storage=f"sqlite:///{tmp_path}/mlruns/optuna.db"
    ).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    param = {"style": "style.name"}  # a config group's choice is logged as its name
    configurations = {
        tuple(sorted((param.get(k, k), str(v)) for k, v in t.params.items())) for t in trials
    }
    children = sweep_runs(store_uri)
    assert len(children) == len(configurations)
    for configuration in configurations:
        matching = [r for r in children if all(r.params[k] == v for k, v in configuration)]
        assert len(matching) == 1, configuration


@pytest.mark.slow
def test_a_sweep_runs_through_ray_on_a_local_instance(run_app, store_uri):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    result = run_app(
        "train.py",
        "--multirun",
        *TINY,
        "model.latent_dim=2,3,4,5",
        "hydra/launcher=ray_cluster",
        "+hydra.launcher.ray.init.num_cpus=2",
    )
    assert result.returncode == 0, output(result)[-3000:]
    children = sweep_runs(store_uri)
    assert sorted(r.params["model.latent_dim"] for r in children) == ["2", "3", "4", "5"]
    assert all(r.status == "FINISHED" for r in children)


@pytest.mark.parametrize(
    "launcher, key, value",
    [
        ("slurm", "timeout_min", 60),
        ("parallel", "n_jobs", 2),
        ("ray_cluster", "ray.remote.num_cpus", 1),
    ],
)
def test_launcher_presets_compose(launcher, key, value):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert OmegaConf.select(cfg.hydra.launcher, key) == value


@pytest.mark.parametrize("objective", ["test/total", "val/kl"])
def test_a_sweep_tuned_on_the_test_set_or_the_kl_is_refused_before_any_run(
    run_app, tmp_path, objective
):
    result = run_app("train.py", "--multirun", *TINY, f"objective={objective}", "seed=1,2")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error")]
    assert line.startswith(f"Error: cannot start the sweep: objective='{objective}': ")
    assert "use one of val/total, val/reconstruction" in line
    assert not (tmp_path / "mlruns" / "mlflow.db").exists()  # no parent, no child
