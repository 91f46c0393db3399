"""Where a run came from: code version, package versions, platform. Enough to warn on drift."""

from __future__ import annotations

import functools
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from vaelab.vocab.tags import CODE_COMMIT, CODE_DIRTY, CODE_HASH, PLATFORM, VERSION_PREFIX

KEY_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "jax", "mlflow", "hydra-core", "numpy")
# The source a run's numbers depend on: vaelab itself and its Hydra plugins (the launcher
# trains packed sweeps). Hashed file by file, so an uncommitted edit changes the hash.
_SOURCE_ROOTS = ("vaelab", "hydra_plugins")
_SOURCE_SUFFIXES = (".py", ".html")


def _git(root: str | Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def code_version() -> dict[str, str]:
    """Commit, dirty flag and source hash of the code this runs ("unknown" outside git).

    Asked of the package's own directory, not the run's output root, which may be anywhere.
    """
    root = Path(__file__).resolve().parent
    source = {CODE_HASH: source_hash()}
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {CODE_COMMIT: "unknown", CODE_DIRTY: "unknown", **source}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {CODE_COMMIT: commit, CODE_DIRTY: str(bool(status)).lower(), **source}


@functools.cache
def source_hash() -> str:
    """SHA-256 of the package's own source as it is on disk now, commit or not.

    The git commit alone misses uncommitted edits: a relaunch after an edit would skip
    configurations the edited code never trained. Cached: a process runs one version.
    """
    src = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for root in _SOURCE_ROOTS:
        for path in sorted((src / root).rglob("*")):
            if path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(src)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[f"{VERSION_PREFIX}{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def platform_tags() -> dict[str, str]:
    return {
        PLATFORM: platform.platform(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


@functools.cache
def installed_requirements() -> str:
    """Every installed distribution as `name==version`, sorted: the run's exact environment.

    Cached: the environment does not change under a running process, and a sweep worker
    would otherwise rescan site-packages for every run.
    """
    lines = {
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }
    return "\n".join(sorted(lines, key=str.lower)) + "\n"
