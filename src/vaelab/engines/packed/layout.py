"""Some members of a group laid out on lanes with their current state, and their batches.

A layout holds the members still training on the devices: their weights, optimiser state,
masks and keys, one lane each, and the data pools once. When enough members have left, the
rest are laid out afresh on fewer lanes (`LaidOut.shrunk`): a member that is done stops
costing compute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from vaelab.engines.batches import equal_batches
from vaelab.engines.packed.lanes import Lanes, stacked
from vaelab.engines.packed.members import Members, Shared
from vaelab.vae.data import Pools
from vaelab.vae.sizes import EVAL_BATCH


def even_batch(n: int, limit: int) -> int:
    """The largest batch of at most `limit` that divides n; `limit` when none is near.

    One compiled program then covers every batch (a smaller last batch needs its own).
    """
    for size in range(min(limit, n), max(limit // 4, 1) - 1, -1):
        if n % size == 0:
            return size
    return min(limit, n)


def member_batches(rows: np.ndarray, batch: int) -> list[np.ndarray]:
    """Rows (members x n) as at most two arrays (members x steps x batch).

    The full batches, then the last, smaller one (`batches.equal_batches`).
    """
    n = rows.shape[1]
    return [
        rows[:, start:stop].reshape(rows.shape[0], count, -1)
        for start, stop, count in equal_batches(0, math.ceil(n / batch), batch, n)
    ]


def evaluation_batches(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows a model is only measured on (validation, test), as steps x batch.

    With each step's real rows: even batches of at most EVAL_BATCH where they divide, else
    the last one padded (`padded_batches`).
    """
    padded, sizes = padded_batches(rows[None], even_batch(len(rows), EVAL_BATCH))
    return padded[0], sizes


def padded_batches(rows: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows (members x n) as members x steps x batch, and each step's real rows.

    The last, smaller batch is padded with copies of its last row (its terms leave them
    out: `Program._terms`), so that one compiled program runs the whole epoch.
    """
    members, n = rows.shape
    steps = -(-n // batch)
    padded = np.concatenate([rows, np.repeat(rows[:, -1:], steps * batch - n, axis=1)], axis=1)
    sizes = np.full(steps, batch, np.int32)
    sizes[-1] = n - (steps - 1) * batch
    return padded.reshape(members, steps, batch), sizes


class LaidOut:
    """Some members of a group laid out on the devices, with their current state.

    Lane j holds member `members[j]` (the lanes beyond the members repeat the first, idle).
    Laid out afresh, with only the members still training, when enough have left (`shrunk`).
    """

    def __init__(
        self,
        registry: Members,
        members: Sequence[int],
        params: Sequence[list],
        opt_state: Sequence[list],
        data: Pools,
        shared: Shared,
        pools: tuple | None = None,
    ):
        self.registry, self.program = registry, registry.program
        self.lanes = Lanes(len(members))
        self.members = [int(i) for i in self.lanes.indices(list(members))]
        lanes, rows = self.lanes, list(range(len(members))) + [0] * (self.lanes.size - len(members))
        self.params = lanes.put(
            [stacked([params[r][k] for r in rows]) for k in range(len(params[0]))]
        )
        self.opt_state = lanes.put(
            [stacked([opt_state[r][k] for r in rows]) for k in range(len(opt_state[0]))]
        )
        self.consts = lanes.put(registry.consts(self.members))
        self.keys = lanes.put(stacked([registry.keys[i] for i in self.members]))
        if pools is None:
            train_pool = lanes.share(data.train_pool)
            same = data.val_pool is data.train_pool  # no binarised copy: one pool on the device
            pools = (train_pool, train_pool if same else lanes.share(data.val_pool))
        self.pools = pools
        val_rows, self.val_sizes = evaluation_batches(data.val_rows)
        self.val_rows = lanes.share(val_rows)  # every lane's: the same digits
        self.batch_size = shared.batch_size

    def train_round(self, epochs: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One epoch of each active lane at its member's own epoch, then its validation pass.

        Each lane's summed loss terms over its epoch's batches, and over its validation
        digits.
        """
        on, epoch = self.lanes.put(active), self.lanes.rows(epochs)
        rows, sizes = padded_batches(self.registry.rows_for(self.members, epochs), self.batch_size)
        self.params, self.opt_state, sums, val_sums = self.program.train_round(
            self.params, self.opt_state, self.lanes.rows(rows), sizes, epoch, 0,
            self.keys, self.consts, on, self.pools[0],
            self.val_rows, self.val_sizes, self.pools[1],
        )  # fmt: skip
        return np.asarray(sums), np.asarray(val_sums)

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

    def shrunk(self, keep: Sequence[int], data: Pools, shared: Shared) -> LaidOut:
        """The members in `keep` (lanes), laid out alone with their current state."""
        params, opt_state = self.host_state()
        return LaidOut(
            self.registry,
            [self.members[j] for j in keep],
            [params[j] for j in keep],
            [opt_state[j] for j in keep],
            data,
            shared,
            self.pools,
        )
