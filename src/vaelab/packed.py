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
- randomness: the data order is the member's `training.epoch_orders`; sampling noise comes
  from the member's key folded with the epoch, the step and the unit's index, so unit j's
  noise does not depend on how far the group pads; in evaluation, with the digit's index
  too, so that it does not depend on how the digits are batched either;
- epochs: the group trains to its longest; a member stops updating after its own last epoch
  (its weights are kept there) and its results are taken at that point;
- failures: a member whose loss turns NaN or inf stops updating, and only it fails.

Needs the JAX backend. Knows nothing of MLflow or Hydra: it takes plain arrays and settings
and reports through callbacks.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vaelab import metrics, training
from vaelab.losses import (
    LossSpec,
    LossWeights,
    log_importance_weights,
    vae_loss_terms,
)
from vaelab.models import build_subclass_vae, build_vae, dense_weights, set_dense_weights
from vaelab.packing import EVAL_BATCH, iw_layout
from vaelab.plots import Pictures

log = logging.getLogger(__name__)

TERMS = metrics.TERMS
# Folded into a member's key to give each use of randomness its own stream.
_NOISE, _PIXELS, _EVAL, _IW, _PICTURES = 0, 1, 2, 3, 4
# Compiled programs kept in this process, one per group shape (see `program`).
_PROGRAMS_KEPT = 4


@dataclass(frozen=True)
class Member:
    """One configuration of a packed group, in plain values."""

    architecture: str  # "functional" | "subclass" (the custom loop trains the subclass model)
    intermediate_dim: int
    latent_dim: int
    seed: int
    epochs: int
    learning_rate: float
    loss: LossSpec
    shuffle: bool
    train_rows: np.ndarray  # rows of Data.train_pool it trains on
    val_rows: np.ndarray  # rows of Data.val_pool it is validated on


@dataclass(frozen=True)
class Data:
    """What every member of a group shares."""

    train_pool: np.ndarray  # (N, pixels) float32
    val_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    batch_size: int
    resample_pixels: bool  # dynamic binarisation: new Bernoulli pixels every epoch
    n_images: int
    n_latent_points: int
    iw_samples: int


@dataclass
class Result:
    """What one member ended with; `failure` says why it stopped early, if it did."""

    history: dict[str, list[float]] = field(default_factory=dict)
    test: dict[str, float] = field(default_factory=dict)
    iw_bound: float | None = None
    pictures: Pictures | None = None
    val_z_mean: np.ndarray | None = None  # latent means of validation digits: active units
    model: keras.Model | None = None
    failure: str | None = None


EpochCallback = Callable[[int, dict[int, dict[str, float]]], None]  # epoch, each member's
FailureCallback = Callable[[int, int, str], None]  # member, epoch, message


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


def _masks(pixels: int, hidden: int, latent: int, member: Member) -> list[np.ndarray]:
    """1 where a weight of the padded arrays is the member's own, 0 where it is padding."""
    h = (np.arange(hidden) < member.intermediate_dim).astype(np.float32)
    z = (np.arange(latent) < member.latent_dim).astype(np.float32)
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


