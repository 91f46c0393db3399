"""A PostgreSQL database reached by URI: its password apart, one test connection, created.

The server alone holds the database's password; a wrong URI or password is one clear error
before `mlflow server` starts, not a server that crashes in a loop.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from vaelab.vocab.errors import ServerError


def split_password(uri: str) -> tuple[str, str | None]:
    """A database URI without its password, and the password (None: PGPASSWORD, ~/.pgpass)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri, None
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + netloc)), parts.password


def check_database(uri: str, password: str | None, setting: str = "DATABASE_URI") -> None:
    """Connect once, so that a wrong URI or password is one clear error, not a server crash loop."""
    scheme = urlsplit(uri).scheme
    if scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ServerError(
            f"{setting}={uri} is not a PostgreSQL URI: expected "
            "postgresql://user@host:5432/database"
        )
    dsn = uri.replace(f"{scheme}://", "postgresql://", 1)
    try:
        psycopg2.connect(dsn, connect_timeout=10, **({"password": password} if password else {}))
    except psycopg2.Error as error:
        reason = str(error).strip().splitlines()[-1].removeprefix("FATAL:").strip()
        raise ServerError(
            f"cannot connect to the database {setting}={uri}: {reason}. Fix the URI or its "
            "password (in the URI, PGPASSWORD or ~/.pgpass) and start again."
        ) from None


def create_database(uri: str, password: str) -> None:
    """Create the URI's database in its cluster when it is missing (the local cluster's role)."""
    parts = urlsplit(uri)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(admin, password=password, connect_timeout=10)
    connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()
