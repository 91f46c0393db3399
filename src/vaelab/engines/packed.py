"""Many VAEs trained together as one compiled program: `jax.vmap` over Keras models.

A group's members may differ in seed, learning rate, loss, style, sizes and epochs. They all
run through one Keras model built at the group's largest sizes, called statelessly under
`jax.vmap` with each member's own weights, and one Keras Adam applied statelessly with each
member's own state (its learning rate is part of that state). What makes a packed member
the same model as a solo run, whatever it is packed with:

- sizes: smaller members are padded with zero weights, and masks zero the padded units'
  samples, gradients and so their Adam updates: a padded unit stays exactly zero. Every
  reduction over latent units counts the member's own units only (`losses.latent_mask`);
- initial weights: drawn by building the member's own Keras model (its style, its sizes) from
  its own seed, exactly as a solo run does, then padded;
- randomness: the data order is the member's `batches.epoch_orders`; sampling noise comes
  from the member's key folded with the epoch, the step and the unit's index, so unit j's
  noise does not depend on how far the group pads; in evaluation, with the digit's index
  too, so that it does not depend on how the digits are batched either;
- epochs: the group trains to its longest; a member stops updating after its own last epoch,
  or the epoch at which it is told to stop (`Events.should_stop`), its weights are kept there
  and its results are taken at that point;
- failures: a member whose loss turns NaN or inf stops updating, and only it fails.

Needs the JAX backend. Knows nothing of MLflow or Hydra: it takes `engines.base.Job`s and the
group's data, and reports through `engines.base.Events` like every engine.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaelab.engines import backend
from vaelab.engines.base import (
    Checkpoint,
    Events,
    Job,
    Outcome,
    epoch_metrics,
    non_finite_message,
)
from vaelab.engines.batches import epoch_orders, equal_batches
from vaelab.vae.data import Pools
from vaelab.vae.losses import LossWeights, log_importance_weights, vae_loss_terms
from vaelab.vae.models import (
    DENSE_NAMES,
    build_subclass_vae,
    build_vae,
    dense_weights,
    set_dense_weights,
)
from vaelab.vae.plots import Pictures
from vaelab.vae.sizes import EVAL_BATCH, PACKED_IW_ROWS, iw_layout
from vaelab.vocab import metrics
from vaelab.vocab.errors import NonFiniteLossError

log = logging.getLogger(__name__)

TERMS = metrics.TERMS


class Stream(IntEnum):
    """Folded into a member's key to give each use of randomness its own stream."""

    NOISE = 0  # the sampling noise of training steps
    PIXELS = 1  # dynamic binarisation's draws
    EVAL = 2  # the sampling noise of validation and test passes
    IW = 3  # the importance samples of the estimate
    PICTURES = 4  # the reconstructions of the figures


# `models.dense_weights` lists each layer's kernel and bias in DENSE_NAMES order: the
# encoder's three layers come first, and z_mean's bias is the array shaped like the latent
# units (its mask is the member's latent mask).
_ENCODER_ARRAYS = 2 * DENSE_NAMES.index("decoder_hidden")
_LATENT_BIAS = 2 * DENSE_NAMES.index("z_mean") + 1
# Compiled programs kept in this process, one per group shape (see `program`).
_PROGRAMS_KEPT = 4
# Members are laid out afresh on fewer lanes once this share or less of them still trains: a
# new lane count compiles the epoch again, so not after every member that leaves.
_SHRINK_AT = 0.75