def _fold(keys: jnp.ndarray, *numbers: int) -> jnp.ndarray:
    """Each member's key (as key data) folded with the same numbers, in turn."""

    def fold(key_data):
        key = jax.random.wrap_key_data(key_data)
        for number in numbers:
            key = jax.random.fold_in(key, number)
        return jax.random.key_data(key)

    return jax.vmap(fold)(keys)


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
        self.iw = iw_layout(max(iw_samples, 1))
        template = build_subclass_vae(pixels, hidden, latent, seed=0)  # its weights are unused
        self.encoder, self.decoder = template.encoder, template.decoder
        self.encoder_state = [v.value for v in self.encoder.non_trainable_variables]
        self.optimizer = keras.optimizers.Adam()
        self.optimizer.build(template.trainable_variables)
        self.train_epoch = jax.jit(
            jax.vmap(self._member_epoch, in_axes=(0, 0, 0, None, None, 0, 0, 0, None))
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
        (z_mean, z_log_var, _), _ = self.encoder.stateless_call(params[:6], self.encoder_state, x)
        return z_mean, z_log_var

    def _sample(self, params, x, eps, latent_mask):
        """Z ~ q(z|x) for one member from the given noise (padded units: exactly zero)."""
        z_mean, z_log_var = self._posterior(params, x)
        z = (z_mean + jnp.exp(0.5 * z_log_var) * eps) * latent_mask
        return z, z_mean, z_log_var

    def _decode(self, params, z):
        return self.decoder.stateless_call(params[6:], [], z)[0]

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
        noise = jax.random.fold_in(jax.random.fold_in(base, _NOISE), epoch)
        pixels = jax.random.fold_in(jax.random.fold_in(base, _PIXELS), epoch)

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

        In chunks of samples (`packing.iw_layout`) whose log-sum-exps are combined, so that
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

    The full batches, then the last, smaller one (`training.equal_batches`).
    """
    n = rows.shape[1]
    return [
        rows[:, start:stop].reshape(rows.shape[0], count, -1)
        for start, stop, count in training.equal_batches(0, math.ceil(n / batch), batch, n)
    ]


class _Members:
    """The per-member values of a group, stacked for the vmapped calls."""

    def __init__(self, program: Program, members: Sequence[Member]):
        shapes = _shapes(program.pixels, program.hidden, program.latent)
        self.models, weights = [], []
        for m in members:
            keras.utils.set_random_seed(m.seed)  # as a solo run seeds before it builds
            model = build_vae(
                m.architecture, program.pixels, m.intermediate_dim, m.latent_dim, m.seed, m.loss
            )
            self.models.append(model)
            weights.append([_pad(w, s) for w, s in zip(dense_weights(model), shapes, strict=True)])
        self.params = [_stack(arrays) for arrays in zip(*weights, strict=True)]
        self.state = program.optimizer_state([m.learning_rate for m in members])
        masks = [_masks(program.pixels, program.hidden, program.latent, m) for m in members]
        losses = [m.loss.weights() for m in members]
        self.consts = {
            "latent_mask": _stack([mask[3] for mask in masks]),
            "gradient_masks": [_stack(arrays) for arrays in zip(*masks, strict=True)],
            "loss": {
                f: jnp.asarray([getattr(w, f) for w in losses], jnp.float32) for f in _LOSS_FIELDS
            },
        }
        self.keys = _stack([jax.random.key_data(jax.random.key(m.seed)) for m in members])
        n = len(members[0].train_rows)
        self.orders = [
            m.train_rows[training.epoch_orders(n, m.epochs, m.seed, m.shuffle)] for m in members
        ]

    def rows_for(self, epoch: int) -> np.ndarray:
        """Each member's training rows for this epoch (its last one once it has stopped)."""
        return np.stack([order[min(epoch, len(order)) - 1] for order in self.orders])


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


@dataclass
class Timing:
    """Where a group's time went, in seconds (compilation included where it happens)."""

    setup: float = 0.0  # building each member's model and the program
    training: float = 0.0  # epochs, with their validation passes
    evaluation: float = 0.0  # test metrics, importance sampling, pictures


class _Group:
    """A group laid out on the devices: its program, its members' state and its data."""

    def __init__(self, members: Sequence[Member], data: Data):
        self.lanes = _Lanes(len(members))
        laid_out = [members[i] for i in self.lanes.indices(range(len(members)))]
        hidden = max(m.intermediate_dim for m in members)
        latent = max(m.latent_dim for m in members)
        pixels = data.train_pool.shape[1]
        self.program = program(pixels, hidden, latent, data.resample_pixels, data.iw_samples)
        self.state = _Members(self.program, laid_out)
        lanes = self.lanes
        self.params, self.opt_state = lanes.put(self.state.params), lanes.put(self.state.state)
        self.consts, self.keys = lanes.put(self.state.consts), lanes.put(self.state.keys)
        self.train_pool = lanes.share(data.train_pool)
        same = data.val_pool is data.train_pool  # no binarised copy: one pool on the device
        self.val_pool = self.train_pool if same else lanes.share(data.val_pool)
        val_rows = np.stack([m.val_rows for m in laid_out])
        self.val_rows = _batches(val_rows, even_batch(val_rows.shape[1], EVAL_BATCH))
        self.batch_size = data.batch_size

    def train_epoch(self, epoch: int, active: np.ndarray) -> np.ndarray:
        """One epoch for every active member; each lane's summed loss terms."""
        sums, first_step, on = np.zeros((self.lanes.size, len(TERMS))), 0, self.lanes.put(active)
        for rows in _batches(self.state.rows_for(epoch), self.batch_size):
            self.params, self.opt_state, part = self.program.train_epoch(
                self.params, self.opt_state, self.lanes.rows(rows), epoch, first_step,
                self.keys, self.consts, on, self.train_pool,
            )  # fmt: skip
            sums += np.asarray(part)
            first_step += rows.shape[1]
        return sums

    def validate(self, epoch: int) -> np.ndarray:
        """Each lane's summed loss terms over its validation digits."""
        keys = self.lanes.put(_fold(self.state.keys, _EVAL, epoch))
        return sum(
            np.asarray(
                self.program.evaluate(
                    self.params, self.lanes.rows(rows), keys, self.consts, self.val_pool
                )
            )
            for rows in self.val_rows
        )

    def host_weights(self) -> list[np.ndarray]:
        """Every lane's current (padded) weights, on the host: lanes x ... each."""
        return [np.asarray(p) for p in self.params]


class _Progress:
    """What the members have reported: histories, failures, and who still trains."""

    def __init__(self, members: Sequence[Member], lanes: int, on_epoch, on_failure):
        self.members, self.on_epoch, self.on_failure = members, on_epoch, on_failure
        self.results = [Result() for _ in members]
        self.active = np.arange(lanes) < len(members)  # the padding lanes never train
        self.final: dict[int, list[np.ndarray]] = {}  # weights at each member's last epoch

    def epoch_ended(self, group: _Group, epoch: int, train, val, seconds: float) -> None:
        """Report each active member's epoch, or its failure; keep the weights of those done."""
        trained = int(self.active.sum())
        n, n_val = len(self.members[0].train_rows), len(self.members[0].val_rows)
        host = None  # fetched once, when the first member ends
        reported = {}
        for i, m in enumerate(self.members):
            if not self.active[i]:
                continue
            values = training.epoch_metrics(
                dict(zip(TERMS, train[i] / n, strict=True)),
                dict(zip(TERMS, val[i] / n_val, strict=True)),
                seconds,
            )
            # The group's wall time, named as such: not this member's own epoch time.
            values[metrics.GROUP_EPOCH_SECONDS] = values.pop(metrics.EPOCH_SECONDS)
            values[metrics.EPOCH_SECONDS_PER_MODEL] = seconds / trained
            if message := training.non_finite_message(epoch, values):
                self.active[i] = False
                self.results[i].failure = message
                self.on_failure(i, epoch, message)
                continue
            for name, value in values.items():
                self.results[i].history.setdefault(name, []).append(value)
            reported[i] = values
            if epoch == m.epochs:
                self.active[i] = False
                host = host or group.host_weights()
                self.final[i] = [weights[i] for weights in host]
        self.on_epoch(epoch, reported)


def train_group(
    members: Sequence[Member],
    data: Data,
    on_epoch: EpochCallback,
    on_failure: FailureCallback,
    timing: Timing | None = None,
) -> list[Result]:
    """Train every member; report each epoch (all members' at once) and each failure."""
    timing = timing if timing is not None else Timing()
    started = time.perf_counter()
    group = _Group(members, data)
    progress = _Progress(members, group.lanes.size, on_epoch, on_failure)
    timing.setup += time.perf_counter() - started
    longest = max(m.epochs for m in members)
    for epoch in range(1, longest + 1):
        start, trained = time.perf_counter(), int(progress.active.sum())
        train, val = group.train_epoch(epoch, progress.active), group.validate(epoch)
        seconds = time.perf_counter() - start
        timing.training += seconds
        progress.epoch_ended(group, epoch, train, val, seconds)
        log.info(
            "packed epoch %d/%d: %d models in %.1f s (%.3f s per model)",
            epoch, longest, trained, seconds, seconds / max(trained, 1),
        )  # fmt: skip
        if not progress.active.any():
            break
    if progress.final:
        started = time.perf_counter()
        _evaluate(group, members, data, progress.final, progress.results)
        timing.evaluation += time.perf_counter() - started
    return progress.results


class _Finished:
    """The members that finished, laid out afresh with their final weights for evaluation."""

    def __init__(self, group: _Group, final: dict[int, list[np.ndarray]], data: Data):
        self.done = sorted(final)
        self.lanes = _Lanes(len(self.done))
        self.slots = self.lanes.indices(self.done)
        self.program, self.data = group.program, data
        stacked = [_stack(arrays) for arrays in zip(*(final[i] for i in self.slots), strict=True)]
        self.params = self.lanes.put(stacked)
        self.consts = self.lanes.put(jax.tree.map(lambda a: a[self.slots], group.state.consts))
        self.keys = group.state.keys[self.slots]
        self.test = self.lanes.share(data.x_test)

    def _test_rows(self, limit: int) -> list[np.ndarray]:
        n = len(self.data.x_test)
        return _batches(np.arange(n)[None], even_batch(n, limit))

    def test_means(self) -> np.ndarray:
        """Each lane's mean loss terms over the test digits."""
        keys = self.lanes.put(_fold(self.keys, _EVAL, 0))
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
        keys = self.lanes.put(_fold(self.keys, _IW))
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

    def pictures(self, members: Sequence[Member]) -> list[tuple[Pictures, np.ndarray]]:
        """Each finished member's figures' arrays and validation latent means, as `done`."""
        d = self.data
        originals, points = (
            d.x_test[: d.n_images],
            d.x_test[: min(d.n_latent_points, len(d.x_test))],
        )
        val_rows = members[self.done[0]].val_rows[: d.n_latent_points]  # shared by the group
        val_points = d.val_pool[val_rows]
        prior = [
            _prior(members[i].seed, d.n_images, members[i].latent_dim, self.program.latent)
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
                self.lanes.put(_fold(self.keys, _PICTURES)),
                self.consts["latent_mask"],
            )  # fmt: skip
        )
        return [
            (
                Pictures(
                    originals=originals,
                    reconstructions=reconstructions[slot],
                    prior_samples=samples[slot],
                    z_mean=means[slot][:, : members[i].latent_dim],
                    labels=d.y_test[: len(points)],
                ),
                val_means[slot][:, : members[i].latent_dim],
            )
            for slot, i in enumerate(self.done)
        ]


