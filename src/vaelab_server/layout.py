"""Where one team store keeps its state, and files in it that only their owner can read.

Everything lives under one directory (`mlruns/` of the checkout): `postgres/` the cluster,
`server/` the server's pid, log, artifacts, users and the secrets generated for it. All of it
is its owner's only (directories 0700, files 0600) whatever the umask: users' password
hashes, artifacts and secrets are no one else's to read.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """Where one store keeps its state. Tests put the cluster where `postgres` can reach it."""

    server_dir: Path
    cluster_dir: Path

    @classmethod
    def under(cls, root: Path) -> Layout:
        return cls(root / "server", root / "postgres")

    @property
    def pgdata(self) -> Path:
        return self.cluster_dir / "data"

    @property
    def db_password(self) -> Path:
        """The cluster role's password, generated with the cluster: read by its servers only."""
        return self.cluster_dir / "password"

    @property
    def artifacts(self) -> Path:
        return self.server_dir / "artifacts"

    def file(self, name: str) -> Path:
        """A file of the server's: mlflow.pid, mlflow.log, url, admin_password..."""
        return self.server_dir / name


def open_private(path: Path, flags: int) -> int:
    """A file descriptor for writing a file only its owner can read, whatever the umask.

    The explicit chmod also tightens a file that an older version left readable to all.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def write_private(path: Path, text: str) -> None:
    with os.fdopen(open_private(path, os.O_TRUNC), "w") as out:
        out.write(text)


def private_dir(path: Path) -> None:
    """A directory only its owner can list or enter, created if missing."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def secret(path: Path) -> str:
    """A generated secret kept in a file only its owner can read, created on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(open_private(path, os.O_EXCL), "w") as out:
            out.write(secrets.token_urlsafe(24))
    return path.read_text().strip()
