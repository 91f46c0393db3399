import keras
import numpy as np
import pytest

from vaelab.vae.losses import LossSpec
from vaelab.vae.models import build_vae, dense_weights, initial_dense_weights
from vaelab.vae.sizes import parameter_count

ELBO = LossSpec("bce", "sum", "sum", 1.0)

# 784*64+64 + 2*(64*32+32) + 32*64+64 + 64*784+784: the notebook's model, exactly.
NOTEBOOK_PARAMETERS = 107_472


@pytest.fixture
def x():
    return np.random.default_rng(0).uniform(size=(32, 784)).astype("float32")


@pytest.mark.parametrize("architecture", ["functional", "subclass"])
def test_parameter_count_is_the_notebooks(architecture):
    model = build_vae(architecture, 784, 64, 32, seed=1, loss_spec=ELBO)
    assert model.count_params() == NOTEBOOK_PARAMETERS == parameter_count(784, 64, 32)
    small = build_vae(architecture, 784, 16, 3, seed=1, loss_spec=ELBO)
    assert small.count_params() == parameter_count(784, 16, 3)


@pytest.mark.parametrize("architecture", ["functional", "subclass"])
def test_outputs_have_the_promised_shapes(architecture, x):
    model = build_vae(architecture, 784, 16, 3, seed=1, loss_spec=ELBO)
    out = {k: keras.ops.convert_to_numpy(v) for k, v in model(x).items()}
    assert out["reconstruction"].shape == (32, 784)
    assert out["z_mean"].shape == out["z_log_var"].shape == (32, 3)


def test_a_model_without_an_objective_says_how_to_set_one(x):
    model = build_vae("subclass", 784, 16, 3, seed=1, loss_spec=ELBO)
    model.loss_spec = None
    with pytest.raises(RuntimeError, match="set_objective"):
        model.loss_terms(x, model(x))


def _train_two_steps(architecture, x):
    keras.utils.set_random_seed(7)
    model = build_vae(architecture, 784, 16, 4, seed=7, loss_spec=ELBO)
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
    model = build_vae(architecture, 784, 16, 4, seed=1, loss_spec=ELBO)
    path = tmp_path / "vae.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    z_mean = keras.ops.convert_to_numpy(loaded.encoder(x)[0])
    np.testing.assert_allclose(z_mean, keras.ops.convert_to_numpy(model.encoder(x)[0]), rtol=1e-6)
    assert loaded.predict(x, verbose=0)["reconstruction"].shape == (32, 784)


@pytest.mark.parametrize("architecture", ["functional", "subclass"])
def test_initial_weights_are_those_a_built_model_holds(architecture):
    # The packed engine trains from these and builds a member's model only once it finishes.
    model = build_vae(architecture, 784, 48, 5, seed=7, loss_spec=ELBO)
    built = dense_weights(model)
    drawn = initial_dense_weights(784, 48, 5, seed=7)
    assert [w.shape for w in drawn] == [w.shape for w in built]
    for ours, theirs in zip(drawn, built, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # the same numpy draws, no arithmetic
    other = initial_dense_weights(784, 48, 5, seed=8)
    assert not np.array_equal(other[0], drawn[0])
