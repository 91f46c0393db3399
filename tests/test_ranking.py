"""Ranking on hand-made run tables: comparable groups, collapse, one tie-break rule."""

import math

import pandas as pd

from vaelab import lifecycle, ranking, tracking


def runs(*rows: dict) -> pd.DataFrame:
    base = {
        "status": "FINISHED",
        "start_time": 0,
        "params.loss.name": "elbo",
        "params.loss.reconstruction": "bce",
        "params.loss.pixel_reduction": "sum",
        "params.loss.kl_reduction": "sum",
        "params.loss.beta": "1.0",
        "metrics.test/active_units": 4.0,
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def test_runs_of_different_losses_are_ranked_apart_and_a_collapsed_run_is_never_first():
    frame = runs(
        {"run_id": "a", "metrics.val/total": 130.0},
        {"run_id": "b", "metrics.val/total": 120.0},
        {
            "run_id": "c",
            "metrics.val/total": 0.07,
            "metrics.test/active_units": 0.0,
            "params.loss.name": "notebook_functional",
            "params.loss.reconstruction": "mse",
            "params.loss.pixel_reduction": "mean",
            "params.loss.kl_reduction": "mean",
        },
        {
            "run_id": "d",
            "metrics.val/total": 0.09,
            "params.loss.name": "notebook_functional",
            "params.loss.reconstruction": "mse",
            "params.loss.pixel_reduction": "mean",
            "params.loss.kl_reduction": "mean",
        },
    )
    ranked = ranking.rank(frame, "val/total", kl_threshold=0.01).set_index("run_id")
    assert ranked.loc["b", "rank"] == 1 and ranked.loc["a", "rank"] == 2
    assert ranked.loc["d", "rank"] == 1  # best of its own group only
    assert pd.isna(ranked.loc["c", "rank"]) and ranked.loc["c", "collapsed"]
    assert set(ranked["group"]) == {"loss elbo", "loss notebook_functional"}
    assert list(ranking.best(ranked.reset_index())["run_id"]) == ["b", "d"]


def test_equal_values_go_to_the_earlier_run_and_name_each_other():
    frame = runs(
        {"run_id": "late", "start_time": 20, "metrics.val/total": 120.0},
        {"run_id": "early", "start_time": 10, "metrics.val/total": 120.0},
        {"run_id": "worse", "start_time": 5, "metrics.val/total": 121.0},
    )
    ranked = ranking.rank(frame, "val/total", 0.01)
    assert list(ranked["run_id"]) == ["early", "late", "worse"]
    assert list(ranked["tied_with"]) == ["late", "early", ""]


def test_a_sweep_summary_and_a_report_name_the_same_best_run():
    records = [
        tracking.RunRecord("late", "FINISHED", params, {"val/total": 120.0}, {}, 20)
        for params in [{"loss.name": "elbo"}]
    ] + [
        tracking.RunRecord("early", "FINISHED", {"loss.name": "elbo"}, {"val/total": 120.0}, {}, 10)
    ]
    summary_best = ranking.best(ranking.rank(lifecycle.records_frame(records), "val/total", 0.01))
    report_frame = pd.DataFrame(
        {
            "run_id": ["late", "early"],
            "status": "FINISHED",
            "start_time": pd.to_datetime([20, 10], unit="ms", utc=True),
            "params.loss.name": "elbo",
            "metrics.val/total": 120.0,
        }
    )
    report_best = ranking.best(ranking.rank(report_frame, "val/total", 0.01))
    assert list(summary_best["run_id"]) == list(report_best["run_id"]) == ["early"]


def test_unfinished_runs_and_runs_without_the_metric_come_last_unranked():
    frame = runs(
        {"run_id": "failed", "status": "FAILED", "metrics.val/total": 1.0},
        {"run_id": "old", "metrics.val/total": math.nan},
        {"run_id": "ok", "metrics.val/total": 130.0},
    )
    ranked = ranking.rank(frame, "val/total", 0.01)
    assert ranked.iloc[0]["run_id"] == "ok" and ranked.iloc[0]["rank"] == 1
    assert ranked["rank"].isna().sum() == 2


def test_older_runs_without_an_active_unit_count_are_collapsed_by_their_kl():
    frame = runs({"run_id": "x", "metrics.test/kl": 0.001}, {"run_id": "y", "metrics.test/kl": 3.0})
    frame["metrics.test/active_units"] = math.nan
    assert list(ranking.is_collapsed(frame, 0.01)) == [True, False]
