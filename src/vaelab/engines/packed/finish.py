"""What is measured after training, for every finished member at its last epoch, in one program.

Test metrics, the importance-weighted estimate (`vae.importance`, as the solo engine computes
it) and the figures' arrays (the digits and prior draws of `engines.evaluation`), in vmapped
calls; then each member's own Keras model is given its weights and reported finished.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from vaelab.engines.base import Events, Job, Outcome
from vaelab.engines.evaluation import PictureDigits, prior_draws
from vaelab.engines.packed.lanes import Lanes, stacked
from vaelab.engines.packed.layout import even_batch, member_batches
from vaelab.engines.packed.members import Members, Shared
from vaelab.engines.packed.padding import pad
from vaelab.engines.packed.roster import Roster
from vaelab.engines.packed.streams import Stream, fold
from vaelab.vae.data import Pools
from vaelab.vae.models import set_dense_weights
from vaelab.vae.plots import Pictures
from vaelab.vae.sizes import EVAL_BATCH
from vaelab.vocab.metrics import TERMS


class Finished:
    """The members that finished, laid out afresh with their final weights for evaluation."""

    def __init__(
        self, registry: Members, final: dict[int, list[np.ndarray]], data: Pools, shared: Shared
    ):
        self.done = sorted(final)
        self.lanes = Lanes(len(self.done))
        self.slots = self.lanes.indices(self.done)
        self.program, self.data, self.shared = registry.program, data, shared
        arrays = [stacked(arrays) for arrays in zip(*(final[i] for i in self.slots), strict=True)]
        self.params = self.lanes.put(arrays)
        self.consts = self.lanes.put(registry.consts(self.slots))
        self.keys = stacked([registry.keys[i] for i in self.slots])
        self.test = self.lanes.share(data.x_test)

    def _test_rows(self, limit: int) -> list[np.ndarray]:
        n = len(self.data.x_test)
        return member_batches(np.arange(n)[None], even_batch(n, limit))

    def test_means(self) -> np.ndarray:
        """Each lane's mean loss terms over the test digits."""
        keys = self.lanes.put(fold(self.keys, Stream.EVAL, 0))
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
        keys = self.lanes.put(fold(self.keys, Stream.IW))
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
        digits = PictureDigits.of(d.x_test, d.y_test, shared.n_images, shared.n_latent_points)
        val_points = d.val_pool[d.val_rows[: shared.n_latent_points]]
        prior = [
            pad(
                prior_draws(jobs[i].seed, shared.n_images, jobs[i].latent_dim),
                (shared.n_images, self.program.latent),
            )
            for i in self.slots
        ]
        reconstructions, samples, means, val_means = (
            np.asarray(a)
            for a in self.program.pictures(
                self.params,
                self.lanes.share(digits.originals),
                self.lanes.put(stacked(prior)),
                self.lanes.share(digits.points),
                self.lanes.share(val_points),
                self.lanes.put(fold(self.keys, Stream.PICTURES)),
                self.consts["latent_mask"],
            )  # fmt: skip
        )
        return [
            (
                digits.pictures(
                    reconstructions=reconstructions[slot],
                    prior_samples=samples[slot],
                    z_mean=means[slot][:, : jobs[i].latent_dim],
                ),
                val_means[slot][:, : jobs[i].latent_dim],
            )
            for slot, i in enumerate(self.done)
        ]


def evaluate_finished(
    registry: Members,
    jobs: Sequence[Job],
    data: Pools,
    shared: Shared,
    roster: Roster,
    final: dict[int, list[np.ndarray]],
    events: Events,
) -> None:
    """Everything measured after training, for every finished member, at its last epoch.

    Test metrics, the importance-weighted estimate and the pictures, in vmapped calls; then
    each member's own Keras model is given its weights and the member is reported finished.
    """
    finished = Finished(registry, final, data, shared)
    test = finished.test_means()
    iw = finished.iw_bounds() if shared.iw_samples > 0 else None
    for slot, (i, (pictures, val_z_mean)) in enumerate(
        zip(finished.done, finished.pictures(jobs), strict=True)
    ):
        job, model = jobs[i], registry.models[i]
        set_dense_weights(model, registry.own_weights(i, final[i]))
        outcome = Outcome(
            history=roster.history[i],
            test=dict(zip(TERMS, map(float, test[slot]), strict=True)),
            iw_estimate=None if iw is None or job.iw_samples == 0 else float(iw[slot]),
            pictures=pictures,
            val_z_mean=val_z_mean,
            model=model,
        )
        events.job_finished(i, outcome)
