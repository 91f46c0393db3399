"""MLflow's usage reports are off wherever vaelab runs MLflow (its own processes, `make ui`,
`make server`), unless the user opts in with MLFLOW_DISABLE_TELEMETRY=false."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port
from vaelab.edges import network, ui
from vaelab_server import mlflow_server
from vaelab_server.layout import Layout

# What a fresh shell would give: none of the markers (pytest's, a CI's) that make MLflow keep
# quiet on its own, so that only vaelab's switch can turn the reporter off.
_CHECK = """
import sys
if sys.argv[1] == "mlflow first":
    import mlflow
import vaelab.edges.tracking
from mlflow.telemetry import get_telemetry_client
print(get_telemetry_client() is None)
"""


def reporter_off(tmp_path, order: str, **env: str) -> bool:
    kept = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    clean = {**kept, "HOME": str(tmp_path), **env}  # HOME: where MLflow keeps its install id
    done = subprocess.run(
        [sys.executable, "-c", _CHECK, order],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize("order", ["vaelab first", "mlflow first"])
def test_vaelab_turns_mlflows_reporter_off(tmp_path, order):
    assert reporter_off(tmp_path, order)


def test_a_users_opt_in_wins(tmp_path):
    assert not reporter_off(tmp_path, "vaelab first", MLFLOW_DISABLE_TELEMETRY="false")


# The environment MLflow reads as it is first imported (MLflow reads these settings then).
_AT_FIRST_IMPORT = """
import importlib, os, sys

class Watch:
    seen = None

    def find_spec(self, name, path=None, target=None):
        if name == "mlflow" and Watch.seen is None:
            Watch.seen = {key: os.environ.get(key) for key in sys.argv[2:]}

sys.meta_path.insert(0, Watch())
importlib.import_module(sys.argv[1])
print(Watch.seen)
"""
TRACKING = REPO / "src" / "vaelab" / "edges" / "tracking"


@pytest.mark.parametrize(
    "module",
    sorted(f"vaelab.edges.tracking.{path.stem}" for path in TRACKING.glob("[!_]*.py")),
)
def test_mlflow_finds_vaelabs_settings_whichever_tracking_module_comes_first(tmp_path, module):
    """The settings are made in one place (`environment`), before any module imports mlflow."""
    keys = ["MLFLOW_DISABLE_TELEMETRY", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"]
    kept = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    done = subprocess.run(
        [sys.executable, "-c", _AT_FIRST_IMPORT, module, *keys],
        env={**kept, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    seen = done.stdout.strip().splitlines()[-1]
    assert seen == str(dict(zip(keys, ["true", "false"], strict=True))), seen


class Exec(Exception):
    """Raised instead of becoming `mlflow ui`."""


@pytest.mark.parametrize(("setting", "seen"), [(None, "true"), ("false", "false")])
def test_mlflow_ui_runs_without_telemetry_unless_opted_in(setting, seen, tmp_path, monkeypatch):
    if setting is None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", setting)
    environments = []

    def execv(path, argv):
        environments.append(dict(os.environ))  # what `mlflow ui` inherits
        raise Exec

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.setattr(os, "umask", lambda mask: 0o022)
    monkeypatch.setattr(network, "port_taken", lambda host, port: False)
    with pytest.raises(Exec):
        ui.main(["--backend-store-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert environments[0]["MLFLOW_DISABLE_TELEMETRY"] == seen


class Spawned(Exception):
    """Raised instead of starting `mlflow server`."""


@pytest.mark.parametrize(("setting", "seen"), [(None, "true"), ("false", "false")])
def test_mlflow_server_runs_without_telemetry_unless_opted_in(setting, seen, tmp_path, monkeypatch):
    if setting is None:
        monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", setting)
    environments = []

    def popen(command, **options):
        environments.append(options["env"])
        raise Spawned

    monkeypatch.setattr(mlflow_server.subprocess, "Popen", popen)
    with pytest.raises(Spawned):
        mlflow_server.start_server(
            Layout.under(tmp_path), "postgresql://vaelab@127.0.0.1:5433/mlflow", None,
            port=free_port(),
        )  # fmt: skip
    assert environments[0]["MLFLOW_DISABLE_TELEMETRY"] == seen
