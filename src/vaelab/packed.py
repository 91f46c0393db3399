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
  noise does not depend on how far the group pads;
- epochs: the group trains to its longest; a member stops updating after its own last epoch
  (its weights are kept there) and its results are taken at that point;
- failures: a member whose loss turns NaN or inf stops updating, and only it fails.

Needs the JAX backend. Knows nothing of MLflow or Hydra: it takes plain arrays and settings
and reports through callbacks.
"""

from __future__ import annotations

import logging
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
    negative_log_mean_exp,
    vae_loss_terms,
)
from vaelab.models import build_vae, dense_weights, set_dense_weights
from vaelab.packing import EVAL_BATCH, IW_BATCH
from vaelab.plots import Pictures

log = logging.getLogger(__name__)

TERMS = metrics.TERMS
# Folded into a member's key to give each use of randomness its own stream.
_NOISE, _PIXELS, _EVAL, _IW, _PICTURES = 0, 1, 2, 3, 4


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
    model: keras.Model | None = None
    failure: str | None = None


EpochCallback = Callable[[int, int, dict[str, float]], None]  # member, epoch, metrics
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
    """The compiled, vmapped functions of one group.

    A template model at the group's sizes, called statelessly with each member's own
    weights, and one Keras Adam applied statelessly with each member's own state.
    """

    def __init__(self, pixels: int, hidden: int, latent: int, data: Data, first: Member):
        self.pixels, self.hidden, self.latent, self.data = pixels, hidden, latent, data
        template = build_vae("subclass", pixels, hidden, latent, 0, first.loss)
        self.encoder, self.decoder = template.encoder, template.decoder
        self.encoder_state = [v.value for v in self.encoder.non_trainable_variables]
        self.optimizer = keras.optimizers.Adam(learning_rate=first.learning_rate)
        self.optimizer.build(template.trainable_variables)
        self.train_epoch = jax.jit(
            jax.vmap(self._member_epoch, in_axes=(0, 0, 0, None, None, 0, 0, 0, None))
        )
        self.evaluate = jax.jit(jax.vmap(self._member_eval, in_axes=(0, 0, 0, 0, None)))
        self.importance = jax.jit(jax.vmap(self._member_iw, in_axes=(0, None, 0, 0)))
        self.pictures = jax.jit(jax.vmap(self._member_pictures, in_axes=(0, None, 0, None, 0, 0)))

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

    def _sample(self, params, x, key, latent_mask, samples: tuple[int, ...] = ()):
        """Z ~ q(z|x) for one member; unit j's noise comes from the key folded with j."""
        (z_mean, z_log_var, _), _ = self.encoder.stateless_call(params[:6], self.encoder_state, x)
        unit_keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(self.latent))
        shape = (*samples, x.shape[0])
        eps = jnp.moveaxis(jax.vmap(lambda k: jax.random.normal(k, shape))(unit_keys), 0, -1)
        z = (z_mean + jnp.exp(0.5 * z_log_var) * eps) * latent_mask
        return z, z_mean, z_log_var

    def _decode(self, params, z):
        return self.decoder.stateless_call(params[6:], [], z)[0]

    def _terms(self, params, x, key, consts):
        z, z_mean, z_log_var = self._sample(params, x, key, consts["latent_mask"])
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
            terms = self._terms(p, x, jax.random.fold_in(noise, step_number), consts)
            return terms["total"], terms

        def step(carry, xs):
            p, o = carry
            batch_rows, step_number = xs
            x = pool[batch_rows]
            if self.data.resample_pixels:
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

        def step(total, xs):
            batch_rows, step_number = xs
            x = pool[batch_rows]
            terms = self._terms(params, x, jax.random.fold_in(base, step_number), consts)
            return total + jnp.stack([terms[t] for t in TERMS]) * x.shape[0], None

        numbers = jnp.arange(rows.shape[0])
        total, _ = jax.lax.scan(step, jnp.zeros(len(TERMS)), (rows, numbers))
        return total

    def _member_iw(self, params, batches, key, latent_mask):
        """-log p(x) by importance sampling for every digit of `batches` (steps x digits)."""
        base = jax.random.wrap_key_data(key)

        def step(_, xs):
            xb, step_number = xs
            k = self.data.iw_samples
            z, z_mean, z_log_var = self._sample(
                params, xb, jax.random.fold_in(base, step_number), latent_mask, (k,)
            )
            x_hat = self._decode(params, z.reshape(-1, self.latent)).reshape(k, xb.shape[0], -1)
            log_w = log_importance_weights(xb, x_hat, z, z_mean, z_log_var, latent_mask)
            return None, negative_log_mean_exp(log_w)

        _, per_digit = jax.lax.scan(step, None, (batches, jnp.arange(batches.shape[0])))
        return per_digit.reshape(-1)

    def _member_pictures(self, params, originals, prior, points, key, latent_mask):
        """Reconstructions, decoded prior draws and latent means: a run's figures' arrays."""
        base = jax.random.wrap_key_data(key)
        z, _, _ = self._sample(params, originals, base, latent_mask)
        (means, _, _), _ = self.encoder.stateless_call(params[:6], self.encoder_state, points)
        return self._decode(params, z), self._decode(params, prior), means


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

    The full batches, then the last, smaller one.
    """
    n = rows.shape[1]
    full = n // batch
    parts = [rows[:, : full * batch].reshape(rows.shape[0], full, batch)] if full else []
    if n % batch:
        parts.append(rows[:, full * batch :][:, None, :])
    return parts


def _image_batches(x: np.ndarray, batch: int) -> list[np.ndarray]:
    """Images (n x pixels) as at most two arrays (steps x batch x pixels)."""
    full = len(x) // batch
    parts = [x[: full * batch].reshape(full, batch, -1)] if full else []
    if len(x) % batch:
        parts.append(x[full * batch :][None])
    return parts


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

    def subset(self, indices: Sequence[int], params: list) -> tuple[list, dict, jnp.ndarray]:
        pick = np.asarray(indices)
        consts = jax.tree.map(lambda a: a[pick], self.consts)
        return [p[pick] for p in params], consts, self.keys[pick]


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


@dataclass
class Timing:
    """Where a group's time went, in seconds (compilation included where it happens)."""

    setup: float = 0.0  # building each member's model and the program
    training: float = 0.0  # epochs, with their validation passes
    evaluation: float = 0.0  # test metrics, importance sampling, pictures


