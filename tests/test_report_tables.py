"""The report's logic on hand-made tables: staleness, collapse, columns, ties."""

import math

import pandas as pd

from vaelab.orchestration.report import render, tables
from vaelab.vocab import metrics


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
            "metrics.val/active_units": [16.0, 3.0, 0.0, math.nan],
            "metrics.test/active_units": [0.0, 16.0, 16.0, 0.0],  # reported, never judged by
            "params.model.latent_dim": ["16", "16", "16", "8"],
            "metrics.val/kl": [20.0, 5.0, 0.0, 30.0],
        }
    )
    assert list(tables.active_units_text(runs)) == ["16 / 16", "3 / 16", "0 / 16", "–"]
    assert list(tables.collapse_flags(runs, partial_fraction=0.5)) == [
        "",
        "partial",
        "collapsed",
        "",
    ]


def test_epoch_time_is_the_mean_after_the_first_epoch():
    assert tables.mean_epoch_seconds([(1, 9.0), (2, 1.0), (3, 2.0)]) == 1.5
    assert math.isnan(tables.mean_epoch_seconds([(1, 9.0)]))


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
    group = tables.ComparableGroup("all runs", metrics.LIKELIHOOD, table)
    headers = [h for _, h in tables.display_columns(group, "val/total", ["model.latent_dim"])]
    assert "val −ELBO ≥ −log p(x) (nats)" in headers
    assert "test IW bound ≥ −log p(x) (nats)" in headers
    assert "latent_dim" in headers and len(headers) <= 12


def test_a_packed_runs_share_of_its_groups_epoch_is_never_shown_as_an_epoch_time():
    solo, packed = (
        "epoch time, mean after the 1st (s)",
        tables.EPOCH_TIMES[metrics.EPOCH_SECONDS_PER_MODEL][1],
    )
    times = {
        metrics.EPOCH_SECONDS: {"solo": 2.0},
        metrics.EPOCH_SECONDS_PER_MODEL: {"packed": 0.5},
    }
    table = tables.build_table(
        _runs({"run_id": "solo"}, {"run_id": "packed"}), "val/total", 0.5, 1e9, 0.0, times
    ).set_index("run_id")
    assert table.loc["solo", "epoch_seconds"] == 2.0 and math.isnan(
        table.loc["packed", "epoch_seconds"]
    )
    assert table.loc["packed", "epoch_seconds_per_model"] == 0.5
    group = tables.ComparableGroup("all runs", metrics.CONTINUOUS_ELBO, table.reset_index())
    headers = [h for _, h in tables.display_columns(group, "val/total", [])]
    assert solo in headers and packed in headers and packed.startswith("packed")
    only_packed = tables.ComparableGroup("all runs", metrics.CONTINUOUS_ELBO, table.loc[["packed"]])
    headers = [h for _, h in tables.display_columns(only_packed, "val/total", [])]
    assert solo not in headers and packed in headers


def _runs(*rows: dict) -> pd.DataFrame:
    base = {
        "status": "FINISHED",
        "start_time": pd.Timestamp(0, unit="s", tz="UTC"),
        "params.loss.name": "elbo",
        "params.loss.reconstruction": "bce",
        "params.loss.pixel_reduction": "sum",
        "params.loss.kl_reduction": "sum",
        "params.loss.beta": "1.0",
        "params.model.latent_dim": "2",
    }
    return pd.DataFrame([{**base, **row} for row in rows])


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    return tables.build_table(runs, "val/total", 0.5, stale_after_s=1e9, now=0.0)


def test_k_is_stated_only_for_groups_that_have_an_importance_weighted_estimate():
    notebook = {
        "params.loss.name": "notebook_functional",
        "params.loss.reconstruction": "mse",
        "params.loss.pixel_reduction": "mean",
        "params.loss.kl_reduction": "mean",
        "params.eval.iw_samples": "5",  # logged, but an MSE decoder has no IW estimate
    }
    runs = _runs(
        {"run_id": "e", "params.eval.iw_samples": "5", "metrics.test/iw_bce": 95.0},
        {"run_id": "n", "metrics.val/total": 0.07, **notebook},
    )
    lines = tables.iw_lines(_table(runs))
    assert lines == [
        "The importance-weighted estimate (loss elbo) uses K = 5 samples per digit, on the "
        "same test digits."
    ]
    assert tables.iw_lines(_table(runs.iloc[[1]])) == []
    summary = " ".join(tables.summary_lines("t", _table(runs.iloc[[1]]), [], "val/total"))
    assert "samples" not in summary


def test_pictures_of_a_run_always_name_its_architecture():
    row = pd.Series(
        {
            "run_id": "0123456789abcdef",
            "params.style.name": "subclass",
            "params.model.latent_dim": "16",
            "params.model.intermediate_dim": "64",
            "params.seed": "3",
        }
    )
    expected = "01234567 (style=subclass, latent_dim=16, intermediate_dim=64"
    assert tables.run_description(row, []) == expected + ")"
    assert tables.run_description(row, ["seed", "model.latent_dim"]) == expected + ", seed=3)"
    assert tables.run_label(row, []) == "01234567"  # beside others: only what varies


def test_a_run_without_params_has_a_group_and_a_row_on_the_page():
    # Two losses, so the settings differ and groups get labels; the old run has none.
    mse = {"params.loss.name": "notebook_subclass", "params.loss.reconstruction": "mse"}
    runs = _runs({"run_id": "new", "metrics.val/total": 120.0}, {"run_id": "new2", **mse})
    old = pd.DataFrame(
        {"run_id": ["old"], "status": "FINISHED", "start_time": runs["start_time"][0]}
    )
    runs = pd.concat([runs, old], ignore_index=True)  # its params: NaN, as MLflow's frame has it
    table = _table(runs)
    grouped = tables.groups(table)
    assert sorted(run for g in grouped for run in g.table["run_id"]) == ["new", "new2", "old"]
    views = [render.TableView(g.label, "", g.table[["run_id", "group"]]) for g in grouped]
    report = render.Report("t", [], views, [], tables.failures(table), table, "sqlite://", "")
    assert '<td class="text">old</td>' in render.page(report)
    assert table.set_index("run_id").loc["old", "group"] == "loss ?"


def test_a_pruned_run_shows_its_epoch_and_is_not_counted_as_measured_for_collapse():
    runs = frame(
        run_id=["whole", "cut"],
        status=["FINISHED", "FINISHED"],
        start_time=pd.to_datetime([0, 1], unit="s", utc=True),
        **{
            "params.model.latent_dim": ["2", "2"],
            "params.train.epochs": ["3", "3"],
            "params.loss.name": ["elbo", "elbo"],
            "metrics.val/total": [150.0, 190.0],
            "metrics.val/kl": [5.0, 0.001],  # the pruned run's KL looks collapsed, unmeasured
            "metrics.val/active_units": [2.0, math.nan],
            "tags.pruned_at_epoch": [None, "1"],
        },
    )
    table = tables.build_table(runs, "val/total", 0.5, 90.0, 10.0)
    cut = table.set_index("run_id").loc["cut"]
    assert cut["status"] == "PRUNED" and cut["flag"] == ""
    assert tables.notes(table).tolist()[table.index[table.run_id.eq("cut")][0]] == (
        "pruned: its numbers are epoch 1's of 3"
    )
    lines = tables.summary_lines("sweep s", table, ["model.latent_dim"], "val/total")
    (collapse,) = [line for line in lines if line.startswith("Posterior collapse")]
    assert collapse.startswith("Posterior collapse: 0 of 1 measured runs")
