"""Each member's own state, whatever lane it is on: its model, weights, optimiser, checkpoints.

Built as a solo run builds it (its own Keras model from its own seed), padded to the group's
sizes; a checkpoint holds it cropped back to the member's own sizes, so that a group of other
sizes can resume it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import keras
import numpy as np

from vaelab.engines.base import Job
from vaelab.engines.batches import epoch_orders
from vaelab.engines.packed.lanes import stacked
from vaelab.engines.packed.padding import LATENT_BIAS, crop, masks, pad, shapes
from vaelab.engines.packed.program import LOSS_FIELDS, Program
from vaelab.vae.models import build_vae, initial_dense_weights, set_dense_weights


@dataclass(frozen=True)
class Shared:
    """What every member of a group shares (`rules.packing.SHARED` made sure of it)."""

    batch_size: int
    resample_pixels: bool
    n_images: int
    n_latent_points: int
    iw_samples: int  # the largest K of the group (0: none asked for one)

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> Shared:
        first = jobs[0]
        return cls(
            first.batch_size,
            first.resample_pixels,
            first.n_images,
            first.n_latent_points,
            max(job.iw_samples for job in jobs),
        )


class Members:
    """Each member's own values, by its index in the group, whatever lanes it is laid out on.

    Its padded initial weights (those a solo run's model gets from its seed) and optimiser
    state, or those of its checkpoint; its masks, loss weights, key and its epochs' orders
    (each computed when its epoch comes: `batches.EpochOrders`). Its Keras model is built
    once it finishes (`model`).
    """

    def __init__(self, program: Program, jobs: Sequence[Job], train_rows: np.ndarray):
        self.program, self.jobs = program, jobs
        self.shapes = shapes(program.pixels, program.hidden, program.latent)
        self.params, self.opt_state = [], []
        fresh = program.optimizer_state([job.learning_rate for job in jobs])
        for i, job in enumerate(jobs):
            if job.start is None:
                weights = initial_dense_weights(
                    program.pixels, job.intermediate_dim, job.latent_dim, job.seed
                )
                self.params.append([pad(w, s) for w, s in zip(weights, self.shapes, strict=True)])
                self.opt_state.append([np.asarray(v[i]) for v in fresh])
            else:
                params, opt_state = self._padded(job.start.arrays)
                self.params.append(params)
                self.opt_state.append(opt_state)
        self.masks = [masks(program.pixels, program.hidden, program.latent, job) for job in jobs]
        self.losses = [job.loss.weights() for job in jobs]
        self.keys = [jax.random.key_data(jax.random.key(job.seed)) for job in jobs]
        self.train_rows = train_rows
        n = len(train_rows)
        self.orders = [epoch_orders(n, job.epochs, job.seed, job.shuffle) for job in jobs]

    def model(self, i: int, weights: list[np.ndarray]) -> keras.Model:
        """Member i's own Keras model (its style, sizes and seed) holding these weights.

        Built only for a member that finished: a solo run's model, for logging and reruns.
        """
        job = self.jobs[i]
        model = build_vae(
            job.architecture,
            self.program.pixels,
            job.intermediate_dim,
            job.latent_dim,
            job.seed,
            job.loss,
        )
        set_dense_weights(model, self.own_weights(i, weights))
        return model

    def consts(self, members: Sequence[int]) -> dict:
        """The members' masks and loss weights, stacked in the order given (one per lane)."""
        member_masks = [self.masks[i] for i in members]
        losses = [self.losses[i] for i in members]
        return {
            "latent_mask": stacked([mask[LATENT_BIAS] for mask in member_masks]),
            "gradient_masks": [stacked(arrays) for arrays in zip(*member_masks, strict=True)],
            "loss": {
                f: jnp.asarray([getattr(w, f) for w in losses], jnp.float32) for f in LOSS_FIELDS
            },
        }

    def own_shapes(self, i: int) -> list[tuple[int, ...]]:
        job = self.jobs[i]
        return shapes(self.program.pixels, job.intermediate_dim, job.latent_dim)

    def own_weights(self, i: int, params: list[np.ndarray]) -> list[np.ndarray]:
        """Member i's (padded) weights cropped to its own sizes: its Keras model's arrays."""
        return [crop(w, s) for w, s in zip(params, self.own_shapes(i), strict=True)]

    def _optimizer_shapes(self, params: list[tuple[int, ...]]) -> list[tuple[int, ...] | None]:
        """The shape of each of Adam's arrays (None: a scalar): a moment per weight array."""
        return [None, None] + [shape for shape in params for _ in (0, 1)]

    def saved_state(self, i: int, params: list, opt_state: list) -> dict[str, np.ndarray]:
        """Member i's state as a checkpoint holds it: cropped to its own sizes, by position."""
        arrays = {f"params/{k:02d}": w for k, w in enumerate(self.own_weights(i, params))}
        for k, (value, shape) in enumerate(
            zip(opt_state, self._optimizer_shapes(self.own_shapes(i)), strict=True)
        ):
            arrays[f"optimizer/{k:02d}"] = (
                np.asarray(value) if shape is None else crop(value, shape)
            )
        return arrays

    def _padded(self, arrays: dict[str, np.ndarray]) -> tuple[list, list]:
        """A checkpoint's state padded to this group's sizes (zero weights, zero moments)."""
        params = [pad(arrays[f"params/{k:02d}"], s) for k, s in enumerate(self.shapes)]
        opt_shapes = self._optimizer_shapes(self.shapes)
        opt_state = [
            np.asarray(arrays[f"optimizer/{k:02d}"]) if shape is None
            else pad(arrays[f"optimizer/{k:02d}"], shape)
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