def train_group(
    members: Sequence[Member],
    data: Data,
    on_epoch: EpochCallback,
    on_failure: FailureCallback,
    timing: Timing | None = None,
) -> list[Result]:
    """Train every member; report each epoch and each failure as it happens."""
    timing = timing if timing is not None else Timing()
    started = time.perf_counter()
    lanes = _Lanes(len(members))
    laid_out = [members[i] for i in lanes.indices(range(len(members)))]
    pixels = data.train_pool.shape[1]
    hidden = max(m.intermediate_dim for m in members)
    latent = max(m.latent_dim for m in members)
    program = Program(pixels, hidden, latent, data, members[0])
    state = _Members(program, laid_out)
    params, opt_state = lanes.put(state.params), lanes.put(state.state)
    consts, keys = lanes.put(state.consts), lanes.put(state.keys)
    results = [Result() for _ in members]
    active = np.arange(lanes.size) < len(members)  # the padding lanes never train
    final: dict[int, list[np.ndarray]] = {}
    train_pool, val_pool = lanes.share(data.train_pool), lanes.share(data.val_pool)
    val_rows = _batches(
        np.stack([m.val_rows for m in laid_out]), even_batch(len(members[0].val_rows), EVAL_BATCH)
    )
    n, n_val = len(members[0].train_rows), len(members[0].val_rows)
    longest = max(m.epochs for m in members)
    timing.setup += time.perf_counter() - started
    for epoch in range(1, longest + 1):
        start = time.perf_counter()
        sums, first_step = np.zeros((lanes.size, len(TERMS))), 0
        for rows in _batches(state.rows_for(epoch), data.batch_size):
            params, opt_state, part = program.train_epoch(
                params, opt_state, lanes.put(jnp.asarray(rows, jnp.int32)), epoch, first_step,
                keys, consts, lanes.put(jnp.asarray(active)), train_pool,
            )  # fmt: skip
            sums += np.asarray(part)
            first_step += rows.shape[1]
        eval_keys = lanes.put(_fold(state.keys, _EVAL, epoch))
        val = sum(
            np.asarray(
                program.evaluate(
                    params, lanes.put(jnp.asarray(r, jnp.int32)), eval_keys, consts, val_pool
                )
            )
            for r in val_rows
        )
        seconds = time.perf_counter() - start
        timing.training += seconds
        trained = int(active.sum())
        for i, m in enumerate(members):
            if not active[i]:
                continue
            values = training.epoch_metrics(
                dict(zip(TERMS, sums[i] / n, strict=True)),
                dict(zip(TERMS, val[i] / n_val, strict=True)),
                seconds,
            )
            values[metrics.EPOCH_SECONDS_PER_MODEL] = seconds / trained
            message = training.non_finite_message(epoch, values)
            if message:
                active[i] = False
                results[i].failure = message
                on_failure(i, epoch, message)
                continue
            for name, value in values.items():
                results[i].history.setdefault(name, []).append(value)
            on_epoch(i, epoch, values)
            if epoch == m.epochs:
                active[i] = False
                final[i] = [host[i] for host in (np.asarray(p) for p in params)]
        log.info(
            "packed epoch %d/%d: %d models in %.1f s (%.3f s per model)",
            epoch, longest, trained, seconds, seconds / max(trained, 1),
        )  # fmt: skip
        if not active.any():
            break
    if final:
        started = time.perf_counter()
        _evaluate(program, state, members, data, final, results)
        timing.evaluation += time.perf_counter() - started
    return results


