"""What is measured after training, for every finished member at its last epoch, in one program.

Test metrics, the importance-weighted estimate (`vae.importance`, as the solo engine computes
it) and the figures' arrays (the digits and prior draws of `engines.evaluation`), in vmapped
calls; then each member's own Keras model is given its weights and reported finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vaelab.engines.base import Events, Job, Outcome
from vaelab.engines.evaluation import PictureDigits, prior_draws
from vaelab.engines.packed.lanes import Lanes, stacked
from vaelab.engines.packed.layout import evaluation_batches, even_batch, member_batches
from vaelab.engines.packed.members import Members, Shared
from vaelab.engines.packed.padding import pad
from vaelab.engines.packed.roster import Roster
from vaelab.vae.data import Pools
from vaelab.vae.plots import Pictures
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
        self.keys = self.lanes.put(stacked([registry.keys[i] for i in self.slots]))

    def measured(self, jobs: Sequence[Job]) -> Measured:
        """Every finished member's test terms, estimate and figures' arrays (`Program.measure`)."""
        d, shared, program = self.data, self.shared, self.program
        n = len(d.x_test)
        test_rows, test_sizes = evaluation_batches(np.arange(n))
        iw_rows = [] if shared.iw_samples == 0 else [
            rows[0] for rows in member_batches(np.arange(n)[None], even_batch(n, program.iw.digits))
        ]  # fmt: skip
        digits = PictureDigits.of(d.x_test, d.y_test, shared.n_images, shared.n_latent_points)
        prior = [
            pad(
                prior_draws(jobs[i].seed, shared.n_images, jobs[i].latent_dim),
                (shared.n_images, program.latent),
            )
            for i in self.slots
        ]
        share = self.lanes.share
        test, iw, reconstructions, samples, means, val_means = (
            np.asarray(a)
            for a in program.measure(
                self.params, self.keys, self.consts,
                share(test_rows), test_sizes, [share(r) for r in iw_rows],
                share(d.x_test), self.lanes.put(stacked(prior)), share(digits.originals),
                share(digits.points), share(d.val_pool[d.val_rows[: shared.n_latent_points]]),
            )
        )  # fmt: skip
        return Measured(
            test=test / n,
            iw=iw.mean(axis=1) if iw_rows else None,
            pictures=[
                (
                    digits.pictures(
                        reconstructions=reconstructions[slot],
                        prior_samples=samples[slot],
                        z_mean=means[slot][:, : jobs[i].latent_dim],
                    ),
                    val_means[slot][:, : jobs[i].latent_dim],
                )
                for slot, i in enumerate(self.done)
            ],
        )


@dataclass(frozen=True)
class Measured:
    """What `Finished.measured` returns, by lane (`Finished.done` order)."""

    test: np.ndarray  # each lane's mean loss terms over the test digits (lanes x TERMS)
    iw: np.ndarray | None  # each lane's estimate of -log p(x), averaged over the test digits
    pictures: list[tuple[Pictures, np.ndarray]]  # figures' arrays, validation latent means


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

    Test metrics, the importance-weighted estimate and the pictures, in one vmapped call over
    the members whose weights differ (jobs of one computation that ended at one epoch hold the
    same: `Roster.measured_as`); then each member's own Keras model is given its weights and
    the member is reported finished.
    """
    standing = {roster.measured_as[i] for i in final}
    finished = Finished(registry, {i: final[i] for i in standing}, data, shared)
    measured = finished.measured(jobs)
    slots = {i: slot for slot, i in enumerate(finished.done)}
    for i in sorted(final):
        slot = slots[roster.measured_as[i]]
        pictures, val_z_mean = measured.pictures[slot]
        job = jobs[i]
        outcome = Outcome(
            history=roster.history[i],
            test=dict(zip(TERMS, map(float, measured.test[slot]), strict=True)),
            iw_estimate=None
            if measured.iw is None or job.iw_samples == 0
            else float(measured.iw[slot]),
            pictures=pictures,
            val_z_mean=val_z_mean,
            model=registry.model(i, final[i]),
        )
        events.job_finished(i, outcome)
