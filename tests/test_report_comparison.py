"""The comparison beyond the ranking, on hand-made frames: a hyperparameter that changes no
number, effects with intervals, importance, the Pareto front, the best epoch; then the
same read back from a real store by the report."""

import itertools
import math

import pandas as pd
import pytest

from tests.conftest import compose_config, isolated
from vaelab.edges import tracking
from vaelab.orchestration.report import configurations, make_report, render, tables
from vaelab.rules import comparison, importance, replicates
from vaelab.rules.lifecycle.children import child_tags
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.vocab import metrics

STYLES = ("functional", "subclass", "custom_loop")
ELBO = {
    "params.loss.name": "elbo",
    "params.loss.reconstruction": "bce",
    "params.loss.pixel_reduction": "sum",
    "params.loss.kl_reduction": "sum",
    "params.loss.beta": "1.0",
}


def _runs(styles=STYLES, latent=(2, 16), hidden=(32, 64), seeds=(1,), value=None) -> pd.DataFrame:
    """One run per style x latent_dim x intermediate_dim x seed, as MLflow's frame has them;
    the styles give identical numbers unless `value` says otherwise."""
    value = value or (lambda style, z, h, seed: 150.0 - z - h / 32 + 0.5 * seed)
    rows = []
    for i, (style, z, h, seed) in enumerate(itertools.product(styles, latent, hidden, seeds)):
        total = value(style, z, h, seed)
        rows.append(
            {
                "run_id": f"{i:02d}" + "0" * 30,
                "status": "FINISHED",
                "start_time": pd.Timestamp(i, unit="s", tz="UTC"),
                **ELBO,
                "params.style.name": style,
                "params.model.latent_dim": str(z),
                "params.model.intermediate_dim": str(h),
                "params.seed": str(seed),
                "metrics.val/total": total,
                "metrics.val/kl": z / 2,
                "metrics.val/reconstruction": total - z / 2,
                "metrics.test/total": total + 1,
                "metrics.val/active_units": float(z),
                "metrics.time/epoch_seconds": 1.0 + i,  # styles differ in speed: not a number
            }
        )
    return pd.DataFrame(rows)


def _table(runs: pd.DataFrame) -> pd.DataFrame:
    return tables.build_table(runs, "val/total", 0.5, stale_after_s=1e9, now=0.0)


def test_a_style_that_changes_no_number_is_said_once_and_ranked_once_not_as_ties():
    table = _table(_runs())
    (effect,) = comparison.collapse(table, "val/total").found
    assert effect.sentence("val/total") == (
        "style changes no number: its 3 values (custom_loop, functional, subclass) give "
        "identical val/total (and every other val/ and test/ number) in all 4 configurations "
        "that ran more than one of them; each configuration is ranked once, not as 3 ties."
    )
    folded = comparison.collapse(table, "val/total")
    assert len(folded.runs) == 4 and "params.style.name" not in folded.runs
    # Without folding, the summary ranks 12 configurations, three by three equal.
    assert len(replicates.summarise(table, "val/total")) == 12
    ranked = replicates.summarise(folded.runs, "val/total")
    assert list(ranked["rank"]) == [1, 2, 3, 4] and ranked["mean"].is_unique
    # Each run kept stands for the two others of its configuration, which say so.
    notes = folded.notes()
    kept = folded.runs["run_id"].iloc[0]
    assert notes[kept].startswith("stands for ") and notes[kept].count(",") == 1
    twin = next(run for run, said in notes.items() if said.startswith("same numbers as"))
    assert notes[twin] == f"same numbers as {_kept_for(folded, twin)[:8]} (style changes no number)"


def _kept_for(folded: comparison.Collapsed, run_id: str) -> str:
    (kept,) = [k for k, runs in folded.stands_for.items() if run_id in runs]
    return kept


