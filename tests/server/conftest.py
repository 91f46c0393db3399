"""A throwaway team store for the session: PostgreSQL in a tmp dir on a free port and an
`mlflow server` on a free port of 127.0.0.1, started and stopped by vaelab_server, the code
behind `make server` and `make server-stop`. Each test writes to its own experiment."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from vaelab.edges import tracking
from vaelab_server import stack as team
from vaelab_server.cluster import start_database, stop_database
from vaelab_server.layout import Layout
from vaelab_server.mlflow_server import stop_server


@dataclass(frozen=True)
class Stack:
    layout: Layout
    url: str
    database_uri: str
    # How it was started, so that a test can start it again as it was (same ports).
    options: dict

    def overrides(self, experiment: str) -> list[str]:
        return ["tracking=server", f"tracking.uri={self.url}", f"experiment_name={experiment}"]

    def store(self, experiment: str) -> tracking.Store:
        return tracking.open_store(self.url, experiment)


def cluster_dir() -> Path:
    """A cluster dir `postgres` can enter (a 0755 parent), so that under root the session's
    clusters stay in /tmp rather than moving to its home (test_private_files tests that move)."""
    base = Path(tempfile.mkdtemp(prefix="vaelab-pg-"))
    base.chmod(0o755)
    return base / "postgres"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Iterator[Layout]:
    """One PostgreSQL cluster for the session; each server gets its own database in it."""
    layout = Layout(tmp_path_factory.mktemp("cluster"), cluster_dir())
    start_database(layout, free_port())
    yield layout
    stop_database(layout)
    shutil.rmtree(layout.cluster_dir.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def serve(cluster, tmp_path_factory) -> Iterator[Callable[..., Stack]]:
    """Start a server on its own database of the session's cluster; all stopped at the end."""
    started: list[Layout] = []

    def start(database: str, **options) -> Stack:
        layout = Layout(tmp_path_factory.mktemp(database), cluster.cluster_dir)
        started.append(layout)
        options = {"port": free_port(), "database": database, "workers": 1, **options}
        url, uri = team.start(layout, **options)
        return Stack(layout, url, uri, options)

    yield start
    for layout in started:
        stop_server(layout)


@pytest.fixture(scope="session")
def stack(serve) -> Stack:
    """The plain server most tests share (two workers, as a team's would have several)."""
    return serve("mlflow", workers=2)


@pytest.fixture
def own_stack(tmp_path) -> Iterator[Stack]:
    """A whole stack of its own (cluster and server) that a test may stop and start again."""
    layout = Layout(tmp_path / "server", cluster_dir())
    options = {"port": free_port(), "db_port": free_port(), "workers": 1}
    url, uri = team.start(layout, **options)
    yield Stack(layout, url, uri, options)
    team.stop(layout)
    shutil.rmtree(layout.cluster_dir.parent, ignore_errors=True)