def _evaluate(
    group: _Group,
    members: Sequence[Member],
    data: Data,
    final: dict[int, list[np.ndarray]],
    results: list[Result],
) -> None:
    """Everything measured after training, for every finished member, at its last epoch.

    Test metrics, the importance-weighted estimate and the pictures, in vmapped calls; then
    the member's own Keras model is given those weights.
    """
    finished = _Finished(group, final, data)
    test = finished.test_means()
    iw = finished.iw_bounds() if data.iw_samples > 0 else None
    for slot, (i, (pictures, val_z_mean)) in enumerate(
        zip(finished.done, finished.pictures(members), strict=True)
    ):
        m, result = members[i], results[i]
        result.test = dict(zip(TERMS, map(float, test[slot]), strict=True))
        result.iw_bound = None if iw is None else float(iw[slot])
        result.pictures, result.val_z_mean = pictures, val_z_mean
        shapes = _shapes(group.program.pixels, m.intermediate_dim, m.latent_dim)
        set_dense_weights(
            group.state.models[i], [_crop(w, s) for w, s in zip(final[i], shapes, strict=True)]
        )
        result.model = group.state.models[i]


def _prior(seed: int, count: int, latent_dim: int, padded: int) -> np.ndarray:
    """The prior draws a solo run decodes for its samples figure, padded with zeros."""
    draws = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype("float32")
    return _pad(draws, (count, padded))
