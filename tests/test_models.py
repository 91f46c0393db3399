import keras
import numpy as np
import pytest

from vaelab.losses import LossSpec
from vaelab.models import build_vae

# 784*64+64 + 2*(64*32+32) + 32*64+64 + 64*784+784: the notebook's model, exactly.
NOTEBOOK_PARAMETERS = 107_472


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(size=(32, 784)).astype("float32")


@pytest.mark.parametrize("architecture", ["functional", "subclass"])
def test_parameter_count_is_the_notebooks(architecture):
    model = build_vae(architecture, 784, 64, 32, seed=1, loss_spec=LossSpec())
    assert model.count_params() == NOTEBOOK_PARAMETERS


@pytest.mark.parametrize("architecture", ["functional", "subclass"])
def test_outputs_have_the_promised_shapes_and_range(architecture, x):
    model = build_vae(architecture, 784, 16, 3, seed=1, loss_spec=LossSpec())
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(x).items()}
    assert out["reconstruction"].shape == (32, 784)
    assert out["z_mean"].shape == out["z_log_var"].shape == (32, 3)
    assert out["reconstruction"].min() >= 0.0 and out["reconstruction"].max() <= 1.0


def _train_two_steps(architecture, x):
    keras.utils.set_random_seed(7)
    model = build_vae(architecture, 784, 16, 4, seed=7, loss_spec=LossSpec())
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    history = model.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0)
    return history.history


def test_functional_and_subclass_styles_compute_the_same_numbers(x):
    functional, subclass = _train_two_steps("functional", x), _train_two_steps("subclass", x)
    assert set(functional) == {"total", "reconstruction", "kl"}
    for name in functional:
        np.testing.assert_allclose(functional[name], subclass[name], rtol=1e-6)


@pytest.mark.parametrize("architecture", ["functional", "subclass"])
def test_saved_model_loads_in_safe_mode_and_reconstructs(architecture, x, tmp_path):
    model = build_vae(architecture, 784, 16, 4, seed=1, loss_spec=LossSpec())
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    z_mean = keras.ops.convert_to_numpy(loaded.encoder(x)[0])
    np.testing.assert_allclose(z_mean, keras.ops.convert_to_numpy(model.encoder(x)[0]), rtol=1e-6)
    assert loaded.predict(x, verbose=0)["reconstruction"].shape == (32, 784)
