from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import compose_config
from vaelab.config import Config, ConfigError, Style, flatten, to_run_config
from vaelab.run import train_and_evaluate


def test_defaults_are_the_notebooks_model_with_the_elbo_loss():
    config = to_run_config(compose_config())
    assert isinstance(config, Config)
    assert (config.model.input_dim, config.model.intermediate_dim, config.model.latent_dim) == (
        784,
        64,
        32,
    )
    assert (config.train.batch_size, config.train.learning_rate, config.train.epochs) == (
        64,
        1e-3,
        3,
    )
    assert config.style.name is Style.functional and config.loss.name == "elbo"


def test_store_and_data_paths_are_absolute_and_independent_of_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cfg = compose_config()
    assert cfg.tracking.uri.startswith("sqlite:////")
    assert Path(cfg.tracking.uri.removeprefix("sqlite:///")).parent.name == "mlruns"
    assert Path(cfg.paths.mnist_dir).is_absolute() and str(tmp_path) not in cfg.paths.mnist_dir


def test_presets_reproduce_each_notebook_cell():
    functional = compose_config("loss=notebook_functional").loss
    subclass = compose_config("loss=notebook_subclass").loss
    assert (functional.reconstruction, functional.pixel_reduction, functional.kl_reduction) == (
        "mse",
        "mean",
        "mean",
    )
    assert (subclass.reconstruction, subclass.pixel_reduction, subclass.kl_reduction) == (
        "mse",
        "mean",
        "sum",
    )


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
