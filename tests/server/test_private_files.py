"""What the team store keeps is its owner's only, whatever the umask, and root can keep it in a
private directory (the cluster then lives where `postgres` can reach it, still private)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import free_port, mode, umask
from vaelab.vocab.errors import ServerError
from vaelab_server import cluster as pg
from vaelab_server import stack as team
from vaelab_server.auth import ADMIN
from vaelab_server.layout import Layout, secret
from vaelab_server.mlflow_server import stop_server

pytestmark = pytest.mark.server


def not_private(root: Path) -> list[str]:
    """Every directory under root (itself included) not 0700, and every file not 0600."""
    found = [] if mode(root) == 0o700 else [f"{root} {oct(mode(root))}"]
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            if mode(Path(directory, name)) != 0o700:
                found.append(f"{directory}/{name} {oct(mode(Path(directory, name)))}")
        for name in files:
            if mode(Path(directory, name)) != 0o600:
                found.append(f"{directory}/{name} {oct(mode(Path(directory, name)))}")
    return found


def test_users_secrets_and_artifacts_are_the_owners_only_under_umask_022(
    cluster, tmp_path, monkeypatch
):
    layout = Layout(tmp_path / "mlruns" / "server", cluster.cluster_dir)
    try:
        with umask(0o022):  # the usual umask: new files readable by all unless made otherwise
            team.start(layout, port=free_port(), database="private", auth=True, workers=1)
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
            password = layout.file("admin_password").read_text().strip()
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
            client = MlflowClient(layout.file("url").read_text())
            run = client.create_run(client.create_experiment("private"))
            weights = tmp_path / "weights.txt"
            weights.write_text("not for everyone")
            client.log_artifact(run.info.run_id, str(weights), "nested/deeper")
            client.set_terminated(run.info.run_id)
    finally:
        stop_server(layout)
    kept = {path.relative_to(layout.server_dir) for path in layout.server_dir.rglob("*")}
    assert Path("basic_auth.db") in kept and Path("basic_auth.ini") in kept, kept
    assert any(path.name == "weights.txt" and "nested" in path.parts for path in kept), kept
    assert not_private(layout.server_dir) == []
    assert mode(cluster.cluster_dir) == 0o700 and mode(cluster.db_password) == 0o600


def postgres_account() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("only a root caller runs PostgreSQL as another account (postgres)")
    try:
        pg._pg_program("initdb")
        return pwd.getpwnam(pg.PG_ACCOUNT)
    except (ServerError, KeyError):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")


@pytest.mark.parametrize("left_by_a_failed_start", [False, True])
def test_root_runs_a_private_cluster_from_a_0700_directory(left_by_a_failed_start):
    """A checkout under /root or in a `mktemp -d` folder: `postgres` cannot enter it."""
    account = postgres_account()
    state = Path(tempfile.mkdtemp(prefix="vaelab-private-"))
    assert mode(state) == 0o700
    # What a start that hit "could not change directory" left: the password it generated.
    first = secret(Layout.under(state).db_password) if left_by_a_failed_start else None
    try:
        uri = pg.start_database(Layout.under(state), free_port(), database="kept")
        cluster = Layout.under(state).cluster_dir.resolve()
        assert cluster.stat().st_uid == account.pw_uid and mode(cluster) == 0o700
        assert mode(cluster / "data") == 0o700 and mode(cluster.parent) == 0o700
        assert mode(Layout.under(state).db_password) == 0o600
        password = secret(Layout.under(state).db_password)
        if left_by_a_failed_start:
            assert password == first  # moved with the cluster, not replaced
        psycopg2.connect(uri, password=password, connect_timeout=10).close()

        # `make server-stop` and a restart build the layout afresh and find the same cluster.
        assert pg.stop_database(Layout.under(state))
        assert not pg.stop_database(Layout.under(state))
        again = pg.start_database(Layout.under(state), free_port())
        assert Layout.under(state).cluster_dir.resolve() == cluster
        connection = psycopg2.connect(again, password=password, connect_timeout=10)
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname = 'kept'")
            assert cursor.fetchall() == [("kept",)]  # the first start's database: same cluster
        connection.close()
    finally:
        pg.stop_database(Layout.under(state))
        if Layout.under(state).cluster_dir.is_symlink():
            shutil.rmtree(Layout.under(state).cluster_dir.resolve())
        shutil.rmtree(state)
