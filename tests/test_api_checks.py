"""The Python interface refuses what the command line refuses, and a typo never comes back as
an empty frame: each mistake is an error naming the valid values (and the closest one)."""

import pytest

import vaelab
from vaelab.edges import tracking
from vaelab.vocab.errors import ConfigError

EPOCHS = 3


@pytest.fixture
def store(tmp_path) -> str:
    """A store of two runs that logged train/total and val/total for three epochs (no
    training: the checks are about names, not numbers)."""
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    opened = tracking.open_store(uri, "vaelab", str(tmp_path / "mlruns" / "artifacts"))
    for name in ("a", "b"):
        run = tracking.create_run(opened, name, {}, {"model.latent_dim": 2})
        for epoch in range(1, EPOCHS + 1):
            run.log({"train/total": 100.0 / epoch, "val/total": 110.0 / epoch}, step=epoch)
        run.end("FINISHED")
    return uri


@pytest.mark.parametrize(
    "metric, reason",
    [
        ("val/kl", "minimising the KL rewards a collapsed posterior"),
        ("test/total", "tuning on the test set makes its numbers meaningless"),
        ("train/total", "it is not a validation metric of the fit"),
    ],
)
def test_runs_refuses_the_objectives_the_command_line_refuses(store, metric, reason):
    with pytest.raises(ConfigError, match=f"^metric='{metric}': {reason}; use one of val/total"):
        vaelab.runs("all", metric=metric, store=store)


def test_a_status_filter_must_name_a_status(store):
    finished = vaelab.runs("all", store=store, status="FINISHED")
    assert sorted(finished["run_name"]) == ["a", "b"]
    assert vaelab.runs("all", store=store, status="KILLED").empty  # a status; no run has it
    with pytest.raises(
        ConfigError,
        match=r"^status='FINSHED' is not a run status\. Did you mean FINISHED\? The statuses: "
        "FINISHED, PRUNED, FAILED, KILLED, RUNNING, STALE",
    ):
        vaelab.runs("all", store=store, status="FINSHED")


def test_history_refuses_a_metric_no_run_logged_naming_those_they_did(store):
    frame = vaelab.runs("all", store=store)
    curves = vaelab.history(frame, "val/total")  # one name, as well as a list
    assert len(curves) == 2 * EPOCHS and set(curves["metric"]) == {"val/total"}
    with pytest.raises(
        ConfigError,
        match=r"^none of these runs logged the metric 'val/totl'\. Did you mean val/total\? "
        "They have: train/total, val/total",
    ):
        vaelab.history(frame, metrics=["train/total", "val/totl"])


def test_history_refuses_a_run_the_store_does_not_have(store):
    (known,) = vaelab.runs("all", store=store, run_name="a")["run_id"]
    assert len(vaelab.history(known, store=store)) == 2 * EPOCHS  # the default metrics it has
    with pytest.raises(ConfigError, match=r"^no run 0123abc in the store sqlite:///"):
        vaelab.history([known, "0123abc"], store=store)


@pytest.mark.parametrize(
    "runs, metrics, message",
    [
        (42, None, r"^runs= takes a frame from vaelab.runs\(\), a run id or a list of them; "
                   "got int 42$"),
        (["a", 7], None, r"^runs= takes .*; got list \['a', 7\]$"),
        ("some-id", 3, r"^metrics= takes a metric name or a list; got int 3$"),
    ],
)  # fmt: skip
def test_history_says_what_it_accepts_for_a_wrong_type(store, runs, metrics, message):
    with pytest.raises(TypeError, match=message):
        vaelab.history(runs, metrics, store=store)
