"""Bad input: a clear message naming the field or file, non-zero exit, nothing in the store."""

import re
import subprocess
import time
from urllib.parse import urlsplit

import pytest
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, compose_config
from vaelab.edges import network, ui
from vaelab.edges.config import to_run_config
from vaelab.engines import solo
from vaelab.orchestration.rerun import rerun
from vaelab.orchestration.train import train_and_evaluate
from vaelab.vocab.errors import ConfigError, RerunError, TrackingError
from vaelab_server import cli as server_cli

NUMERIC = [
    "seed",
    "model.input_dim",
    "model.intermediate_dim",
    "model.latent_dim",
    "train.epochs",
    "train.batch_size",
    "train.learning_rate",
    "data.validation_size",
    "data.train_limit",
    "data.test_limit",
    "loss.beta",
    "style.steps_per_execution",
    "eval.n_images",
    "eval.n_latent_points",
    "eval.active_unit_threshold",
    "eval.iw_samples",
]
# Out of range for each numeric field whose range is narrower than its type.
OUT_OF_RANGE = {
    "model.input_dim": 0,
    "model.intermediate_dim": 0,
    "model.latent_dim": -1,
    "train.epochs": 0,
    "train.batch_size": -64,
    "train.learning_rate": -0.001,
    "data.validation_size": 0,
    "data.train_limit": 0,
    "data.test_limit": 0,
    "loss.beta": -0.5,
    "style.steps_per_execution": 0,
    "eval.n_images": 0,
    "eval.n_latent_points": 1,
    "eval.active_unit_threshold": -1,
    "eval.iw_samples": -1,
}


@pytest.mark.parametrize("key", NUMERIC)
def test_a_wrong_type_for_any_numeric_field_names_it(key):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(f"{key}=not-a-number")
    assert key in f"{error.value} {error.value.__cause__}"


@pytest.mark.parametrize("key, value", OUT_OF_RANGE.items())
def test_an_out_of_range_value_for_any_numeric_field_names_it(key, value):
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}=\S+ is invalid: expected"):
        to_run_config(compose_config(f"{key}={value}"))


@pytest.mark.parametrize(
    "override, group",
    [
        ("style=cnn", "style"),
        ("loss=kl_only", "loss"),
        ("sweep=huge", "sweep"),
        ("hydra/launcher=kubernetes", "hydra/launcher"),
        ("experiment=nope", "experiment"),
    ],
)
def test_unknown_presets_list_the_available_ones(override, group):
    with pytest.raises(ConfigCompositionException, match=f"Available options in '{group}'"):
        compose_config(override)


@pytest.mark.parametrize(
    "objective, reason",
    [
        ("test/total", "tuning on the test set"),
        ("val/kl", "rewards a collapsed posterior"),
        ("train/kl", "rewards a collapsed posterior"),
        ("train/total", "not a validation metric"),
        ("val/elbo", "not a validation metric"),
    ],
)
def test_an_objective_that_does_not_measure_fit_is_refused(objective, reason):
    with pytest.raises(ConfigError, match=f"objective='{objective}': .*{reason}.*val/total"):
        to_run_config(compose_config(f"objective={objective}"))


def test_a_model_too_large_for_memory_is_refused_up_front_with_its_size(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"model.intermediate_dim=.* need about [0-9.]+ GiB"):
        train_and_evaluate(smoke_cfg("model.intermediate_dim=50000000"))
    assert not (tmp_path / "mlruns").exists()


def test_an_unreachable_tracking_server_fails_before_any_training(smoke_cfg, monkeypatch):
    def build_model(job):
        raise AssertionError("reached the model although the store was unreachable")

    monkeypatch.setattr(solo, "build_model", build_model)
    # The patch is live: with a reachable store, the run gets as far as building the model.
    with pytest.raises(Exception, match="reached the model") as reached:
        train_and_evaluate(smoke_cfg())
    assert isinstance(reached.value.__cause__, AssertionError)
    start = time.perf_counter()
    with pytest.raises(TrackingError, match="cannot use the run store at tracking.uri=http://127"):
        train_and_evaluate(smoke_cfg("tracking.uri=http://127.0.0.1:9"))
    assert time.perf_counter() - start < 60  # minutes of retries would defeat the point


def test_a_run_store_that_cannot_be_created_is_named(smoke_cfg):
    with pytest.raises(TrackingError, match="cannot create the run store directory /proc/"):
        train_and_evaluate(smoke_cfg("paths.store_dir=/proc/vaelab-store"))


def test_a_deleted_run_cannot_be_rerun(smoke_cfg, tmp_path, store_uri):
    run_id = train_and_evaluate(smoke_cfg("tracking.log_model=false")).run_id
    MlflowClient(store_uri).delete_run(run_id)
    with pytest.raises(RerunError, match=f"run {run_id} was deleted"):
        rerun(
            compose_config(f"paths.store_dir={tmp_path}/mlruns", f"run_id={run_id}", name="rerun")
        )


def test_the_ui_and_every_server_bind_to_localhost_by_default():
    # Each way vaelab serves something: `make ui`, `make server` (PostgreSQL listens on
    # 127.0.0.1 only, see vaelab_server.cluster), their modules' own defaults, and the store a
    # worker reaches with tracking=server.
    for target, expected in (("ui", "--host 127.0.0.1"), ("server", "--host '127.0.0.1'")):
        dry_run = subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
        )
        assert expected in dry_run.stdout, (target, dry_run.stdout)
    for module in (ui, server_cli):
        assert network.is_loopback(module.parser().get_default("host")), module.__name__
    served = urlsplit(compose_config("tracking=server").tracking.uri).hostname
    assert network.is_loopback(served)