def _evaluate(
    program: Program,
    state: _Members,
    members: Sequence[Member],
    data: Data,
    final: dict[int, list[np.ndarray]],
    results: list[Result],
) -> None:
    """Everything measured after training, for every finished member, at its last epoch.

    Test metrics, the importance-weighted estimate and the pictures, in vmapped calls; then
    the member's own Keras model is given those weights.
    """
    done = sorted(final)
    lanes = _Lanes(len(done))
    slots = lanes.indices(done)
    params = lanes.put([_stack(arrays) for arrays in zip(*(final[i] for i in slots), strict=True)])
    consts = lanes.put(jax.tree.map(lambda a: a[slots], state.consts))
    keys = state.keys[slots]
    test = lanes.share(data.x_test)
    rows = _batches(
        np.tile(np.arange(len(data.x_test)), (lanes.size, 1)),
        even_batch(len(data.x_test), EVAL_BATCH),
    )
    eval_keys = lanes.put(_fold(keys, _EVAL, 0))
    totals = sum(
        np.asarray(
            program.evaluate(params, lanes.put(jnp.asarray(r, jnp.int32)), eval_keys, consts, test)
        )
        for r in rows
    )
    test_means = totals / len(data.x_test)
    iw = None
    if data.iw_samples > 0:
        parts = [
            np.asarray(
                program.importance(
                    params,
                    lanes.share(batches),
                    lanes.put(_fold(keys, _IW, k)),
                    consts["latent_mask"],
                )
            )  # fmt: skip
            for k, batches in enumerate(
                _image_batches(data.x_test, even_batch(len(data.x_test), IW_BATCH))
            )
        ]
        iw = np.concatenate(parts, axis=1).mean(axis=1)
    originals = data.x_test[: data.n_images]
    points = data.x_test[: min(data.n_latent_points, len(data.x_test))]
    prior = lanes.put(
        _stack(
            [
                _prior(members[i].seed, data.n_images, members[i].latent_dim, program.latent)
                for i in slots
            ]
        )
    )
    reconstructions, samples, means = (
        np.asarray(a)
        for a in program.pictures(
            params,
            lanes.share(originals),
            prior,
            lanes.share(points),
            lanes.put(_fold(keys, _PICTURES)),
            consts["latent_mask"],
        )  # fmt: skip
    )
    for slot, i in enumerate(done):
        m = members[i]
        results[i].test = dict(zip(TERMS, map(float, test_means[slot]), strict=True))
        results[i].iw_bound = None if iw is None else float(iw[slot])
        results[i].pictures = Pictures(
            originals=originals,
            reconstructions=reconstructions[slot],
            prior_samples=samples[slot],
            z_mean=means[slot][:, : m.latent_dim],
            labels=data.y_test[: len(points)],
        )
        shapes = _shapes(program.pixels, m.intermediate_dim, m.latent_dim)
        weights = [_crop(w, s) for w, s in zip(final[i], shapes, strict=True)]
        set_dense_weights(state.models[i], weights)
        results[i].model = state.models[i]


def _prior(seed: int, count: int, latent_dim: int, padded: int) -> np.ndarray:
    """The prior draws a solo run decodes for its samples figure, padded with zeros."""
    draws = np.random.default_rng(seed).standard_normal((count, latent_dim)).astype("float32")
    return _pad(draws, (count, padded))
