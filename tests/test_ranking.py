"""Ranking on hand-made run tables: comparable groups, collapse, one tie-break rule."""

import math

import pandas as pd

from vaelab.edges import tracking
from vaelab.rules import ranking
from vaelab.rules.lifecycle.attempts import current_attempt_ids, current_attempts, records_frame
from vaelab.vocab.tags import CONFIG_HASH


def runs(*rows: dict) -> pd.DataFrame:
    base = {
        "status": "FINISHED",
        "start_time": 0,
        "params.loss.name": "elbo",
        "params.loss.reconstruction": "bce",
        "params.loss.pixel_reduction": "sum",
        "params.loss.kl_reduction": "sum",
        "params.loss.beta": "1.0",
        "metrics.val/active_units": 4.0,
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def test_runs_of_different_losses_are_ranked_apart_and_a_collapsed_run_is_never_first():
    frame = runs(
        {"run_id": "a", "metrics.val/total": 130.0},
        {"run_id": "b", "metrics.val/total": 120.0},
        {
            "run_id": "c",
            "metrics.val/total": 0.07,
            "metrics.val/active_units": 0.0,
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
    ranked = ranking.rank(frame, "val/total").set_index("run_id")
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
    ranked = ranking.rank(frame, "val/total")
    assert list(ranked["run_id"]) == ["early", "late", "worse"]
    assert list(ranked["tied_with"]) == ["late", "early", ""]


def test_a_sweep_summary_and_a_report_name_the_same_best_run():
    records = [
        tracking.RunRecord("late", "FINISHED", params, {"val/total": 120.0}, {}, 20)
        for params in [{"loss.name": "elbo"}]
    ] + [
        tracking.RunRecord("early", "FINISHED", {"loss.name": "elbo"}, {"val/total": 120.0}, {}, 10)
    ]
    summary_best = ranking.best(ranking.rank(records_frame(records), "val/total"))
    report_frame = pd.DataFrame(
        {
            "run_id": ["late", "early"],
            "status": "FINISHED",
            "start_time": pd.to_datetime([20, 10], unit="ms", utc=True),
            "params.loss.name": "elbo",
            "metrics.val/total": 120.0,
        }
    )
    report_best = ranking.best(ranking.rank(report_frame, "val/total"))
    assert list(summary_best["run_id"]) == list(report_best["run_id"]) == ["early"]


def test_unfinished_runs_and_runs_without_the_metric_come_last_unranked():
    frame = runs(
        {"run_id": "failed", "status": "FAILED", "metrics.val/total": 1.0},
        {"run_id": "old", "metrics.val/total": math.nan},
        {"run_id": "ok", "metrics.val/total": 130.0},
    )
    ranked = ranking.rank(frame, "val/total")
    assert ranked.iloc[0]["run_id"] == "ok" and ranked.iloc[0]["rank"] == 1
    assert ranked["rank"].isna().sum() == 2


def test_older_runs_without_an_active_unit_count_are_collapsed_by_their_validation_kl():
    frame = runs({"run_id": "x", "metrics.val/kl": 0.001}, {"run_id": "y", "metrics.val/kl": 3.0})
    frame["metrics.val/active_units"] = math.nan
    assert list(ranking.is_collapsed(frame)) == [True, False]


def test_collapse_is_judged_on_validation_digits_never_on_test_digits():
    # Test numbers that say "collapsed" (or not) change nothing: only validation decides.
    frame = runs(
        {"run_id": "val_collapsed", "metrics.val/active_units": 0.0},
        {"run_id": "test_collapsed", "metrics.test/active_units": 0.0, "metrics.test/kl": 0.0},
        {"run_id": "old", "metrics.val/active_units": math.nan, "metrics.test/kl": 0.0},
    )
    frame["metrics.val/total"] = [100.0, 110.0, 120.0]
    frame.loc[2, "metrics.val/kl"] = 5.0
    assert list(ranking.is_collapsed(frame)) == [True, False, False]
    ranked = ranking.rank(frame, "val/total").set_index("run_id")
    assert list(ranked.loc[["test_collapsed", "old"], "rank"]) == [1, 2]
    assert pd.isna(ranked.loc["val_collapsed", "rank"])


def test_the_sweeper_gets_the_value_ranking_uses():
    # A collapsed run has the lowest val/total: the sweeper must never see it as the minimum.
    collapsed = {"val/total": 50.0, "val/active_units": 0.0, "val/kl": 0.0}
    assert ranking.sweeper_value(collapsed, "val/total") == math.inf
    assert (
        ranking.sweeper_value({"val/total": 120.0, "val/active_units": 3.0}, "val/total") == 120.0
    )
    assert ranking.sweeper_value({"val/total": math.nan, "val/active_units": 3.0}, "val/total") == (
        math.inf
    )
    assert ranking.sweeper_value({}, "val/total") == math.inf  # failed before any number


def test_continuous_and_binarised_pixels_and_other_splits_are_ranked_apart():
    # The same loss preset; only the data differ. On intensities the elbo is a training loss,
    # on binary pixels a bound on -log p(x): ~40 nats apart, never one ranking.
    data = {"params.data.binarize_seed": "0", "params.data.split_seed": "1"}
    frame = runs(
        {"run_id": "none", "params.data.binarize": "none", "metrics.val/total": 100.0, **data},
        {"run_id": "dyn", "params.data.binarize": "dynamic", "metrics.val/total": 90.0, **data},
        {"run_id": "dyn2", "params.data.binarize": "dynamic", "metrics.val/total": 95.0, **data},
        {
            "run_id": "split2",
            "params.data.binarize": "dynamic",
            "metrics.val/total": 80.0,
            **{**data, "params.data.split_seed": "2"},
        },
    )
    ranked = ranking.rank(frame, "val/total").set_index("run_id")
    assert ranked["group"].nunique() == 3
    assert ranked.loc["none", "group"] != ranked.loc["dyn", "group"]
    assert ranked.loc["dyn", "group"] == ranked.loc["dyn2", "group"]
    assert "data.binarize=none" in ranked.loc["none", "group"]
    assert list(ranked.loc[["none", "dyn", "dyn2", "split2"], "rank"]) == [1, 1, 2, 1]


def test_a_run_without_a_setting_keeps_a_group_of_its_own():
    # An older run logged neither the loss preset nor its weights; pandas 3 keeps NaN through
    # astype(str), and a NaN group would drop the run from every groupby.
    frame = runs(
        {"run_id": "new", "metrics.val/total": 120.0},
        {"run_id": "new2", "metrics.val/total": 121.0},
        {"run_id": "old", "metrics.val/total": 130.0},
    )
    frame.loc[frame["run_id"].eq("old"), ["params.loss.name", "params.loss.beta"]] = None
    frame = frame.astype({"params.loss.name": "str", "params.loss.beta": "str"})
    assert frame["params.loss.name"].isna().sum() == 1  # as MLflow's frame has it
    ranked = ranking.rank(frame, "val/total").set_index("run_id")
    assert ranked["group"].notna().all()
    assert ranked.loc["old", "group"] == f"loss {ranking.UNKNOWN}"
    assert ranked.loc["old", "rank"] == 1  # alone in its group: nothing to compare it with
    assert list(ranked.loc[["new", "new2"], "rank"]) == [1, 2]
    assert len(ranked.groupby("group")) == 2


def test_current_attempts_are_the_same_for_run_records_and_a_runs_frame():
    # A configuration killed then redone, one trained again with force=true, one that only
    # failed: the sweep's summary (records) and the report (a frame) keep the same runs.
    def record(run_id: str, status: str, config: str, start: int) -> tracking.RunRecord:
        return tracking.RunRecord(run_id, status, {}, {}, {CONFIG_HASH: config}, start_time=start)

    records = [
        record("killed", "KILLED", "a", 1),
        record("redone", "FINISHED", "a", 2),
        record("first", "FINISHED", "b", 3),
        record("forced", "FINISHED", "b", 4),
        record("failed", "FAILED", "c", 5),
        record("failed_again", "FAILED", "c", 6),
    ]
    kept = ["redone", "first", "failed_again"]
    assert [r.run_id for r in current_attempts(records)] == kept
    frame = records_frame(records).iloc[::-1]  # a report's frame is newest first
    frame["start_time"] = pd.to_datetime(frame["start_time"], unit="ms", utc=True)
    assert current_attempt_ids(frame) == kept
