"""The compiled, vmapped functions a group runs, and the cache that keeps them per shape.

One template Keras model at the group's padded sizes is called statelessly with each
member's own weights, and one Keras Adam applied statelessly with each member's own state:
an epoch of training, a pass of evaluation, the importance-weighted estimate and the figures'
arrays, each `jax.jit(jax.vmap(...))` over the members.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import keras
import numpy as np

from vaelab.engines.packed.padding import ENCODER_ARRAYS
from vaelab.engines.packed.streams import Stream, digit_noise, unit_noise
from vaelab.vae.importance import chunk_log_sum, negative_log_mean_exp
from vaelab.vae.losses import LossWeights, vae_loss_terms
from vaelab.vae.models import build_subclass_vae
from vaelab.vae.sizes import PACKED_IW_ROWS, iw_layout
from vaelab.vocab.metrics import TERMS

# The fields of `losses.LossWeights`, each stacked with one value per member.
LOSS_FIELDS = ("bce", "pixel_mean", "kl_mean", "beta")
# Compiled programs kept in this process, one per group shape (see `program_for`).
_PROGRAMS_KEPT = 4


class Program:
    """The compiled, vmapped functions of a group of the given padded sizes.

    A template model at those sizes, called statelessly with each member's own weights, and
    one Keras Adam applied statelessly with each member's own state (its learning rate
    included). Nothing of a particular member or data set is kept: any group of these sizes
    and settings can use it.
    """

    def __init__(
        self, pixels: int, hidden: int, latent: int, resample_pixels: bool, iw_samples: int
    ):
        self.pixels, self.hidden, self.latent = pixels, hidden, latent
        self.resample_pixels, self.iw_samples = resample_pixels, iw_samples
        self.iw = iw_layout(max(iw_samples, 1), PACKED_IW_ROWS, PACKED_IW_ROWS)
        template = build_subclass_vae(pixels, hidden, latent, seed=0)  # its weights are unused
        self.encoder, self.decoder = template.encoder, template.decoder
        self.encoder_state = [v.value for v in self.encoder.non_trainable_variables]
        self.optimizer = keras.optimizers.Adam()
        self.optimizer.build(template.trainable_variables)
        # One program per lane count for a round (an epoch, then the validation pass) and one
        # for everything measured after training: one call each, the noise folded inside. Not
        # fewer compilations: XLA's compile time follows the code (docs/benchmarks.md).
        self.train_round = jax.jit(
            jax.vmap(
                self._member_round,
                in_axes=(0, 0, 0, None, 0, None, 0, 0, 0, None, None, None, None),
            )
        )
        self.measure = jax.jit(
            jax.vmap(
                self._member_measure,
                in_axes=(0, 0, 0, None, None, None, None, 0, None, None, None),
            )
        )

    def optimizer_state(self, learning_rates: Sequence[float]) -> list[jnp.ndarray]:
        """Adam's fresh state for each member, with each member's own learning rate."""
        state = []
        for variable in self.optimizer.variables:
            value = np.asarray(variable.value)
            stacked = np.stack([value] * len(learning_rates))
            if variable.path.endswith("learning_rate"):
                stacked = np.asarray(learning_rates, dtype=value.dtype)
            state.append(jnp.asarray(stacked))
        return state

    def _posterior(self, params, x):
        encoder = params[:ENCODER_ARRAYS]
        (z_mean, z_log_var, _), _ = self.encoder.stateless_call(encoder, self.encoder_state, x)
        return z_mean, z_log_var

    def _sample(self, params, x, eps, latent_mask):
        """Z ~ q(z|x) for one member from the given noise (padded units: exactly zero)."""
        z_mean, z_log_var = self._posterior(params, x)
        z = (z_mean + jnp.exp(0.5 * z_log_var) * eps) * latent_mask
        return z, z_mean, z_log_var

    def _decode(self, params, z):
        return self.decoder.stateless_call(params[ENCODER_ARRAYS:], [], z)[0]

    def _terms(self, params, x, eps, consts, size=None):
        """The batch's loss terms; with `size`, over its first `size` rows only.

        An epoch's last, smaller batch is padded to the batch size, so that one compiled
        program runs the whole epoch (a second one for that batch alone cost a compilation of
        the epoch per lane count: 3-8 s on this CPU).
        """
        z, z_mean, z_log_var = self._sample(params, x, eps, consts["latent_mask"])
        loss = LossWeights(*(consts["loss"][f] for f in LOSS_FIELDS))
        x_hat = self._decode(params, z)
        return vae_loss_terms(x, x_hat, z_mean, z_log_var, loss, consts["latent_mask"], size)

    def _member_epoch(
        self, params, state, rows, sizes, epoch, first_step, key, consts, active, pool
    ):
        """One member's pass over its batches (rows: steps x batch) in one scan.

        `sizes`: each step's real rows (the last batch's are fewer, padded after them). A
        member that is not active computes but keeps its weights and state unchanged.
        """
        base = jax.random.wrap_key_data(key)
        noise = jax.random.fold_in(jax.random.fold_in(base, Stream.NOISE), epoch)
        pixels = jax.random.fold_in(jax.random.fold_in(base, Stream.PIXELS), epoch)

        def loss_fn(p, x, step_number, size):
            eps = unit_noise(jax.random.fold_in(noise, step_number), self.latent, (x.shape[0],))
            terms = self._terms(p, x, eps, consts, size)
            return terms["total"], terms

        def step(carry, xs):
            p, o = carry
            batch_rows, step_number, size = xs
            x = pool[batch_rows]
            if self.resample_pixels:
                u = jax.random.uniform(jax.random.fold_in(pixels, step_number), x.shape)
                x = (u < x).astype(x.dtype)
            (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, step_number, size)
            grads = [g * mask for g, mask in zip(grads, consts["gradient_masks"], strict=True)]
            new_p, new_o = self.optimizer.stateless_apply(o, grads, p)
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            carry = (jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_o, o))
            return carry, jnp.stack([terms[t] for t in TERMS]) * size

        numbers = first_step + jnp.arange(rows.shape[0])
        (params, state), sums = jax.lax.scan(step, (params, state), (rows, numbers, sizes))
        return params, state, sums.sum(axis=0)

    def _member_round(
        self, params, state, rows, sizes, epoch, first_step, key, consts, active, pool,
        val_rows, val_sizes, val_pool,
    ):  # fmt: skip
        """One member's epoch (`_member_epoch`), then its validation pass at that epoch."""
        params, state, sums = self._member_epoch(
            params, state, rows, sizes, epoch, first_step, key, consts, active, pool
        )
        base = jax.random.wrap_key_data(key)
        val_key = jax.random.fold_in(jax.random.fold_in(base, Stream.EVAL), epoch)
        val = self._member_eval(params, val_rows, val_sizes, val_key, consts, val_pool)
        return params, state, sums, val

    def _member_eval(self, params, rows, sizes, key, consts, pool):
        """Summed loss terms of one member over rows (steps x batch) of a pool.

        `sizes`: each step's real rows (a last, smaller batch is padded after them).
        """

        def step(total, xs):
            batch_rows, size = xs
            eps = digit_noise(key, batch_rows, self.latent)
            terms = self._terms(params, pool[batch_rows], eps, consts, size)
            return total + jnp.stack([terms[t] for t in TERMS]) * size, None

        total, _ = jax.lax.scan(step, jnp.zeros(len(TERMS)), (rows, sizes))
        return total

    def _member_measure(
        self, params, key, consts, test_rows, test_sizes, iw_rows, pool, prior, originals,
        points, val_points,
    ):  # fmt: skip
        """What is measured of one member after training, each from its own stream.

        Its summed test terms (`_member_eval`), the importance-weighted estimate of each digit
        of `iw_rows` (a list of steps x digits arrays; none when no member asks for one) and
        the figures' arrays (`_member_pictures`).
        """
        base = jax.random.wrap_key_data(key)
        mask = consts["latent_mask"]
        test_key = jax.random.fold_in(jax.random.fold_in(base, Stream.EVAL), 0)
        test = self._member_eval(params, test_rows, test_sizes, test_key, consts, pool)
        iw_key = jax.random.fold_in(base, Stream.IW)
        parts = [self._member_iw(params, rows, iw_key, mask, pool) for rows in iw_rows]
        iw = jnp.concatenate(parts) if parts else jnp.zeros((0,))
        pictures_key = jax.random.fold_in(base, Stream.PICTURES)
        pictures = self._member_pictures(
            params, originals, prior, points, val_points, pictures_key, mask
        )
        return test, iw, *pictures

    def _member_iw(self, params, rows, base, latent_mask, pool):
        """-log p(x) by importance sampling for every digit of `rows` (steps x digits).

        In chunks of samples (`sizes.iw_layout`) combined as `vae.importance` says, so that
        K = 5000 needs the memory of one chunk; chunk c's noise comes from the key folded
        with c, then the digit's index.
        """
        layout, k = self.iw, self.iw_samples
        decode = functools.partial(self._decode, params)

        def step(_, batch_rows):
            x = pool[batch_rows]

            def chunk(total, c):
                key = jax.random.fold_in(base, c)
                eps = digit_noise(key, batch_rows, self.latent, (layout.chunk,))
                z_mean, z_log_var = self._posterior(params, x)
                part = chunk_log_sum(
                    x, z_mean, z_log_var, eps, decode, k - c * layout.chunk, latent_mask
                )
                return jnp.logaddexp(total, part), None

            start = jnp.full(batch_rows.shape, -jnp.inf)
            total, _ = jax.lax.scan(chunk, start, jnp.arange(layout.chunks))
            return None, negative_log_mean_exp(total, k)

        _, per_digit = jax.lax.scan(step, None, rows)
        return per_digit.reshape(-1)

    def _member_pictures(self, params, originals, prior, points, val_points, base, latent_mask):
        """A run's figures' arrays, and its validation digits' latent means (active units).

        The figures': reconstructions, decoded prior draws, the test digits' latent means.
        """
        eps = unit_noise(base, self.latent, (originals.shape[0],))
        z, _, _ = self._sample(params, originals, eps, latent_mask)
        means, _ = self._posterior(params, points)
        val_means, _ = self._posterior(params, val_points)
        return self._decode(params, z), self._decode(params, prior), means, val_means


@functools.lru_cache(maxsize=_PROGRAMS_KEPT)
def program_for(
    pixels: int, hidden: int, latent: int, resample_pixels: bool, iw_samples: int
) -> Program:
    """The program for groups of these sizes and settings, made once per process.

    Later groups of the same shapes (a sweep split by memory, a relaunch, tests) reuse its
    traced and compiled functions.
    """
    return Program(pixels, hidden, latent, resample_pixels, iw_samples)
