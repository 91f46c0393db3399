"""Configuration statistics on hand-made and simulated run tables: n, mean, interval, ≈ best."""

import math

import numpy as np
import pandas as pd
import pytest

from vaelab.rules import ranking, replicates

# The simulation behind the coverage test: true means and seed noise of the size measured on
# full MNIST (sd 0.4-1.2% of a val/total of about 170 nats).
CONFIGURATIONS = 400
TRUE_SD = 1.5
SIMULATION_SEED = 20261206


def runs(*rows: dict) -> pd.DataFrame:
    base = {
        "status": "FINISHED",
        "start_time": 0,
        "params.loss.name": "elbo",
        "params.model.latent_dim": "2",
        "params.seed": "1",
        "metrics.val/active_units": 2.0,
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def simulated(replicates_per_config: int, rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """A run table of CONFIGURATIONS configurations with known means, and those means."""
    truth = {f"{i}": 160.0 + 20.0 * rng.random() for i in range(CONFIGURATIONS)}
    rows = [
        {
            "run_id": f"c{key}-s{seed}",
            "params.model.intermediate_dim": key,
            "params.seed": str(seed),
            "metrics.val/total": mean + TRUE_SD * rng.standard_normal(),
        }
        for key, mean in truth.items()
        for seed in range(1, replicates_per_config + 1)
    ]
    return runs(*rows), truth


def coverage(table: pd.DataFrame, truth: dict) -> float:
    true_mean = table["params.model.intermediate_dim"].map(truth)
    covered = (table["ci_low"] <= true_mean) & (true_mean <= table["ci_high"])
    return float(covered.mean())


@pytest.mark.parametrize("n", [3, 10])
def test_95_percent_intervals_cover_the_true_means_95_percent_of_the_time(n):
    frame, truth = simulated(n, np.random.default_rng(SIMULATION_SEED + n))
    table = replicates.summarise(ranking.rank(frame, "val/total"), "val/total")
    assert len(table) == CONFIGURATIONS and set(table["n"]) == {n}
    assert 0.93 <= coverage(table, truth) <= 0.97


def test_a_percentile_bootstrap_of_three_seeds_would_under_cover():
    # Why the t interval: the percentile bootstrap's interval of 3 values lies inside their
    # range, which holds the true mean only 1 - 2 * (1/2)^3 = 75% of the time at best.
    rng = np.random.default_rng(SIMULATION_SEED)
    hits = 0
    for _ in range(CONFIGURATIONS):
        values = rng.standard_normal(3)
        low, high = np.percentile(rng.choice(values, (200, 3)).mean(axis=1), [2.5, 97.5])
        hits += low <= 0.0 <= high
    assert hits / CONFIGURATIONS < 0.85


def test_statistics_of_one_configuration_are_the_textbook_ones():
    frame = runs(
        *[
            {"run_id": f"r{s}", "params.seed": str(s), "metrics.val/total": v}
            for s, v in enumerate([170.0, 172.0, 174.0], start=1)
        ]
    )
    row = replicates.summarise(ranking.rank(frame, "val/total"), "val/total").iloc[0]
    assert row["n"] == 3 and row["mean"] == pytest.approx(172.0)
    assert row["sd"] == pytest.approx(2.0) and row["se"] == pytest.approx(2.0 / math.sqrt(3))
    half = 4.302652729911275 * 2.0 / math.sqrt(3)  # t(0.975, 2) from any table
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((172.0 - half, 172.0 + half))
    assert sorted(row["run_ids"]) == ["r1", "r2", "r3"] and row["replicates"] == "3 finished"
    assert replicates.interval_text(row) == f"172.00 ± {half:.2f} (n=3)"


def test_ranking_is_by_mean_and_the_indistinguishable_mark_follows_welch():
    values = {
        "64": [166.8, 167.5, 168.6],  # best mean
        "32": [169.1, 171.0, 174.1],  # worse mean, but noisy: cannot be told apart
        "16": [190.0, 190.5, 191.0],  # clearly worse
    }
    frame = runs(
        *[
            {
                "run_id": f"h{h}-s{s}",
                "params.model.intermediate_dim": h,
                "params.seed": str(s),
                "metrics.val/total": v,
            }
            for h, vs in values.items()
            for s, v in enumerate(vs, start=1)
        ]
    )
    table = replicates.summarise(ranking.rank(frame, "val/total"), "val/total")
    assert list(table["params.model.intermediate_dim"]) == ["64", "32", "16"]
    assert list(table["rank"]) == [1, 2, 3]
    assert list(table["indistinguishable"]) == [True, True, False]


def test_one_seed_has_no_interval_and_no_mark():
    frame = runs(
        {"run_id": "a", "params.model.intermediate_dim": "64", "metrics.val/total": 120.0},
        {"run_id": "b", "params.model.intermediate_dim": "32", "metrics.val/total": 121.0},
    )
    table = replicates.summarise(ranking.rank(frame, "val/total"), "val/total")
    assert list(table["rank"]) == [1, 2] and table["ci_low"].isna().all()
    assert table.loc[1, "indistinguishable"] is pd.NA
    assert replicates.interval_text(table.iloc[1]) == "121.00 (1 seed: no interval)"


def test_missing_failed_pruned_and_collapsed_replicates_are_visible_and_not_averaged():
    frame = runs(
        {"run_id": "ok1", "metrics.val/total": 120.0},
        {"run_id": "ok2", "params.seed": "2", "metrics.val/total": 122.0},
        {"run_id": "bad", "params.seed": "3", "status": "FAILED"},
        {
            "run_id": "cut",
            "params.seed": "4",
            "metrics.val/total": 300.0,
            "tags.pruned_at_epoch": "1",
        },
        {
            "run_id": "flat",
            "params.model.latent_dim": "4",
            "metrics.val/total": 100.0,
            "metrics.val/active_units": 0.0,
        },
    )
    table = replicates.summarise(ranking.rank(frame, "val/total"), "val/total")
    first = table[table["params.model.latent_dim"] == "2"].iloc[0]
    assert first["n"] == 2 and first["mean"] == pytest.approx(121.0)
    assert first["replicates"] == "2 finished, 1 pruned, 1 failed" and first["rank"] == 1
    collapsed = table[table["params.model.latent_dim"] == "4"].iloc[0]
    assert pd.isna(collapsed["rank"]) and collapsed["replicates"] == "1 finished, 1 collapsed"


def test_configurations_are_ranked_within_their_comparable_group_only():
    frame = runs(
        {"run_id": "a", "metrics.val/total": 120.0},
        {"run_id": "b", "metrics.val/total": 0.07, "params.loss.name": "notebook_functional"},
    )
    frame["params.loss.reconstruction"] = ["bce", "mse"]
    table = replicates.summarise(ranking.rank(frame, "val/total"), "val/total")
    assert list(table["rank"]) == [1, 1] and table["group"].nunique() == 2


def test_sweep_seeds_becomes_a_seed_axis_and_its_mistakes_are_refused():
    line = ["--multirun", "model.latent_dim=2,4", "sweep.seeds=3"]
    assert replicates.with_seed_axis(line) == [*line, "seed=1,2,3"]
    assert replicates.with_seed_axis(["sweep.seeds=1"]) == ["sweep.seeds=1"]
    assert replicates.with_seed_axis(["model.latent_dim=2"]) == ["model.latent_dim=2"]
    for wrong, said in [
        (["-m", "sweep.seeds=0"], "whole number >= 1"),
        (["-m", "sweep.seeds=two"], "whole number >= 1"),
        (["sweep.seeds=3"], "add --multirun"),
        (["-m", "sweep.seeds=3", "seed=4,5"], "keep one"),
    ]:
        with pytest.raises(replicates.ConfigError, match=said):
            replicates.with_seed_axis(wrong)


def _multirun_config(*choices: str, task: tuple[str, ...] = ()):
    """The composed config as the sweep callback receives it: the hydra node included, and
    `task` as the command line's sweep overrides (compose() itself refuses sweep values)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", list(choices), return_hydra_config=True)
    with open_dict(config):
        config.hydra.overrides.task = [*choices, *task]
    return config


def test_sweep_seeds_set_in_a_preset_becomes_the_sweeps_seed_axis():
    # sweep=seed_spread sets `sweep.seeds: 5` in its file; only the command line's K used to
    # become an axis, so the preset's 4 configurations trained with seed 1 alone.
    from vaelab.orchestration.sweep import count_jobs, seeds_from_config, sweep_id_for

    config = _multirun_config("sweep=seed_spread")
    before = sweep_id_for(config)
    assert count_jobs(config) == 4
    seeds_from_config(config)
    assert config.hydra.sweeper.params.seed == "1,2,3,4,5"
    assert count_jobs(config) == 20 and sweep_id_for(config) != before
    # Given on the command line the axis is there already (with_seed_axis): nothing changes.
    config = _multirun_config("sweep.seeds=3", task=("model.latent_dim=2,4", "seed=1,2,3"))
    seeds_from_config(config)
    assert "seed" not in (config.hydra.sweeper.params or {}) and count_jobs(config) == 6


def test_a_presets_seeds_beside_a_seed_override_are_refused_in_one_line():
    from vaelab.orchestration.sweep import seeds_from_config
    from vaelab.vocab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sweep.seeds: 5 in a config file and a seed= override"):
        seeds_from_config(_multirun_config("sweep=seed_spread", task=("seed=7,8",)))
