"""The team store's server is an application of its own (`python -m vaelab_server`), beside
vaelab: `make server` runs it, and `make ui` shares only the network checks with it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_make_server_and_server_stop_run_the_application():
    for target, action in (("server", "start"), ("server-stop", "stop")):
        dry_run = subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
        )
        assert f"-m vaelab_server {action} --state-dir" in dry_run.stdout, dry_run.stdout
    helped = subprocess.run(
        [sys.executable, "-m", "vaelab_server", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert helped.stdout.startswith("usage: python -m vaelab_server"), helped.stdout
    assert "{start,stop}" in helped.stdout and "--database-uri" in helped.stdout


def test_make_ui_loads_nothing_of_the_server():
    """`make ui` needs the port and host checks only (edges.network), not the team server."""
    probe = (
        "import sys, vaelab.edges.ui; "
        "print(sorted(m for m in sys.modules if m.startswith(('vaelab_server', 'vaelab.edges.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    modules = loaded.stdout.strip()
    assert "server" not in modules and "vaelab.edges.network" in modules, modules
