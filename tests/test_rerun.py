"""A run re-created from the store alone gives the same numbers; drift is caught."""

import logging

import pytest

from tests.conftest import compose_config, isolated
from vaelab.edges import tracking
from vaelab.orchestration.rerun import prepare, rerun, rerun_run
from vaelab.orchestration.train import train_and_evaluate
from vaelab.rules import identity
from vaelab.rules.lifecycle.children import children_of
from vaelab.rules.lifecycle.parent import start_sweep
from vaelab.rules.lifecycle.verdict import finish_sweep
from vaelab.vocab import metrics
from vaelab.vocab.errors import RerunError
from vaelab.vocab.tags import BEST_RUN, PARENT, RERUN_OF, SWEEP_ID, SWEEP_ROLE

SMALLER = ["data.train_limit=256", "data.validation_size=128", "data.test_limit=128"]


@pytest.fixture
def rerun_cfg(tmp_path):
    def make(*overrides):
        return compose_config(*isolated(tmp_path), *overrides, name="rerun")

    return make


@pytest.fixture
def store(store_uri):
    return tracking.open_store(store_uri, "vaelab", None)


# The subclass style trains through the same `fit` path as the functional one.
@pytest.mark.parametrize("style", ["functional", "custom_loop"])
def test_a_rerun_repeats_every_epoch_bit_for_bit(style, smoke_cfg, rerun_cfg, store):
    original = train_and_evaluate(
        smoke_cfg(f"style={style}", "train.epochs=2", "tracking.log_model=false", *SMALLER),
        overrides=[f"style={style}", "train.epochs=2", *SMALLER],
    )
    result, comparison = rerun_run(store, *prepare(store, rerun_cfg(), original.run_id))
    # test/* and the quality metrics once (active units on validation and test digits, the IW
    # estimate; the digit count is not compared),
    # then train/* and val/* at each of the 2 epochs: every number, none missing.
    compared = [name for name, _, _ in comparison.rows]
    assert len(compared) == 3 + 3 + 6 * 2 and not comparison.missing, comparison.table()
    assert {metrics.ACTIVE_UNITS, metrics.IW_BCE, "val/kl @ epoch 2"} <= set(compared)
    # Exact: original and rerun train in this process (determinism, not portability).
    assert comparison.max_abs_difference == 0.0, comparison.table()
    rerun_record = tracking.get_run(store, result.run_id)
    assert rerun_record.tags["rerun_of"] == original.run_id
    assert rerun_record.tags["hydra.overrides"] == " ".join(
        [f"style={style}", "train.epochs=2", *SMALLER]
    )
    # Same params, except where it writes: `tracking.*` comes from the rerun's own config.
    original_params = tracking.get_run(store, original.run_id).params
    assert identity.identity(rerun_record.params) == identity.identity(original_params)
    assert tracking.read_text_artifact(store, result.run_id, "rerun_diff.txt").startswith("metric")


def test_changed_data_hash_warns_and_strict_refuses(smoke_cfg, rerun_cfg, store, caplog):
    original = train_and_evaluate(smoke_cfg("tracking.log_model=false"))
    tracking.update_run(store, original.run_id, tags={"data.sha256": "0" * 64})
    with pytest.raises(RerunError, match=r"(?s)strict=true: refusing.*data.sha256: original 0000"):
        prepare(store, rerun_cfg("strict=true"), original.run_id)
    assert len(tracking.find_runs(store, {"rerun_of": original.run_id})) == 0
    with caplog.at_level(logging.WARNING, logger="vaelab.orchestration.rerun"):
        rerun_run(store, *prepare(store, rerun_cfg(), original.run_id))
    assert "data.sha256: original 0000" in caplog.text


def test_a_run_without_its_config_cannot_be_rerun(rerun_cfg, store):
    bare = tracking.create_run(store, "made-elsewhere", {}).run_id
    with pytest.raises(RerunError, match=f"run {bare} has no config.yaml artifact"):
        rerun(rerun_cfg(f"run_id={bare}"))


def test_unknown_run_id_exits_1_naming_it_in_one_line(run_app):
    result = run_app("rerun.py", "run_id=0123456789abcdef0123456789abcdef")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: run_id=0123456789abcdef0123456789abcdef is not in the store")


def test_a_comparison_with_a_missing_epoch_says_so(store):
    from vaelab.orchestration.rerun import compare

    def logged(epochs):
        run = tracking.create_run(store, f"{epochs} epochs", {})
        for epoch in range(1, epochs + 1):
            run.log(dict.fromkeys(metrics.EPOCH_METRICS, 1.0), step=epoch)
        run.log(dict.fromkeys([*metrics.TEST_METRICS, metrics.ACTIVE_UNITS], 1.0), step=epochs)
        run.end("FINISHED")
        return run.run_id

    comparison = compare(store, logged(2), logged(1))
    assert comparison.missing == [f"{name} @ epoch 2" for name in metrics.EPOCH_METRICS]
    assert "missing in one of the two runs" in comparison.table()


def test_a_sweep_rerun_is_a_new_sweep_with_its_own_verdict(smoke_cfg, rerun_cfg, store, capsys):
    context = start_sweep(store, "orig", {}, total=1, objective="val/total")
    train_and_evaluate(smoke_cfg(*SMALLER, "tracking.log_model=false"), sweep=context)
    finish_sweep(store, context)
    comparisons = rerun(rerun_cfg("sweep_id=orig"))
    (comparison,) = comparisons  # 1 epoch: 3 test + 3 quality numbers + 6 losses, none missing
    assert len(comparison.rows) == 3 + 3 + 6 and not comparison.missing, comparison.table()
    assert comparison.max_abs_difference == 0.0, comparison.table()  # one process: exact
    (new_parent,) = tracking.find_runs(store, {RERUN_OF: "orig", SWEEP_ROLE: PARENT})
    children = children_of(store, new_parent.tags[SWEEP_ID])
    assert len(children) == 1 and new_parent.status == "FINISHED"
    # The same lifecycle as any sweep: counts, the objective, the best run, a summary.
    best = min(children, key=lambda r: (r.metrics["val/total"], r.start_time))
    assert new_parent.tags[BEST_RUN] == best.run_id
    assert new_parent.tags["sweep.count.finished"] == "1"
    assert new_parent.tags["sweep.objective"] == "val/total"
    assert f"Best by val/total: {best.run_id}" in capsys.readouterr().out


def test_a_sweep_rerun_refused_by_strict_mode_leaves_no_new_sweep_behind(
    smoke_cfg, rerun_cfg, store
):
    context = start_sweep(store, "orig", {}, total=1, objective="val/total")
    done = train_and_evaluate(smoke_cfg(*SMALLER, "tracking.log_model=false"), sweep=context)
    finish_sweep(store, context)
    tracking.update_run(store, done.run_id, tags={"git.commit": "0" * 40})
    with pytest.raises(RerunError, match="strict=true: refusing"):
        rerun(rerun_cfg("sweep_id=orig", "strict=true"))
    assert not tracking.find_runs(store, {RERUN_OF: "orig"})
    assert "RUNNING" not in {r.status for r in tracking.find_runs(store, {})}
