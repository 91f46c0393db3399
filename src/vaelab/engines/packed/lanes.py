"""The member axis sharded over the devices: which lane holds which member, and placing arrays.

Both cores of a CPU run as two host devices, and several GPUs share a group: a group's
members are split across all of them, padded with idle copies to a multiple of the devices.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def stacked(rows: Sequence) -> np.ndarray:
    """Host arrays, one per lane, as one host array with the lanes first.

    Kept on the host until `Lanes.put` shards it: splitting an array already on a device
    compiles a slicing program per shape (27 of them for sweep=grid, 6 s here).
    """
    return np.stack([np.asarray(row) for row in rows])


class Lanes:
    """Members laid out over the devices.

    The member axis is sharded across every device, and padded with idle copies to a
    multiple of the device count.
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
        return jax.device_put(
            array if isinstance(array, jax.Array) else np.asarray(array), self.whole
        )

    def rows(self, rows: np.ndarray) -> jax.Array:
        """Per-member rows (lanes x ...) as the program takes them."""
        return self.put(np.asarray(rows, np.int32))
