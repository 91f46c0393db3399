"""The report's logic on hand-made tables: staleness, collapse, columns, effects, ties."""

import math

import pandas as pd

from vaelab import metrics
from vaelab.report import tables


def frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns)


def test_a_running_run_with_an_old_heartbeat_is_stale():
    runs = frame(
        status=["RUNNING", "RUNNING", "FINISHED"],
        start_time=pd.to_datetime([0, 0, 0], unit="s", utc=True),
        **{"tags.heartbeat_at": ["990", "100", "100"]},
    )
    assert list(tables.status_with_staleness(runs, 60, now=1000.0)) == [
        "RUNNING",
        "STALE",
        "FINISHED",
    ]


def test_active_units_read_as_a_fraction_and_partial_collapse_is_flagged():
    runs = frame(
        **{
            "metrics.test/active_units": [16.0, 3.0, 0.0, math.nan],
            "params.model.latent_dim": ["16", "16", "16", "8"],
            "metrics.test/kl": [20.0, 5.0, 0.0, 30.0],
        }
    )
    assert list(tables.active_units_text(runs)) == ["16 / 16", "3 / 16", "0 / 16", "–"]
    assert list(tables.collapse_flags(runs, 0.01, partial_fraction=0.5)) == [
        "",
        "partial",
        "collapsed",
        "",
    ]


def test_epoch_time_is_the_mean_after_the_first_epoch():
    assert tables.mean_epoch_seconds([(1, 9.0), (2, 1.0), (3, 2.0)]) == 1.5
    assert math.isnan(tables.mean_epoch_seconds([(1, 9.0)]))


def test_effects_average_the_other_settings_per_style():
    table = frame(
        rank=pd.array([1, 2, 3, pd.NA], dtype="Int64"),
        **{
            "params.model.latent_dim": ["2", "2", "16", "16"],
            "params.style.name": ["functional", "functional", "functional", "functional"],
            "metrics.val/total": [170.0, 180.0, 130.0, 1.0],
        },
    )
    effect = tables.effects(table, "model.latent_dim", "val/total")
    assert effect.loc[2.0, "functional"] == 175.0 and effect.loc[16.0, "functional"] == 130.0


def test_identical_results_show_one_reconstruction_and_share_a_curve():
    table = frame(
        run_id=["f", "s", "c"],
        group="all runs",
        rank=pd.array([1, 2, 3], dtype="Int64"),
        **{"metrics.val/total": [120.0, 120.0, 121.0], "metrics.test/total": [119.0, 119.0, 120.0]},
    )
    assert list(tables.distinct_best(table, "val/total", 3)["run_id"]) == ["f", "c"]
    curves = {"f": [(1, 2.0), (2, 1.0)], "s": [(1, 2.0), (2, 1.0)], "c": [(1, 3.0)]}
    assert tables.identical_runs(curves) == [["f", "s"], ["c"]]


def test_the_table_shows_units_and_few_enough_columns():
    table = frame(
        run_id=["a"],
        kind=metrics.LIKELIHOOD,
        **{"metrics.test/nll_bound_iw": [90.0]},
    )
    group = tables.Group("all runs", metrics.LIKELIHOOD, table)
    headers = [h for _, h in tables.display_columns(group, "val/total", ["model.latent_dim"])]
    assert "val −ELBO ≥ −log p(x) (nats)" in headers
    assert "test IW bound ≥ −log p(x) (nats)" in headers
    assert "latent_dim" in headers and len(headers) <= 12