def test_a_hyperparameter_is_said_to_change_nothing_only_where_that_was_measured():
    # One number apart, in one run: style matters (or a style has a bug), nothing is folded.
    runs = _runs()
    runs.loc[runs.index[-1], "metrics.test/total"] += 1e-3
    assert comparison.collapse(_table(runs), "val/total").found == []
    # The last bit, as two processes may give: still the same number.
    runs = _runs()
    runs.loc[runs.index[-1], "metrics.val/total"] *= 1 + 1e-12
    assert [e.param for e in comparison.collapse(_table(runs), "val/total").found] == ["style.name"]
    # Never two styles on the same configuration (a random search): nothing is claimed.
    lone = _runs(styles=STYLES[:1]).assign(**{"params.style.name": [*STYLES, STYLES[0]]})
    assert comparison.collapse(_table(lone), "val/total").found == []
    # Seeds are replicates, not a hyperparameter: equal across styles, differing across seeds.
    seeded = _table(_runs(seeds=(1, 2)))
    folded = comparison.collapse(seeded, "val/total")
    assert [e.param for e in folded.found] == ["style.name"] and len(folded.runs) == 8
    assert list(replicates.summarise(folded.runs, "val/total")["n"]) == [2, 2, 2, 2]


def test_a_run_that_did_not_finish_is_never_folded_away():
    # One style's run FAILED where the others agree: it was folded into the finished run and
    # vanished from the tables, with a note claiming "same numbers as".
    runs = _runs()
    failed = runs.index[runs["params.style.name"].eq("subclass")][0]
    runs.loc[failed, "status"] = "FAILED"
    runs.loc[failed, [c for c in runs if c.startswith("metrics.")]] = float("nan")
    folded = comparison.collapse(_table(runs), "val/total")
    assert [e.param for e in folded.found] == ["style.name"]
    assert runs.loc[failed, "run_id"] in set(folded.runs["run_id"])  # still a row of its own
    assert runs.loc[failed, "run_id"] not in folded.notes()
    assert len(folded.runs) == 4 + 1  # the 4 configurations, and the failed run


def test_the_report_shows_folded_configurations_and_says_why_in_one_line():
    table = _table(_runs())
    (item,) = [configurations.of_group(group, "val/total") for group in tables.groups(table)]
    runs = render.TableView("runs", "", item.group.table)
    configs, shown = configurations.table_views(
        item, "val/total", tables.varying_params(table), runs
    )
    assert shown is runs  # 4 configurations: too few for importance, no table of it
    assert list(configs.rows.columns[:3]) == ["rank", "intermediate_dim", "latent_dim"]
    assert len(configs.rows) == 4 and "style" not in configs.rows
    lines = configurations.lines([item], "val/total")
    assert lines[0].startswith("style changes no number: its 3 values")
    assert lines[1] == (
        "Hyperparameter importance: too few configurations to estimate it: 4 finished and 2 "
        "hyperparameters vary; fANOVA needs at least 8 configurations and 2 varying "
        "hyperparameters."
    )


def test_effects_average_the_configurations_means_with_a_t_interval():
    configs = pd.DataFrame(
        {
            "params.model.latent_dim": ["2", "2", "16", "32"],
            "mean": [170.0, 180.0, 130.0, 126.0],
            "n": [1, 1, 3, 1],
            "ci_low": [math.nan, math.nan, 128.0, math.nan],
            "ci_high": [math.nan, math.nan, 132.0, math.nan],
            "rank": pd.array([3, 4, 2, 1], dtype="Int64"),
        }
    )
    effect = comparison.effects(configs, "model.latent_dim")
    assert list(effect.index) == [2, 16, 32]  # numbers, in order
    low, high = replicates.interval([170.0, 180.0])
    assert effect.loc[2].tolist() == [175.0, low, high, 2, 2]
    assert round(high - 175.0, 2) == 63.53  # t(0.975, 1) = 12.71 times sd 7.07 over √2
    assert effect.loc[16].tolist() == [130.0, 128.0, 132.0, 1, 3]  # its own seeds' interval
    assert math.isnan(effect.loc[32, "low"])  # one configuration, one seed: no interval


def _grid() -> pd.DataFrame:
    """A 2 x 2 x 2 grid's configurations: latent_dim matters most, epochs a little, the hidden
    width almost nothing."""
    rows = []
    for z, h, e in itertools.product((2, 16), (32, 64), (1, 3)):
        mean = 170.0 - 40.0 * (z == 16) - 5.0 * (e == 3) - 1.0 * (h == 64)
        rows.append(
            {
                "params.model.latent_dim": str(z),
                "params.model.intermediate_dim": str(h),
                "params.train.epochs": str(e),
                "mean": mean,
            }
        )
    return pd.DataFrame(rows)


