"""The sweep's own summary folds a hyperparameter that changes no number as the report does.

The styles are bit-identical by design: a sweep over them is a fidelity check, said in one
line (the report's sentence), its runs listed and ranked once, never as ties, and its best
the run that stands for its identical twins (the one the ranking puts first). On hand-made
frames first, then through `finish_sweep` and `vaelab.configs` on a real store.
"""

import itertools

import pandas as pd

import vaelab
from tests.conftest import compose_config, isolated
from vaelab.edges import tracking
from vaelab.rules import console, ranking
from vaelab.rules.lifecycle.children import child_tags
from vaelab.rules.lifecycle.context import SweepContext
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.rules.lifecycle.summary import Summary, fold
from vaelab.rules.lifecycle.verdict import finish_sweep
from vaelab.vocab.tags import BEST_RUN, OVERRIDES

BY = "val/total"
STYLES = ("functional", "subclass", "custom_loop")
SENTENCE = (
    "style changes no number: its 3 values (custom_loop, functional, subclass) give identical "
    "val/total (and every other val/ and test/ number) in all 2 configurations that ran more "
    "than one of them; each configuration is ranked once, not as 3 ties."
)


def _frame(seeds=(1,), value=None) -> pd.DataFrame:
    """One run per style x latent_dim x seed, as the summary reads them (MLflow's shape);
    the styles give identical numbers unless `value` says otherwise."""
    value = value or (lambda style, z, seed: 150.0 - z + 0.5 * seed)
    rows = []
    for i, (style, z, seed) in enumerate(itertools.product(STYLES, (2, 16), seeds)):
        total = value(style, z, seed)
        named = f" seed={seed}" if len(seeds) > 1 else ""
        rows.append(
            {
                "run_id": f"{i:02d}" + "0" * 30,
                "status": "FINISHED",
                "start_time": 1000 + i,  # functional first: the earliest of identical runs
                "params.loss.name": "elbo",
                "params.style.name": style,
                "params.model.latent_dim": str(z),
                "params.seed": str(seed),
                "metrics.val/total": total,
                "metrics.val/kl": z / 2,
                "metrics.val/active_units": float(z),
                "metrics.test/total": total + 1,
                f"tags.{OVERRIDES}": f"style={style} model.latent_dim={z}{named}",
            }
        )
    return pd.DataFrame(rows)


def _summary(frame: pd.DataFrame) -> Summary:
    ranked = ranking.rank(frame, BY)
    return Summary("s", BY, ranked, {"FINISHED": len(frame)}, fold(ranked, BY))


def _run_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("FINISHED")]


def test_the_styles_are_said_once_and_the_table_lists_each_configuration_once():
    frame = _frame()
    summary = _summary(frame)
    text = console.verdict(summary)
    assert text.splitlines().count(SENTENCE) == 1
    # 2 configurations, not 6 runs three by three equal; no tie anywhere.
    assert len(_run_lines(text)) == 2 and "tied with" not in text
    # The best is the run the ranking put first, as before: it stands for its twins.
    (before,) = ranking.best(ranking.rank(frame, BY))["run_id"]
    assert before == frame["run_id"][1]  # functional, latent_dim=16
    assert summary.best["run_id"].tolist() == [before]
    twins = ", ".join(frame["run_id"][i][:8] for i in (3, 5))
    assert (
        f"Best by val/total: {before} (style=functional model.latent_dim=16); stands for {twins} "
        "(style changes no number)"
    ) in text.splitlines()


def test_a_style_that_changes_a_number_is_ranked_run_by_run():
    # custom_loop's numbers differ: nothing is folded, every run is listed and ranked.
    frame = _frame(value=lambda style, z, seed: 150.0 - z + (style == "custom_loop"))
    text = console.verdict(_summary(frame))
    assert "changes no number" not in text and len(_run_lines(text)) == 6
    assert "; tied with " in text  # functional and subclass are still equal, and said so


def test_with_seeds_the_configurations_table_ranks_each_configuration_once():
    frame = _frame(seeds=(1, 2))
    summary = _summary(frame)
    text = console.verdict(summary)
    assert text.splitlines().count(SENTENCE) == 1 and len(_run_lines(text)) == 4
    configurations = text.split("Configurations by the mean")[1].split("Best")[0].splitlines()
    rows = [line for line in configurations if "[2 finished]" in line]
    assert [row.split()[0] for row in rows] == ["1", "2"]  # 2 ranks, not 6
    # A folded style names no configuration.
    assert rows[0].endswith("model.latent_dim=16 [2 finished]") and "style=" not in rows[0]
    best = frame["run_id"][2]  # functional, latent_dim=16, seed 1: the first of its twins
    assert summary.best["run_id"].tolist() == [best]
    assert (
        f"its best seed by val/total: {best} (style=functional model.latent_dim=16 seed=1); "
        "stands for "
    ) in text


def _store_sweep(tmp_path, frame: pd.DataFrame) -> tuple[tracking.Store, SweepContext, str]:
    """The frame's runs written to a real store as one sweep's finished children."""
    cfg = compose_config(*isolated(tmp_path))
    store = tracking.open_store(cfg.tracking.uri, cfg.tracking.experiment)
    context = start_sweep(store, "styles", {}, total=len(frame), objective=BY)
    for _, row in frame.iterrows():
        params = {k.removeprefix("params."): v for k, v in row.items() if k.startswith("params.")}
        tags = {**child_tags(context, row["run_id"]), OVERRIDES: row[f"tags.{OVERRIDES}"]}
        run = tracking.create_run(store, row["run_id"][:8], tags, params, context.parent_run_id)
        run.log({k.removeprefix("metrics."): v for k, v in row.items() if "metrics." in k}, 1)
        run.end("FINISHED")
    return store, context, cfg.tracking.uri


def test_the_parent_records_the_folded_summary_and_configs_folds_alike(tmp_path):
    store, context, uri = _store_sweep(tmp_path, _frame())
    summary = finish_sweep(store, context)
    parent = tracking.get_run(store, context.parent_run_id)
    assert parent.tags[BEST_RUN] == ranking.best(summary.ranked)["run_id"].iloc[0]
    recorded = tracking.read_text_artifact(store, context.parent_run_id, "summary.txt")
    assert SENTENCE in recorded.splitlines() and len(_run_lines(recorded)) == 2
    # The Python interface ranks what the report and the summary rank: 2 configurations.
    table = vaelab.configs(store=uri)
    assert list(table["rank"]) == [1, 2] and list(table["n"]) == [1, 1]
    assert "params.style.name" not in table
    assert table.attrs["no_effect"] == [SENTENCE]
    stands_for = table.attrs["stands_for"]
    assert sorted(stands_for) == sorted(i for ids in table["run_ids"] for i in ids)
    assert all(len(ids) == 2 for ids in stands_for.values())
