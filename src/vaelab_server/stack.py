"""The whole team store, started and stopped as one: the database, then the server on it.

`make server` and the tests in tests/server/ start their stacks with these same functions.
"""

from __future__ import annotations

from typing import Any

from vaelab_server.cluster import DATABASE, start_database, stop_database
from vaelab_server.database import check_database, split_password
from vaelab_server.layout import Layout, secret
from vaelab_server.mlflow_server import start_server, stop_server


def start(
    layout: Layout,
    host: str = "127.0.0.1",
    port: int = 5000,
    db_port: int = 5433,
    database_uri: str | None = None,
    database: str = DATABASE,
    **server_options: Any,
) -> tuple[str, str]:
    """The database (the local cluster unless `database_uri`) and the server: (URL, database)."""
    if database_uri is None:
        database_uri = start_database(layout, db_port, database)
        password = secret(layout.db_password)
    else:
        database_uri, password = split_password(database_uri)
    check_database(database_uri, password)
    return start_server(layout, database_uri, password, host, port, **server_options), database_uri


def stop(layout: Layout) -> list[str]:
    """Stop the server, then the local cluster; what was stopped."""
    stopped = ["mlflow server"] if stop_server(layout) else []
    return stopped + (["PostgreSQL"] if stop_database(layout) else [])