def test_importance_ranks_what_matters_and_is_the_same_every_time():
    params = ["model.latent_dim", "model.intermediate_dim", "train.epochs"]
    found = importance.importances(_grid(), params)
    assert list(found) == ["model.latent_dim", "train.epochs", "model.intermediate_dim"]
    assert sum(found.values()) == pytest.approx(1.0)
    assert found["model.latent_dim"] > 0.9  # 40² against 5² and 1²: ~98% of the variance
    assert importance.importances(_grid(), params) == found  # the forest's seed is fixed
    assert importance.too_few(8, params) is None
    assert importance.too_few(7, params).startswith("too few configurations to estimate it")
    assert "1 hyperparameter varies" in importance.too_few(12, params[:1])


def test_the_pareto_front_keeps_what_nothing_beats_on_both():
    x = [1.0, 2.0, 3.0, 2.0, math.nan, 1.0]
    y = [3.0, 2.0, 1.0, 3.0, 0.0, 3.0]
    # (2, 3) is beaten by (1, 3) and by (2, 2); NaN is never on the front; equal points stay.
    assert comparison.pareto_front(x, y) == [True, True, True, False, False, True]
    assert comparison.pareto_front([], []) == []


def test_the_best_epoch_is_named_only_where_it_is_not_the_last():
    histories = {
        "late": [(1, 5.0), (2, 4.0), (3, 4.5)],
        "last": [(1, 5.0), (2, 4.0)],
        "flat": [(1, 4.0), (2, 4.0), (3, 4.5)],  # equal values: the earlier epoch
        "nan": [(1, math.nan)],
    }
    found = comparison.best_epochs(histories)
    assert found == {"late": (2, 4.0, 3), "flat": (1, 4.0, 3)}
    assert tables.best_epoch_text(found["late"]) == "2 of 3: 4.00"
    assert tables.best_epoch_text(None) == ""


def _store_runs(store, runs: pd.DataFrame) -> None:
    """The frame's runs written to a real store as a sweep's children, with 3 epochs each."""
    context = start_sweep(store, "grid", {}, total=len(runs), objective="val/total")
    for _, row in runs.iterrows():
        params = {k.removeprefix("params."): v for k, v in row.items() if k.startswith("params.")}
        tags = child_tags(context, row["run_id"])
        run = tracking.create_run(store, row["run_id"][:8], tags, params, context.parent_run_id)
        final = {k.removeprefix("metrics."): v for k, v in row.items() if k.startswith("metrics.")}
        best_at_two = row["params.model.intermediate_dim"] == "64"
        for epoch, value in {1: 10.0, 2: -0.5 if best_at_two else 3.0}.items():
            run.log({"val/total": final["val/total"] + value}, step=epoch)
        run.log(final, step=3)
        run.end("FINISHED")


def test_a_grids_report_folds_the_styles_and_estimates_importance(tmp_path):
    """2 x 2 x 2 configurations, each trained by 2 bit-identical styles, in a real store."""
    runs = _runs(styles=STYLES[:2], seeds=(1,), hidden=(32, 64)).assign(
        **{"params.train.epochs": "3"}
    )
    runs = pd.concat([runs, runs.assign(**{"params.train.epochs": "1"})], ignore_index=True)
    runs["run_id"] = [f"{i:02d}" + "a" * 30 for i in range(len(runs))]
    runs["metrics.val/total"] += runs["params.train.epochs"].eq("1") * 5.0
    cfg = compose_config(*isolated(tmp_path))
    _store_runs(tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment), runs)
    report = compose_config(*isolated(tmp_path), f"out_dir={tmp_path}/r", name="report")
    paths = make_report(report)
    text = paths["md"].read_text()
    assert "- style changes no number: its 2 values (functional, subclass) give identical" in text
    assert "in all 8 configurations that ran more than one of them" in text
    configs = text.split("## Configurations ranked by the mean of val/total")[1]
    assert configs.split("##")[0].count("| 1 seed: no interval") == 0
    assert "(1 seed: no interval)" in configs and "| 8 |" in configs.split("##")[0]
    importance_table = text.split("## Hyperparameter importance")[1].split("##")[0]
    assert "| latent_dim | 0.9" in importance_table  # the largest effect, first
    assert "best epoch of val/total where not the last: its value" in text
    assert f"2 of 3: {runs['metrics.val/total'].min() - 0.5:.2f}" in text
    names = sorted(p.name for p in paths["md"].parent.glob("*.png"))
    assert names == [
        "effects_1.png",
        "learning_curves_1.png",
        "parallel_coordinates_1.png",
        "rate_distortion.png",
    ]
    assert metrics.label("val/total", metrics.CONTINUOUS_ELBO) in text
