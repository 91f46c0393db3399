import numpy as np
import pytest
from keras import ops

from vaelab.vae.losses import (
    LossSpec,
    LossWeights,
    kl_per_example,
    reconstruction_per_example,
    vae_loss_terms,
)

RNG = np.random.default_rng(0)
X = RNG.uniform(size=(5, 784)).astype("float32")
X_HAT = RNG.uniform(0.01, 0.99, size=(5, 784)).astype("float32")
MU = RNG.normal(size=(5, 8)).astype("float32")
LOG_VAR = RNG.normal(scale=0.5, size=(5, 8)).astype("float32")


def np_reduce(values, how):
    return values.mean(axis=-1) if how == "mean" else values.sum(axis=-1)


def weights(reconstruction="bce", pixel="sum", kl="sum", beta=1.0):
    return LossSpec(reconstruction, pixel, kl, beta).weights()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_matches_numpy(reduction):
    got = ops.convert_to_numpy(reconstruction_per_example(X, X_HAT, weights("mse", reduction)))
    np.testing.assert_allclose(got, np_reduce((X - X_HAT) ** 2, reduction), rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_matches_numpy(reduction):
    expected = -(X * np.log(X_HAT) + (1 - X) * np.log(1 - X_HAT))
    got = ops.convert_to_numpy(reconstruction_per_example(X, X_HAT, weights("bce", reduction)))
    np.testing.assert_allclose(got, np_reduce(expected, reduction), rtol=1e-5)


def test_bce_stays_finite_when_the_output_saturates():
    x = np.array([[0.0, 1.0]], dtype="float32")
    x_hat = np.array([[1.0, 0.0]], dtype="float32")  # maximally wrong, log(0) unguarded
    assert np.isfinite(ops.convert_to_numpy(reconstruction_per_example(x, x_hat, weights())))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_kl_matches_closed_form(reduction):
    # KL(N(mu, s^2) || N(0,1)) = 0.5 * (s^2 + mu^2 - 1 - log s^2), per dimension
    expected = 0.5 * (np.exp(LOG_VAR) + MU**2 - 1.0 - LOG_VAR)
    got = ops.convert_to_numpy(kl_per_example(MU, LOG_VAR, weights(kl=reduction)))
    np.testing.assert_allclose(got, np_reduce(expected, reduction), rtol=1e-5)


def test_kl_of_standard_normal_is_zero():
    zeros = np.zeros((3, 4), dtype="float32")
    np.testing.assert_allclose(ops.convert_to_numpy(kl_per_example(zeros, zeros, weights())), 0.0)


def test_total_is_reconstruction_plus_beta_kl_averaged_over_the_batch():
    spec = LossSpec("mse", "mean", "sum", beta=0.5)
    terms = {k: float(v) for k, v in vae_loss_terms(X, X_HAT, MU, LOG_VAR, spec.weights()).items()}
    recon = ((X - X_HAT) ** 2).mean(axis=1).mean()
    kl = (0.5 * (np.exp(LOG_VAR) + MU**2 - 1.0 - LOG_VAR)).sum(axis=1).mean()
    assert terms["reconstruction"] == pytest.approx(recon, rel=1e-5)
    assert terms["kl"] == pytest.approx(kl, rel=1e-5)
    assert terms["total"] == pytest.approx(recon + 0.5 * kl, rel=1e-5)


def test_unknown_reduction_is_refused_with_its_name():
    with pytest.raises(ValueError, match="loss.kl_reduction='median'"):
        LossSpec("bce", "sum", "median", 1.0)


def test_a_mask_makes_padded_latent_units_invisible_to_the_kl():
    padded_mu = np.concatenate([MU, np.full((5, 3), 7.0, "float32")], axis=1)
    padded_lv = np.concatenate([LOG_VAR, np.full((5, 3), -2.0, "float32")], axis=1)
    mask = np.array([1.0] * 8 + [0.0] * 3, dtype="float32")
    for reduction in ("sum", "mean"):
        alone = ops.convert_to_numpy(kl_per_example(MU, LOG_VAR, weights(kl=reduction)))
        padded = ops.convert_to_numpy(
            kl_per_example(padded_mu, padded_lv, weights(kl=reduction), latent_mask=mask)
        )
        np.testing.assert_allclose(padded, alone, rtol=1e-6)  # a mean divides by 8, not 11


def test_per_configuration_flags_select_the_same_numbers_as_python_choices():
    import jax.numpy as jnp

    for reconstruction, pixel in (("bce", "sum"), ("mse", "mean")):
        spec = weights(reconstruction, pixel)
        traced = LossWeights(
            bce=jnp.float32(spec.bce), pixel_mean=jnp.float32(spec.pixel_mean), kl_mean=0.0, beta=1
        )
        np.testing.assert_allclose(
            np.asarray(reconstruction_per_example(X, X_HAT, traced)),
            ops.convert_to_numpy(reconstruction_per_example(X, X_HAT, spec)),
            rtol=1e-5,
        )
