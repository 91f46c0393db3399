from pathlib import Path

import keras
import numpy as np
import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import compose_config
from vaelab.edges.config import Config, ConfigError, Style, flatten, to_run_config
from vaelab.engines.fit import compile_model
from vaelab.engines.solo import build_model
from vaelab.orchestration.engine_inputs import engine_job, loss_spec
from vaelab.orchestration.train import train_and_evaluate
from vaelab.vae.losses import vae_loss_terms


def test_the_default_run_builds_the_notebooks_model_and_trains_with_its_optimiser():
    # The notebook's network has 107,472 weights (784 -> 64 -> 32 -> 64 -> 784, dense); the
    # count comes from the model built from the composed config, not from a copy of conf/.
    config = to_run_config(compose_config())
    model = build_model(engine_job(config))
    assert model.count_params() == 107_472
    assert isinstance(config, Config) and config.style.name is Style.functional
    optimizer = compile_model(model, engine_job(config))
    assert isinstance(optimizer, keras.optimizers.Adam)
    assert float(optimizer.learning_rate) == pytest.approx(1e-3)  # the notebook's Adam()


def test_store_and_data_paths_are_absolute_and_independent_of_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config()
    assert cfg.tracking.uri.startswith("sqlite:////")
    assert Path(cfg.tracking.uri.removeprefix("sqlite:///")).parent.name == "mlruns"
    assert Path(cfg.paths.mnist_dir).is_absolute() and str(tmp_path) not in cfg.paths.mnist_dir


@pytest.mark.parametrize(
    "preset, kl",
    [("notebook_functional", np.mean), ("notebook_subclass", np.sum)],
)
def test_presets_compute_each_notebook_cells_loss(preset, kl):
    # Each cell's formula, written out in numpy as the notebook has it: the pixel-averaged
    # MSE plus the KL averaged (functional cell) or summed (subclass cell) over latent units.
    rng = np.random.default_rng(0)
    x, x_hat = rng.uniform(size=(2, 8, 784)).astype("float32")
    z_mean, z_log_var = rng.normal(size=(2, 8, 4)).astype("float32")
    spec = loss_spec(to_run_config(compose_config(f"loss={preset}")))
    terms = vae_loss_terms(x, x_hat, z_mean, z_log_var, spec.weights())
    mse = np.mean((x - x_hat) ** 2, axis=-1)
    per_unit = -0.5 * (1 + z_log_var - z_mean**2 - np.exp(z_log_var))
    expected = np.mean(mse) + np.mean(kl(per_unit, axis=-1))
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.latent_dim=0", "model.latent_dim"),
        ("model.intermediate_dim=-3", "model.intermediate_dim"),
        ("train.epochs=0", "train.epochs"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.learning_rate=0", "train.learning_rate"),
        ("data.validation_size=0", "data.validation_size"),
        ("loss.beta=-1", "loss.beta"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_field(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}=.* is invalid: expected"):
        to_run_config(compose_config(override))


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("model.latent_dim=abc", "model.latent_dim"),
        ("train.epochs=1.5", "train.epochs"),
        ("loss.reconstruction=l1", "loss.reconstruction"),
    ],
)
def test_wrong_types_fail_at_composition_naming_the_field(override, fragment):
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(override)
    assert fragment in str(error.value.__cause__) + str(error.value)


def test_unknown_key_fails_at_composition():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("model.latnt_dim=8")
    assert "Key 'latnt_dim' not in 'ModelConfig'" in str(error.value.__cause__)


def test_a_key_added_with_plus_is_refused_with_a_suggestion():
    with pytest.raises(
        ConfigError, match="model.latnt_dim is not a vaelab setting. Did you mean model.latent_dim"
    ):
        to_run_config(compose_config("+model.latnt_dim=8"))


def test_unknown_style_lists_the_available_ones():
    with pytest.raises(
        ConfigCompositionException,
        match=r"(?s)style/convolutional.*custom_loop.*functional.*subclass",
    ):
        compose_config("style=convolutional")


def test_a_bad_value_creates_no_run_and_no_store(smoke_cfg, tmp_path):
    with pytest.raises(ConfigError, match="model.latent_dim"):
        train_and_evaluate(smoke_cfg("model.latent_dim=0"))
    assert not (tmp_path / "mlruns").exists()


def test_flattened_params_name_every_setting_by_its_path():
    flat = flatten(to_run_config(compose_config("style=subclass")))
    assert flat["model.latent_dim"] == 32 and flat["style.name"] == "subclass"
    assert flat["loss.kl_reduction"] == "sum"
    assert not any(key.startswith("data.sha256") for key in flat)


@pytest.mark.parametrize(
    "overrides",
    [(), ("experiment=smoke",), ("tracking=server", "style=subclass"), ("sweep=optuna",),
     ("data.binarize=dynamic", "loss=notebook_functional")],
)  # fmt: skip
def test_plain_values_are_omegaconfs_round_trip_read_off_the_dataclasses(overrides):
    # as_dict skips OmegaConf.structured (10 ms a call, several per job of a sweep): the
    # same values, enums as names, in the same order (identity hashes depend on it).
    from omegaconf import OmegaConf

    from vaelab.edges.config import as_dict, to_yaml

    config = to_run_config(compose_config(*overrides))
    expected = OmegaConf.to_container(OmegaConf.structured(config), resolve=True, enum_to_str=True)
    assert repr(as_dict(config)) == repr(expected)
    assert to_yaml(config) == OmegaConf.to_yaml(OmegaConf.structured(config), resolve=True)
    assert as_dict(config)["style"]["name"] == config.style.name.name  # an Enum, by name
