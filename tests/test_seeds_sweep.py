"""A real sweep with replicates: `sweep.seeds=K`, one row per configuration everywhere.

Whole sweeps with their relaunch, report and sweeper: `make test-long` (the pure rules they
rest on are tested in test_replicates.py, test_pruning.py and jax/test_packing.py).
"""

import pytest

import vaelab
from tests.conftest import TINY

pytestmark = pytest.mark.long


def test_a_sweep_with_seeds_is_summarised_per_configuration_and_resumes_whole(tmp_path, run_app):
    sweep = ["--multirun", *TINY, "model.latent_dim=2,4", "sweep.seeds=2"]
    first = run_app("train.py", *sweep)
    assert first.returncode == 0, first.stderr[-3000:]
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    runs = vaelab.runs(store=store)
    assert sorted(runs["params.seed"]) == ["1", "1", "2", "2"]
    table = vaelab.configs(store=store)
    assert sorted(table["params.model.latent_dim"]) == ["2", "4"]
    assert list(table["n"]) == [2, 2] and table["ci_low"].notna().all()
    assert list(table["rank"]) == [1, 2] and table.loc[0, "indistinguishable"]
    for _, row in table.iterrows():
        replicate_ids = runs[runs["params.model.latent_dim"].eq(row["params.model.latent_dim"])]
        assert sorted(row["run_ids"]) == sorted(replicate_ids["run_id"])
        assert row["mean"] == replicate_ids["metrics.val/total"].mean()
    # The sweep's own verdict ranks configurations, and its best is the best configuration's
    # best seed (the run its parent names and a registry would register).
    assert "Configurations by the mean of val/total over their seeds" in first.stdout
    best = table.iloc[0]
    stand_in = runs[runs["run_id"].isin(best["run_ids"])]
    stand_in = stand_in.loc[stand_in["metrics.val/total"].idxmin(), "run_id"]
    assert f"Best configuration (mean over its seeds), its best seed by val/total: {stand_in}" in (
        first.stdout
    )
    again = run_app("train.py", *sweep)
    assert again.returncode == 0 and again.stderr.count("Skipping") == 4
    assert len(vaelab.runs("all", store=store)) == 4
    report = run_app("report.py")
    assert report.returncode == 0, report.stderr[-3000:]
    (html,) = tmp_path.rglob("report.html")
    assert "Configurations ranked by the mean of val/total" in html.read_text()
    assert "n (seeds finished)" in html.read_text()


def test_an_optuna_trial_is_a_configuration_valued_by_its_seeds_mean(tmp_path, run_app):
    import optuna

    result = run_app(
        "train.py", "--multirun", *TINY, "sweep=optuna", "hydra.sweeper.n_trials=2",
        "sweep.seeds=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    store = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    runs = vaelab.runs(store=store)
    storage = f"sqlite:///{tmp_path}/mlruns/optuna.db"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 2 and "seed" not in trials[0].params  # seeds are not searched
    for trial in trials:
        rate = trial.params["train.learning_rate"]
        mine = runs[runs["params.train.learning_rate"].astype(float).eq(rate)]
        assert sorted(mine["params.seed"]) == ["1", "2"]  # both replicates of the trial
        assert trial.value == mine["metrics.val/total"].mean()
