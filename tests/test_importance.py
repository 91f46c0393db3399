"""The importance-weighted estimate's arithmetic (`vae.importance`), as both engines run it."""

import numpy as np
import pytest
from keras import ops

from vaelab.vae.importance import (
    chunk_log_sum,
    log_importance_weights,
    masked_log_sum_exp,
    negative_log_mean_exp,
)
from vaelab.vae.sizes import iw_layout

RNG = np.random.default_rng(0)


def estimate_in_chunks(chunk_part, samples: int, chunk: int) -> np.ndarray:
    """-log p(x) per digit, K = `samples` drawn `chunk` at a time, as the engines combine it."""
    chunks = -(-samples // chunk)
    total = None
    for c in range(chunks):
        part = ops.convert_to_numpy(chunk_part(c, samples - c * chunk)).astype(np.float64)
        total = part if total is None else np.logaddexp(total, part)
    return negative_log_mean_exp(total, samples)


@pytest.mark.parametrize("chunk", [7, 3, 1])  # one pass; 3 chunks, 2 extra draws masked; 7
def test_an_exact_posterior_gives_the_true_log_likelihood_in_any_chunks(chunk):
    # One binary pixel, p(z) = N(0,1), p(x=1|z) = 0.25 whatever z: log p(x=1) = log 0.25.
    # With q = p(z) every weight equals p(x|z), so the estimate is exact for any K, however
    # it is chunked; an extra draw of the last chunk counted would make it log(0.25 * 9/7).
    x, zeros = np.ones((1, 1), "float32"), np.zeros((1, 2), "float32")

    def decode(z):
        return ops.full((ops.shape(z)[0], 1), 0.25)

    def part(c, valid):
        eps = RNG.normal(size=(chunk, 1, 2)).astype("float32")
        return chunk_log_sum(x, zeros, zeros, eps, decode, valid)

    np.testing.assert_allclose(estimate_in_chunks(part, 7, chunk), [-np.log(0.25)], rtol=1e-6)


def test_chunks_combine_to_the_log_mean_exp_of_all_k_samples():
    # K = 10 log-weights of 3 digits, in chunks of 4: the last chunk's 2 extra rows are
    # garbage that the mask must leave out.
    log_w = RNG.normal(scale=20.0, size=(10, 3)) - 100.0
    drawn = np.concatenate([log_w, np.full((2, 3), 50.0)]).astype("float32")
    layout = iw_layout(10, 4, 1)
    assert (layout.chunks, layout.chunk, layout.drawn) == (3, 4, 12)

    def part(c, valid):
        return masked_log_sum_exp(drawn[c * 4 : (c + 1) * 4], valid)

    expected = -np.log(np.mean(np.exp(log_w.astype("float32").astype(np.float64)), axis=0))
    np.testing.assert_allclose(estimate_in_chunks(part, 10, 4), expected, rtol=1e-6)


def test_log_weights_of_a_padded_member_count_its_own_units_only():
    # A member padded from 2 to 5 latent units: whatever the padded units hold, their log
    # p(z) - log q(z|x) must not count; the result is the unpadded member's.
    x = RNG.uniform(size=(3, 6)).astype("float32")
    x_hat = RNG.uniform(0.1, 0.9, size=(4, 3, 6)).astype("float32")
    z, mean, log_var = (RNG.normal(size=s).astype("float32") for s in [(4, 3, 2), (3, 2), (3, 2)])
    own = log_importance_weights(x, x_hat, z, mean, log_var)

    def padded(a):
        return np.concatenate([a, RNG.normal(size=(*a.shape[:-1], 3)).astype("float32")], -1)

    mask = np.array([1, 1, 0, 0, 0], "float32")
    padded_w = log_importance_weights(x, x_hat, padded(z), padded(mean), padded(log_var), mask)
    np.testing.assert_allclose(ops.convert_to_numpy(padded_w), ops.convert_to_numpy(own), rtol=1e-6)