def _pad(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    padded = np.zeros(shape, dtype=np.float32)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    return padded


def _crop(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    return array[tuple(slice(0, n) for n in shape)]


def _shapes(pixels: int, hidden: int, latent: int) -> list[tuple[int, ...]]:
    """Shapes of the 10 arrays of `models.dense_weights` at the given sizes."""
    return [
        (pixels, hidden), (hidden,),
        (hidden, latent), (latent,),
        (hidden, latent), (latent,),
        (latent, hidden), (hidden,),
        (hidden, pixels), (pixels,),
    ]  # fmt: skip


def _masks(pixels: int, hidden: int, latent: int, job: Job) -> list[np.ndarray]:
    """1 where a weight of the padded arrays is the member's own, 0 where it is padding."""
    h = (np.arange(hidden) < job.intermediate_dim).astype(np.float32)
    z = (np.arange(latent) < job.latent_dim).astype(np.float32)
    x = np.ones(pixels, np.float32)
    return [
        np.outer(x, h), h,
        np.outer(h, z), z,
        np.outer(h, z), z,
        np.outer(z, h), h,
        np.outer(h, x), x,
    ]  # fmt: skip


_LOSS_FIELDS = ("bce", "pixel_mean", "kl_mean", "beta")


def _stack(rows: Sequence) -> jnp.ndarray:
    return jnp.asarray(np.stack(rows))


def _fold(keys: jnp.ndarray, *numbers: int | np.ndarray) -> jnp.ndarray:
    """Each member's key (as key data) folded with the numbers in turn.

    A number is the same for every member, or an array of one per member (its epoch).
    """
    columns = [jnp.broadcast_to(jnp.asarray(n), (keys.shape[0],)) for n in numbers]

    def fold(key_data, *own):
        key = jax.random.wrap_key_data(key_data)
        for number in own:
            key = jax.random.fold_in(key, number)
        return jax.random.key_data(key)

    return jax.vmap(fold)(keys, *columns)


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
        self.train_epoch = jax.jit(
            jax.vmap(self._member_epoch, in_axes=(0, 0, 0, 0, None, 0, 0, 0, None))
        )
        self.evaluate = jax.jit(jax.vmap(self._member_eval, in_axes=(0, 0, 0, 0, None)))
        self.importance = jax.jit(jax.vmap(self._member_iw, in_axes=(0, None, 0, 0, None)))
        self.pictures = jax.jit(
            jax.vmap(self._member_pictures, in_axes=(0, None, 0, None, None, 0, 0))
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

    def unit_noise(self, key, shape: tuple[int, ...]):
        """Standard normal noise (*shape, latent); unit j's comes from the key folded with j."""
        unit_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(self.latent))
        return jnp.moveaxis(jax.vmap(lambda k: jax.random.normal(k, shape))(unit_keys), 0, -1)

    def digit_noise(self, key, digits, samples: tuple[int, ...] = ()):
        """Noise (*samples, digits, latent); digit d's comes from the key folded with d.

        So a digit's noise is the same however the digits are batched.
        """
        noise = jax.vmap(lambda d: self.unit_noise(jax.random.fold_in(key, d), samples))(digits)
        return jnp.moveaxis(noise, 0, len(samples))

    def _posterior(self, params, x):
        encoder = params[:_ENCODER_ARRAYS]
        (z_mean, z_log_var, _), _ = self.encoder.stateless_call(encoder, self.encoder_state, x)
        return z_mean, z_log_var

    def _sample(self, params, x, eps, latent_mask):
        """Z ~ q(z|x) for one member from the given noise (padded units: exactly zero)."""
        z_mean, z_log_var = self._posterior(params, x)
        z = (z_mean + jnp.exp(0.5 * z_log_var) * eps) * latent_mask
        return z, z_mean, z_log_var

    def _decode(self, params, z):
        return self.decoder.stateless_call(params[_ENCODER_ARRAYS:], [], z)[0]

    def _terms(self, params, x, eps, consts):
        z, z_mean, z_log_var = self._sample(params, x, eps, consts["latent_mask"])
        loss = LossWeights(*(consts["loss"][f] for f in _LOSS_FIELDS))
        x_hat = self._decode(params, z)
        return vae_loss_terms(x, x_hat, z_mean, z_log_var, loss, consts["latent_mask"])

    def _member_epoch(self, params, state, rows, epoch, first_step, key, consts, active, pool):
        """One member's pass over its batches (rows: steps x batch) in one scan.

        A member that is not active computes but keeps its weights and state unchanged.
        """
        base = jax.random.wrap_key_data(key)
        noise = jax.random.fold_in(jax.random.fold_in(base, Stream.NOISE), epoch)
        pixels = jax.random.fold_in(jax.random.fold_in(base, Stream.PIXELS), epoch)

        def loss_fn(p, x, step_number):
            eps = self.unit_noise(jax.random.fold_in(noise, step_number), (x.shape[0],))
            terms = self._terms(p, x, eps, consts)
            return terms["total"], terms

        def step(carry, xs):
            p, o = carry
            batch_rows, step_number = xs
            x = pool[batch_rows]
            if self.resample_pixels:
                u = jax.random.uniform(jax.random.fold_in(pixels, step_number), x.shape)
                x = (u < x).astype(x.dtype)
            (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, x, step_number)
            grads = [g * mask for g, mask in zip(grads, consts["gradient_masks"], strict=True)]
            new_p, new_o = self.optimizer.stateless_apply(o, grads, p)
            keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
            carry = (jax.tree.map(keep, new_p, p), jax.tree.map(keep, new_o, o))
            return carry, jnp.stack([terms[t] for t in TERMS]) * x.shape[0]

        numbers = first_step + jnp.arange(rows.shape[0])
        (params, state), sums = jax.lax.scan(step, (params, state), (rows, numbers))
        return params, state, sums.sum(axis=0)

    def _member_eval(self, params, rows, key, consts, pool):
        """Summed loss terms of one member over rows (steps x batch) of a pool."""
        base = jax.random.wrap_key_data(key)

        def step(total, batch_rows):
            eps = self.digit_noise(base, batch_rows)
            terms = self._terms(params, pool[batch_rows], eps, consts)
            return total + jnp.stack([terms[t] for t in TERMS]) * batch_rows.shape[0], None

        total, _ = jax.lax.scan(step, jnp.zeros(len(TERMS)), rows)
        return total

    def _member_iw(self, params, rows, key, latent_mask, pool):
        """-log p(x) by importance sampling for every digit of `rows` (steps x digits).

        In chunks of samples (`sizes.iw_layout`) whose log-sum-exps are combined, so that
        K = 5000 needs the memory of one chunk; chunk c's noise comes from the key folded
        with c, then the digit's index.
        """
        base = jax.random.wrap_key_data(key)
        layout, k = self.iw, self.iw_samples

        def step(_, batch_rows):
            x = pool[batch_rows]

            def chunk(total, c):
                eps = self.digit_noise(jax.random.fold_in(base, c), batch_rows, (layout.chunk,))
                z, z_mean, z_log_var = self._sample(params, x, eps, latent_mask)
                decoded = self._decode(params, z.reshape(-1, self.latent))
                x_hat = decoded.reshape(layout.chunk, x.shape[0], -1)
                log_w = log_importance_weights(x, x_hat, z, z_mean, z_log_var, latent_mask)
                counted = (c * layout.chunk + jnp.arange(layout.chunk)) < k
                log_w = jnp.where(counted[:, None], log_w, -jnp.inf)
                return jnp.logaddexp(total, jax.nn.logsumexp(log_w, axis=0)), None

            start = jnp.full(batch_rows.shape, -jnp.inf)
            total, _ = jax.lax.scan(chunk, start, jnp.arange(layout.chunks))
            return None, jnp.log(k) - total

        _, per_digit = jax.lax.scan(step, None, rows)
        return per_digit.reshape(-1)

    def _member_pictures(self, params, originals, prior, points, val_points, key, latent_mask):
        """A run's figures' arrays, and its validation digits' latent means (active units).

        The figures': reconstructions, decoded prior draws, the test digits' latent means.
        """
        base = jax.random.wrap_key_data(key)
        eps = self.unit_noise(base, (originals.shape[0],))
        z, _, _ = self._sample(params, originals, eps, latent_mask)
        means, _ = self._posterior(params, points)
        val_means, _ = self._posterior(params, val_points)
        return self._decode(params, z), self._decode(params, prior), means, val_means


@functools.lru_cache(maxsize=_PROGRAMS_KEPT)
def program(
    pixels: int, hidden: int, latent: int, resample_pixels: bool, iw_samples: int
) -> Program:
    """The program for groups of these sizes and settings, made once per process.

    Later groups of the same shapes (a sweep split by memory, a relaunch, tests) reuse its
    traced and compiled functions.
    """
    return Program(pixels, hidden, latent, resample_pixels, iw_samples)


def even_batch(n: int, limit: int) -> int:
    """The largest batch of at most `limit` that divides n; `limit` when none is near.

    One compiled program then covers every batch (a smaller last batch needs its own).
    """
    for size in range(min(limit, n), max(limit // 4, 1) - 1, -1):
        if n % size == 0:
            return size
    return min(limit, n)


def _batches(rows: np.ndarray, batch: int) -> list[np.ndarray]:
    """Rows (members x n) as at most two arrays (members x steps x batch).

    The full batches, then the last, smaller one (`batches.equal_batches`).
    """
    n = rows.shape[1]
    return [
        rows[:, start:stop].reshape(rows.shape[0], count, -1)
        for start, stop, count in equal_batches(0, math.ceil(n / batch), batch, n)
    ]


class _Members:
    """Each member's own values, by its index in the group, whatever lanes it is laid out on.

    Its Keras model (built from its seed, as a solo run builds it), its padded initial
    weights and optimiser state (or those of its checkpoint), its masks, loss weights, key and
    its epochs' orders (each computed when its epoch comes: `batches.EpochOrders`).
    """

    def __init__(self, program: Program, jobs: Sequence[Job], train_rows: np.ndarray):
        self.program, self.jobs = program, jobs
        self.shapes = _shapes(program.pixels, program.hidden, program.latent)
        self.models, self.params, self.opt_state = [], [], []
        fresh = program.optimizer_state([job.learning_rate for job in jobs])
        for i, job in enumerate(jobs):
            keras.utils.set_random_seed(job.seed)  # as a solo run seeds before it builds
            model = build_vae(
                job.architecture,
                program.pixels,
                job.intermediate_dim,
                job.latent_dim,
                job.seed,
                job.loss,
            )
            self.models.append(model)
            if job.start is None:
                weights = dense_weights(model)
                self.params.append([_pad(w, s) for w, s in zip(weights, self.shapes, strict=True)])
                self.opt_state.append([np.asarray(v[i]) for v in fresh])
            else:
                params, opt_state = self._padded(job, job.start.arrays)
                self.params.append(params)
                self.opt_state.append(opt_state)
        self.masks = [_masks(program.pixels, program.hidden, program.latent, job) for job in jobs]
        self.losses = [job.loss.weights() for job in jobs]
        self.keys = [jax.random.key_data(jax.random.key(job.seed)) for job in jobs]
        self.train_rows = train_rows
        n = len(train_rows)
        self.orders = [epoch_orders(n, job.epochs, job.seed, job.shuffle) for job in jobs]

    def consts(self, members: Sequence[int]) -> dict:
        """The members' masks and loss weights, stacked in the order given (one per lane)."""
        masks = [self.masks[i] for i in members]
        losses = [self.losses[i] for i in members]
        return {
            "latent_mask": _stack([mask[_LATENT_BIAS] for mask in masks]),
            "gradient_masks": [_stack(arrays) for arrays in zip(*masks, strict=True)],
            "loss": {
                f: jnp.asarray([getattr(w, f) for w in losses], jnp.float32) for f in _LOSS_FIELDS
            },
        }

    def own_shapes(self, i: int) -> list[tuple[int, ...]]:
        job = self.jobs[i]
        return _shapes(self.program.pixels, job.intermediate_dim, job.latent_dim)

    def _optimizer_shapes(self, params: list[tuple[int, ...]]) -> list[tuple[int, ...] | None]:
        """The shape of each of Adam's arrays (None: a scalar): a moment per weight array."""
        return [None, None] + [shape for shape in params for _ in (0, 1)]

    def saved_state(self, i: int, params: list, opt_state: list) -> dict[str, np.ndarray]:
        """Member i's state as a checkpoint holds it: cropped to its own sizes, by position."""
        shapes = self.own_shapes(i)
        arrays = {
            f"params/{k:02d}": _crop(w, s)
            for k, (w, s) in enumerate(zip(params, shapes, strict=True))
        }
        for k, (value, shape) in enumerate(
            zip(opt_state, self._optimizer_shapes(shapes), strict=True)
        ):
            arrays[f"optimizer/{k:02d}"] = (
                np.asarray(value) if shape is None else _crop(value, shape)
            )
        return arrays

    def _padded(self, job: Job, arrays: dict[str, np.ndarray]) -> tuple[list, list]:
        """A checkpoint's state padded to this group's sizes (zero weights, zero moments)."""
        params = [_pad(arrays[f"params/{k:02d}"], s) for k, s in enumerate(self.shapes)]
        opt_shapes = self._optimizer_shapes(self.shapes)
        opt_state = [
            np.asarray(arrays[f"optimizer/{k:02d}"]) if shape is None
            else _pad(arrays[f"optimizer/{k:02d}"], shape)
            for k, shape in enumerate(opt_shapes)
        ]  # fmt: skip
        return params, opt_state

    def rows_for(self, members: Sequence[int], epochs: Sequence[int]) -> np.ndarray:
        """Each member's training rows for its epoch (its last one once it has stopped)."""
        return np.stack(
            [
                self.train_rows[self.orders[i][min(e, len(self.orders[i])) - 1]]
                for i, e in zip(members, epochs, strict=True)
            ]
        )


class _Lanes:
    """Members laid out over the devices.

    The member axis is sharded across every device (both cores of a CPU run as two host
    devices; several GPUs share a group), and padded with idle copies to a multiple of the
    device count.
    """

    def __init__(self, count: int):
        devices = jax.devices()
        self.count = count
        self.size = -(-count // len(devices)) * len(devices)
        mesh = Mesh(np.array(devices), ("members",))
        self.split = NamedSharding(mesh, PartitionSpec("members"))
        self.whole = NamedSharding(mesh, PartitionSpec())

    def indices(self, indices: Sequence[int]) -> np.ndarray:
        """The member indices padded to the lane count with copies of the first."""
        return np.asarray(list(indices) + [indices[0]] * (self.size - len(indices)))

    def put(self, tree):
        return jax.device_put(tree, self.split)

    def share(self, array) -> jax.Array:
        return jax.device_put(jnp.asarray(array), self.whole)

    def rows(self, rows: np.ndarray) -> jax.Array:
        """Per-member rows (lanes x ...) as the program takes them."""
        return self.put(jnp.asarray(rows, jnp.int32))


@dataclass(frozen=True)
class _Shared:
    """What every member of a group shares (`rules.packing.SHARED` made sure of it)."""

    batch_size: int
    resample_pixels: bool
    n_images: int
    n_latent_points: int
    iw_samples: int  # the largest K of the group (0: none asked for one)

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> _Shared:
        first = jobs[0]
        return cls(
            first.batch_size,
            first.resample_pixels,
            first.n_images,
            first.n_latent_points,
            max(job.iw_samples for job in jobs),
        )


class _LaidOut:
    """Some members of a group laid out on the devices, with their current state.

    Lane j holds member `members[j]` (the lanes beyond the members repeat the first, idle).
    Laid out afresh, with only the members still training, when enough have left (`shrunk`).
    """

    def __init__(
        self,
        registry: _Members,
        members: Sequence[int],
        params: Sequence[list],
        opt_state: Sequence[list],
        data: Pools,
        shared: _Shared,
        pools: tuple | None = None,
    ):
        self.registry, self.program = registry, registry.program
        self.lanes = _Lanes(len(members))
        self.members = [int(i) for i in self.lanes.indices(list(members))]
        lanes, rows = self.lanes, list(range(len(members))) + [0] * (self.lanes.size - len(members))
        self.params = lanes.put(
            [_stack([params[r][k] for r in rows]) for k in range(len(params[0]))]
        )
        self.opt_state = lanes.put(
            [_stack([opt_state[r][k] for r in rows]) for k in range(len(opt_state[0]))]
        )
        self.consts = lanes.put(registry.consts(self.members))
        self.key_data = _stack([registry.keys[i] for i in self.members])
        self.keys = lanes.put(self.key_data)
        if pools is None:
            train_pool = lanes.share(data.train_pool)
            same = data.val_pool is data.train_pool  # no binarised copy: one pool on the device
            pools = (train_pool, train_pool if same else lanes.share(data.val_pool))
        self.pools = pools
        val_rows = np.stack([data.val_rows] * lanes.size)
        self.val_rows = _batches(val_rows, even_batch(val_rows.shape[1], EVAL_BATCH))
        self.batch_size = shared.batch_size

    def train_epoch(self, epochs: np.ndarray, active: np.ndarray) -> np.ndarray:
        """One epoch of each active lane, at its member's own epoch; each lane's loss sums."""
        sums, first_step = np.zeros((self.lanes.size, len(TERMS))), 0
        on, epoch = self.lanes.put(active), self.lanes.rows(epochs)
        for rows in _batches(self.registry.rows_for(self.members, epochs), self.batch_size):
            self.params, self.opt_state, part = self.program.train_epoch(
                self.params, self.opt_state, self.lanes.rows(rows), epoch, first_step,
                self.keys, self.consts, on, self.pools[0],
            )  # fmt: skip
            sums += np.asarray(part)
            first_step += rows.shape[1]
        return sums

    def validate(self, epochs: np.ndarray) -> np.ndarray:
        """Each lane's summed loss terms over its validation digits, at its member's epoch."""
        keys = self.lanes.put(_fold(self.key_data, Stream.EVAL, epochs))
        return sum(
            np.asarray(
                self.program.evaluate(
                    self.params, self.lanes.rows(rows), keys, self.consts, self.pools[1]
                )
            )
            for rows in self.val_rows
        )

    def host_state(self) -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
        """Each lane's current (padded) weights and optimiser state, on the host."""
        params, opt_state = (
            [np.asarray(p) for p in self.params],
            [np.asarray(o) for o in self.opt_state],
        )
        return (
            [[p[j] for p in params] for j in range(self.lanes.size)],
            [[o[j] for o in opt_state] for j in range(self.lanes.size)],
        )

    def shrunk(self, keep: Sequence[int], data: Pools, shared: _Shared) -> _LaidOut:
        """The members in `keep` (lanes), laid out alone with their current state."""
        params, opt_state = self.host_state()
        return _LaidOut(
            self.registry,
            [self.members[j] for j in keep],
            [params[j] for j in keep],
            [opt_state[j] for j in keep],
            data,
            shared,
            self.pools,
        )


class _Roster:
    """Each member's epoch, history and fate: training, done (its weights kept), or not."""

    def __init__(self, jobs: Sequence[Job], data: Pools, events: Events):
        self.jobs, self.events = jobs, events
        self.n, self.n_val = len(data.train_rows), len(data.val_rows)
        self.epoch = [job.start.epoch if job.start else 0 for job in jobs]  # the last done
        self.history = [
            {k: list(v) for k, v in job.start.history.items()} if job.start else {} for job in jobs
        ]
        self.training = {i for i, job in enumerate(jobs) if self.epoch[i] < job.epochs}
        self.final: dict[int, list[np.ndarray]] = {}  # weights at each member's last epoch
        for i in set(range(len(jobs))) - self.training:  # resumed at their last epoch
            self.final[i] = None

    def round_ended(self, group: _LaidOut, train, val, seconds: float) -> None:
        """Each member's epoch reported (or its failure), its state saved when due.

        Then the members told to stop leave, and those at their last epoch keep their
        weights. Every member's numbers are reported before any is asked whether to stop, so that a
        pruner compares each with all of the group's at that epoch.
        """
        lanes = [j for j, i in enumerate(group.members[: group.lanes.count]) if i in self.training]
        trained = len(lanes)
        host = group.host_state() if self._needs_host(group, lanes) else None
        reported = []
        for j in lanes:
            i = group.members[j]
            epoch = self.epoch[i] + 1
            values = epoch_metrics(
                dict(zip(TERMS, train[j] / self.n, strict=True)),
                dict(zip(TERMS, val[j] / self.n_val, strict=True)),
                seconds,
            )
            # The group's wall time, named as such: not this member's own epoch time.
            values[metrics.GROUP_EPOCH_SECONDS] = values.pop(metrics.EPOCH_SECONDS)
            values[metrics.EPOCH_SECONDS_PER_MODEL] = seconds / trained
            self.epoch[i] = epoch
            if message := non_finite_message(epoch, values):
                self.training.discard(i)
                self.events.job_failed(i, epoch, NonFiniteLossError(message))
                continue
            for name, value in values.items():
                self.history[i].setdefault(name, []).append(value)
            self.events.epoch_ended(i, epoch, values)
            if self.jobs[i].saves_at(epoch):
                state = group.registry.saved_state(i, host[0][j], host[1][j])
                history = {k: list(v) for k, v in self.history[i].items()}
                self.events.saved(i, Checkpoint(epoch, PackedEngine.name, state, history))
            reported.append((i, j, epoch))
        for i, j, epoch in reported:
            if epoch < self.jobs[i].epochs and self.events.should_stop(i, epoch):
                self.training.discard(i)
                self.events.job_stopped(i, epoch)
            elif epoch == self.jobs[i].epochs:
                self.training.discard(i)
                self.final[i] = (host or group.host_state())[0][j]

    def _needs_host(self, group: _LaidOut, lanes: Sequence[int]) -> bool:
        """Whether a member saves or ends this round: its state is then read off the device."""
        for j in lanes:
            i = group.members[j]
            epoch = self.epoch[i] + 1
            if self.jobs[i].saves_at(epoch) or epoch == self.jobs[i].epochs:
                return True
        return False


@dataclass
class Timing:
    """Where a group's time went, in seconds (compilation included where it happens)."""

    setup: float = 0.0  # building each member's model and the program
    training: float = 0.0  # epochs, with their validation passes
    evaluation: float = 0.0  # test metrics, importance sampling, pictures


class PackedEngine:
    """Trains a group of jobs as one vmapped program (see the module docstring)."""

    name = "packed"

    def __init__(self) -> None:
        self.timing = Timing()  # summed over the groups it trains

    def device(self) -> str:
        return backend.device_name()

    def train(self, jobs: Sequence[Job], data: Pools, events: Events) -> None:
        """Train every job; report each epoch, each failure and each finished job.

        Round by round, every member still training does its own next epoch (a resumed one
        starts after its checkpoint's). Once a quarter or more of the laid-out members have
        left (finished, stopped, failed), the rest are laid out again on fewer lanes: a member
        that is done stops costing compute.
        """
        started = time.perf_counter()
        shared = _Shared.of(jobs)
        hidden = max(job.intermediate_dim for job in jobs)
        latent = max(job.latent_dim for job in jobs)
        pixels = data.train_pool.shape[1]
        prog = program(pixels, hidden, latent, shared.resample_pixels, shared.iw_samples)
        registry = _Members(prog, jobs, data.train_rows)
        roster = _Roster(jobs, data, events)
        members = sorted(roster.training)
        group = None
        if members:
            group = _LaidOut(
                registry, members, [registry.params[i] for i in members],
                [registry.opt_state[i] for i in members], data, shared,
            )  # fmt: skip
        self.timing.setup += time.perf_counter() - started
        while group is not None and roster.training:
            count = group.lanes.count
            start = time.perf_counter()
            epochs = np.asarray([roster.epoch[i] + 1 for i in group.members])
            active = np.asarray(
                [j < count and i in roster.training for j, i in enumerate(group.members)]
            )
            train, val = group.train_epoch(epochs, active), group.validate(epochs)
            seconds = time.perf_counter() - start
            self.timing.training += seconds
            trained = int(active.sum())
            roster.round_ended(group, train, val, seconds)
            log.info(
                "packed round: %d models on %d lanes at epochs %d-%d in %.1f s (%.3f s per model)",
                trained, group.lanes.size, epochs[active].min(), epochs[active].max(), seconds,
                seconds / max(trained, 1),
            )  # fmt: skip
            left = [j for j in range(count) if group.members[j] in roster.training]
            if left and len(left) <= count * _SHRINK_AT:
                group = group.shrunk(left, data, shared)
        done = {i: w for i, w in roster.final.items() if w is not None}
        for i in [i for i, w in roster.final.items() if w is None]:  # resumed after training
            done[i] = registry.params[i]
        if done:
            started = time.perf_counter()
            _evaluate(registry, jobs, data, shared, roster, done, events)
            self.timing.evaluation += time.perf_counter() - started


class _Finished:
    """The members that finished, laid out afresh with their final weights for evaluation."""

    def __init__(
        self, registry: _Members, final: dict[int, list[np.ndarray]], data: Pools, shared: _Shared
    ):
        self.done = sorted(final)
        self.lanes = _Lanes(len(self.done))
        self.slots = self.lanes.indices(self.done)
        self.program, self.data, self.shared = registry.program, data, shared
        stacked = [_stack(arrays) for arrays in zip(*(final[i] for i in self.slots), strict=True)]
        self.params = self.lanes.put(stacked)
        self.consts = self.lanes.put(registry.consts(self.slots))
        self.keys = _stack([registry.keys[i] for i in self.slots])
        self.test = self.lanes.share(data.x_test)

    def _test_rows(self, limit: int) -> list[np.ndarray]:
        n = len(self.data.x_test)
        return _batches(np.arange(n)[None], even_batch(n, limit))

    def test_means(self) -> np.ndarray:
        """Each lane's mean loss terms over the test digits."""
        keys = self.lanes.put(_fold(self.keys, Stream.EVAL, 0))
        lanes = self.lanes.size
        totals = sum(
            np.asarray(
                self.program.evaluate(
                    self.params,
                    self.lanes.rows(np.repeat(rows, lanes, axis=0)),
                    keys,
                    self.consts,
                    self.test,
                )
            )  # fmt: skip
            for rows in self._test_rows(EVAL_BATCH)
        )
        return totals / len(self.data.x_test)

    def iw_bounds(self) -> np.ndarray:
        """Each lane's importance-weighted estimate of -log p(x), averaged over test digits."""
        keys = self.lanes.put(_fold(self.keys, Stream.IW))
        parts = [
            np.asarray(
                self.program.importance(
                    self.params,
                    self.lanes.share(jnp.asarray(rows[0], jnp.int32)),
                    keys,
                    self.consts["latent_mask"],
                    self.test,
                )
            )  # fmt: skip
            for rows in self._test_rows(self.program.iw.digits)
        ]
        return np.concatenate(parts, axis=1).mean(axis=1)

    def pictures(self, jobs: Sequence[Job]) -> list[tuple[Pictures, np.ndarray]]:
        """Each finished member's figures' arrays and validation latent means, as `done`."""
        d, shared = self.data, self.shared
        originals, points = (
            d.x_test[: shared.n_images],
            d.x_test[: min(shared.n_latent_points, len(d.x_test))],
        )
        val_points = d.val_pool[d.val_rows[: shared.n_latent_points]]
        prior = [
            _prior(jobs[i].seed, shared.n_images, jobs[i].latent_dim, self.program.latent)
            for i in self.slots
        ]
        reconstructions, samples, means, val_means = (
            np.asarray(a)
            for a in self.program.pictures(
                self.params,
                self.lanes.share(originals),
                self.lanes.put(_stack(prior)),
                self.lanes.share(points),
                self.lanes.share(val_points),
                self.lanes.put(_fold(self.keys, Stream.PICTURES)),
                self.consts["latent_mask"],
            )  # fmt: skip
        )
        return [
            (
                Pictures(
                    originals=originals,
                    reconstructions=reconstructions[slot],
                    prior_samples=samples[slot],
                    z_mean=means[slot][:, : jobs[i].latent_dim],
                    labels=d.y_test[: len(points)],
                ),
                val_means[slot][:, : jobs[i].latent_dim],
            )
            for slot, i in enumerate(self.done)
        ]


def _evaluate(
    registry: _Members,
    jobs: Sequence[Job],
    data: Pools,
    shared: _Shared,
    roster: _Roster,
    final: dict[int, list[np.ndarray]],
    events: Events,
) -> None:
    """Everything measured after training, for every finished member, at its last epoch.

    Test metrics, the importance-weighted estimate and the pictures, in vmapped calls; then
    each member's own Keras model is given its weights and the member is reported finished.
    """
    finished = _Finished(registry, final, data, shared)
    test = finished.test_means()
    iw = finished.iw_bounds() if shared.iw_samples > 0 else None
    for slot, (i, (pictures, val_z_mean)) in enumerate(
        zip(finished.done, finished.pictures(jobs), strict=True)
    ):
        job, model = jobs[i], registry.models[i]
        shapes = registry.own_shapes(i)
        set_dense_weights(model, [_crop(w, s) for w, s in zip(final[i], shapes, strict=True)])
        outcome = Outcome(
            history=roster.history[i],
            test=dict(zip(TERMS, map(float, test[slot]), strict=True)),
            iw_estimate=None if iw is None or job.iw_samples == 0 else float(iw[slot]),
            pictures=pictures,
            val_z_mean=val_z_mean,
            model=model,
        )
        events.job_finished(i, outcome)


def _prior(seed: int, count: int, latent_dim: int, padded: int) -> np.ndarray:
    """The prior draws a solo run decodes for its samples figure, padded with zeros."""
    draws = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype("float32")
    return _pad(draws, (count, padded))
