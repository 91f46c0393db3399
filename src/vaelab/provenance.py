"""Where a run came from: code version, package versions, platform. Enough to warn on drift."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

KEY_PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "jax", "mlflow", "hydra-core", "numpy")


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
    """Commit and dirty flag of the checkout this code runs from ("unknown" outside git).

    Asked of the package's own directory, not the run's output root, which may be anywhere.
    """
    root = Path(__file__).resolve().parent
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": "unknown", "git.dirty": "unknown"}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {"git.commit": commit, "git.dirty": str(bool(status)).lower()}


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[f"version.{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def platform_tags() -> dict[str, str]:
    return {
        "platform": platform.platform(),
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
