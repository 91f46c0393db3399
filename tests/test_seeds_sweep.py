"""A real sweep with replicates: `sweep.seeds=K`, one row per configuration everywhere."""

import vaelab
from tests.conftest import TINY


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
    again = run_app("train.py", *sweep)
    assert again.returncode == 0 and again.stderr.count("Skipping") == 4
    assert len(vaelab.runs("all", store=store)) == 4
    report = run_app("report.py")
    assert report.returncode == 0, report.stderr[-3000:]
    (html,) = tmp_path.rglob("report.html")
    assert "Configurations ranked by the mean of val/total" in html.read_text()
    assert "n (seeds finished)" in html.read_text()
