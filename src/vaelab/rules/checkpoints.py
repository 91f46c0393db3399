"""What resumes a run exactly: its state at an epoch's end, checksummed, and the choice back.

A checkpoint is one file per epoch in the run's artifacts, `checkpoints/epoch-0003.ckpt`: a
header line with the SHA-256 of what follows, then an .npz of the engine's named state arrays
(weights, the optimiser's state with its iteration count, the random streams' state) and its
metadata (the epoch, the engine that saved it, the run's per-epoch history so far). Each
epoch's file has a new name, so a crash or a full disk while one is written never touches
the previous one; a truncated or altered file fails its checksum and the one before it is
used (`newest_valid`). Plain numpy and hashlib: no framework, no store.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Sequence

import numpy as np

from vaelab.engines.base import Checkpoint

log = logging.getLogger(__name__)

DIRECTORY = "checkpoints"
_MAGIC = b"vaelab-checkpoint 1 sha256="
_META = "__meta__"
_NAME = re.compile(r"epoch-(\d+)\.ckpt$")


class CorruptCheckpoint(ValueError):
    """A checkpoint whose bytes are not what was written (truncated, altered, not ours)."""


def path(epoch: int) -> str:
    """Where the checkpoint of an epoch lives among the run's artifacts."""
    return f"{DIRECTORY}/epoch-{epoch:04d}.ckpt"


def epoch_of(artifact_path: str) -> int | None:
    """The epoch a checkpoint's artifact path names, None for any other file."""
    found = _NAME.search(artifact_path)
    return int(found[1]) if found else None


def encode(checkpoint: Checkpoint) -> bytes:
    """The checkpoint as bytes: its checksum line, then the arrays and metadata."""
    meta = {"epoch": checkpoint.epoch, "engine": checkpoint.engine, "history": checkpoint.history}
    buffer = io.BytesIO()
    np.savez(
        buffer, **checkpoint.arrays, **{_META: np.frombuffer(json.dumps(meta).encode(), np.uint8)}
    )
    payload = buffer.getvalue()
    return _MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def decode(data: bytes) -> Checkpoint:
    """The checkpoint the bytes hold, or CorruptCheckpoint saying what is wrong with them."""
    header, newline, payload = data.partition(b"\n")
    if not header.startswith(_MAGIC) or not newline:
        raise CorruptCheckpoint("not a vaelab checkpoint (no checksum line)")
    expected = header.removeprefix(_MAGIC).decode(errors="replace")
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise CorruptCheckpoint(
            f"checksum {actual[:12]}... of {len(payload)} bytes, expected {expected[:12]}..."
        )
    with np.load(io.BytesIO(payload)) as archive:
        arrays = {name: archive[name] for name in archive.files if name != _META}
        meta = json.loads(archive[_META].tobytes().decode())
    return Checkpoint(meta["epoch"], meta["engine"], arrays, meta["history"])


def newest_valid(
    paths: Sequence[str], read: Callable[[str], bytes | None], run_id: str
) -> Checkpoint | None:
    """The newest checkpoint among `paths` that reads back whole; None when none does.

    Those passed over (missing, truncated, altered) are named in one warning line.
    """
    unusable = []
    found = None
    for artifact in sorted(paths, key=lambda p: epoch_of(p) or -1, reverse=True):
        if epoch_of(artifact) is None:
            continue
        data = read(artifact)
        try:
            if data is None:
                raise CorruptCheckpoint("it could not be read")
            found = decode(data)
            break
        except (CorruptCheckpoint, ValueError, KeyError, OSError) as error:
            unusable.append(f"{artifact} ({error})")
    if unusable:
        log.warning(
            "Run %s: unusable checkpoint(s) %s; resuming from %s",
            run_id, "; ".join(unusable),
            f"epoch {found.epoch}" if found else "the start (epoch 0)",
        )  # fmt: skip
    return found


def superseded(paths: Sequence[str], kept: int) -> list[str]:
    """The checkpoints beyond the newest `kept`: the ones to remove."""
    ours = sorted((p for p in paths if epoch_of(p) is not None), key=epoch_of, reverse=True)
    return ours[kept:]
