"""The importance-weighted estimate of -log p(x) (Burda et al., 2015), as pure `keras.ops`.

Every engine measures it with these functions, in its own compiled program: the solo engine
in a Keras model's `predict`, the packed engine in a `jax.vmap` over members. K samples per
digit are drawn in chunks (`sizes.iw_layout`) so that K = 5000 needs the memory of one chunk:
`chunk_log_sum` gives a chunk's log sum_k w_k (its samples past K masked out), the chunks'
sums are combined by a running `logaddexp` from -inf, and `negative_log_mean_exp` turns the
total into the estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from keras import ops

from vaelab.vae.losses import BCE_EPSILON

_LOG_2PI = 1.8378770664093453


def log_importance_weights(x, x_hat, z, z_mean, z_log_var, latent_mask=None):
    """Log p(x|z) + log p(z) - log q(z|x) for each of k samples of z: shape (k, n).

    `x` (n, pixels) holds Bernoulli targets, `x_hat` (k, n, pixels) the decoded means, `z`
    (k, n, units) the samples from q(z|x) = N(z_mean, exp(z_log_var)). The log-mean-exp over
    the k samples is the importance-weighted lower bound on log p(x).
    """
    clipped = ops.clip(x_hat, BCE_EPSILON, 1.0 - BCE_EPSILON)
    log_px_z = ops.sum(x * ops.log(clipped) + (1.0 - x) * ops.log(1.0 - clipped), axis=-1)
    log_pz = -0.5 * (_LOG_2PI + ops.square(z))
    log_qz = -0.5 * (_LOG_2PI + z_log_var + ops.square(z - z_mean) / ops.exp(z_log_var))
    difference = log_pz - log_qz
    if latent_mask is not None:
        difference = difference * latent_mask
    return log_px_z + ops.sum(difference, axis=-1)


def masked_log_sum_exp(log_weights, valid):
    """Log sum_k exp(log_weights[k]) over the first `valid` samples (axis 0) only.

    The last chunk of an estimate whose K the chunk size does not divide draws a few samples
    past K: they are left out, never counted.
    """
    counted = ops.expand_dims(ops.arange(ops.shape(log_weights)[0]) < valid, 1)
    return ops.logsumexp(ops.where(counted, log_weights, -np.inf), axis=0)


def chunk_log_sum(x, z_mean, z_log_var, eps, decode: Callable, valid, latent_mask=None):
    """Log sum_k w_k over one chunk of importance samples for each digit of `x` (n, pixels).

    `eps` (chunk, n, units) is the chunk's standard normal noise, `decode` the model's decoder
    on a (rows, units) batch, `valid` how many of the chunk's samples count. With a
    `latent_mask` (a packed member padded to its group's sizes), padded units are zero.
    """
    z = z_mean + ops.exp(0.5 * z_log_var) * eps
    if latent_mask is not None:
        z = z * latent_mask
    chunk, n, units = ops.shape(eps)
    x_hat = ops.reshape(decode(ops.reshape(z, (-1, units))), (chunk, n, -1))
    log_w = log_importance_weights(x, x_hat, z, z_mean, z_log_var, latent_mask)
    return masked_log_sum_exp(log_w, valid)


def negative_log_mean_exp(log_sum, samples: int):
    """-log (1/K) sum_k w_k from log sum_k w_k over K = `samples`: the estimate of -log p(x).

    `log K` is a Python float: a host array keeps its float64, a compiled one its own dtype.
    """
    return math.log(samples) - log_sum
