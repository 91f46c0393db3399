"""Everything vaelab does to MLflow's own sqlite tables, behind MLflow's back, in one place.

Four things, each bought for speed (docs/benchmarks.md) and each tied to MLflow's schema:
- a new store is a copy of an empty one MLflow made (`copy_empty_store`), not a fresh run of
  every migration;
- a moved store's recorded artifact locations are rewritten (`rewrite_artifact_locations`);
- the database runs in write-ahead-log mode, so parallel writers stop blocking each other;
- a report reads the tables directly (`LocalStore`): MLflow's client costs a report more
  than its work. It answers only what it understands exactly: a filter beyond equalities
  joined by `and` is left to MLflow (`Unsupported`); tests/test_local_store.py checks it
  against `mlflow.search_runs` column for column.

Each is done only on a store whose schema is the one this module was written for
(`SCHEMA_WRITTEN_FOR`, MLflow's migration version); on any other, `understood` says no (with a
debug line) and the callers fall back to MLflow's own API. What needs no particular schema
(whether a file holds a store at all, and that its files are private) is `store_files`'s.
This module never imports MLflow.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from vaelab.edges.store_files import holds_store

log = logging.getLogger(__name__)

# The migration version (alembic) of MLflow 3.17.2's store: the tables and columns below are
# that schema's. A store of another version is left to MLflow's API.
SCHEMA_WRITTEN_FOR = "dc11669786a5"

# One clause of the filters this reader answers: tags.`sweep.id` = 'abc', attributes.status = 'X'.
_CLAUSE = re.compile(
    r"^\s*(?P<kind>tags|params|attributes)\.(?:`(?P<quoted>[^`]+)`|(?P<plain>[\w.]+))"
    r"\s*=\s*'(?P<value>[^']*)'\s*$"
)
_ATTRIBUTES = {"status": "status", "run_id": "run_uuid", "run_name": "name"}


class Unsupported(Exception):
    """This reader does not answer that query exactly; ask MLflow."""


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite URI (as SQLAlchemy reads it), None for other stores."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def schema_version(db: Path) -> str | None:
    """The store's migration version, None when it has none (or is no store)."""
    try:
        with _connection(db) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def understood(db: Path, doing: str) -> bool:
    """Whether this module may touch the store's tables to do `doing`; if not, says so."""
    version = schema_version(db)
    if version == SCHEMA_WRITTEN_FOR:
        return True
    log.debug(
        "%s: schema version %s, not %s (this code's): %s through MLflow's API instead",
        db, version, SCHEMA_WRITTEN_FOR, doing,
    )  # fmt: skip
    return False


def copy_empty_store(db: Path, artifact_root: Path, template: Path, private_mode: int) -> bool:
    """A new sqlite store as a copy of an empty one that MLflow made itself; False if not.

    MLflow builds a new store's schema by running every one of its migrations, which every
    fresh store (each test, each VAELAB_HOME) would pay; the copy is the same file in
    milliseconds. Its Default experiment is pointed beside this store's artifacts, where
    MLflow would have put it. A template of another schema, or any failure, leaves the
    building to MLflow.
    """
    if not understood(template, "creating the store"):
        return False
    partial = db.with_name(f"{db.name}.new")  # renamed into place whole, or not at all
    try:
        shutil.copyfile(template, partial)
        partial.chmod(private_mode)
        with contextlib.closing(sqlite3.connect(partial)) as connection, connection:
            connection.execute(
                "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                (str(artifact_root / "0"),),
            )
        os.replace(partial, db)
        return True
    except (OSError, sqlite3.Error) as error:
        log.debug("No template store (%s); MLflow creates the schema", error)
        return False
    finally:
        partial.unlink(missing_ok=True)


def template_store(cache: Path, version: str, make: Callable[[Path], None]) -> Path:
    """The empty store `make` builds (MLflow, by its own API), once per machine and version."""
    template = cache / f"mlflow-{version}-empty.db"
    if template.exists():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "template.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not template.exists():
            scratch = cache / f".{template.name}.{os.getpid()}"
            scratch.mkdir(exist_ok=True)
            try:
                made, copy = scratch / "made.db", scratch / "copy.db"
                make(made)
                shutil.copyfile(made, copy)
                os.replace(copy, template)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    return template


def rewrite_artifact_locations(db: Path, old: str, new: str) -> int | None:
    """Replace the prefix `old` by `new` wherever the store records an artifact location.

    None when the schema is not this module's: nothing was rewritten.
    """
    if not understood(db, "rewriting the store's artifact locations"):
        return None
    columns = (
        ("experiments", "artifact_location"),
        ("runs", "artifact_uri"),
        ("logged_models", "artifact_location"),
    )
    changed = 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection, connection:
        for table, column in columns:
            cursor = connection.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                f"WHERE substr({column}, 1, ?) = ?",
                (new, len(old) + 1, len(old), old),
            )
            changed += cursor.rowcount
    return changed


def use_write_ahead_log(db: Path) -> None:
    """WAL lets readers and one writer work at once: parallel sweep jobs stop blocking.

    The mode is stored in the database file, so setting it once per open is cheap; on a
    schema of another version the store keeps MLflow's own journal.
    """
    if understood(db, "write-ahead logging"):
        with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")


def _where(filter_string: str) -> tuple[str, list[str]]:
    """SQL conditions on `runs r` for a conjunction of equalities, or Unsupported."""
    conditions, values = [], []
    clauses = re.split(r"\s+and\s+", filter_string.strip(), flags=re.IGNORECASE)
    for clause in clauses if filter_string.strip() else []:
        found = _CLAUSE.match(clause)
        if found is None:
            raise Unsupported(filter_string)
        kind, key = found["kind"], found["quoted"] or found["plain"]
        if kind == "attributes":
            if key not in _ATTRIBUTES:
                raise Unsupported(filter_string)
            conditions.append(f"r.{_ATTRIBUTES[key]} = ?")
        else:
            conditions.append(
                f"EXISTS (SELECT 1 FROM {kind} x WHERE x.run_uuid = r.run_uuid "
                "AND x.key = ? AND x.value = ?)"
            )
            values.append(key)
        values.append(found["value"])
    return " AND ".join(conditions) or "1", values


def understands(filter_string: str) -> bool:
    try:
        _where(filter_string)
    except Unsupported:
        return False
    return True


def _experiment(db: Path, name: str) -> tuple[str, str] | None:
    """(id, artifact location) of a live experiment of the store, None if it has none."""
    with _connection(db) as connection:
        return connection.execute(
            "SELECT experiment_id, artifact_location FROM experiments WHERE name = ? "
            "AND lifecycle_stage = 'active'",
            (name,),
        ).fetchone()


def experiment_id(uri: str, name: str) -> str | None:
    """The id of a sqlite store's experiment, None for a server, a new store or no such one."""
    db = sqlite_file(uri)
    if db is None or not db.is_file() or not understood(db, "reading experiments"):
        return None
    found = _experiment(db, name)
    return str(found[0]) if found else None


@dataclass(frozen=True)
class LocalStore:
    """One experiment of a sqlite store, read directly."""

    uri: str
    db: Path
    experiment_id: str

    @classmethod
    def open(cls, uri: str, experiment: str, artifact_root: str | None = None) -> LocalStore | None:
        """The experiment of a local store as it stands; None where MLflow must open it.

        None for a server, a store not made yet or not a store at all (`tracking` says
        which), an unknown experiment, and a store whose recorded artifact location is not
        `artifact_root` (by default `artifacts/` beside the database): moved or copied,
        which `tracking.open_store` repairs or refuses.
        """
        db = sqlite_file(uri)
        if db is None or not holds_store(db) or not understood(db, "reading runs"):
            return None
        wanted = Path(artifact_root or db.parent / "artifacts").resolve()
        found = _experiment(db, experiment)
        if found is None or local_path(found[1]).resolve() != wanted or not wanted.is_dir():
            return None
        return cls(uri, db, str(found[0]))

    def runs_frame(self, filter_string: str = "", run_ids: list[str] | None = None):
        """What `mlflow.search_runs` gives for these runs (live ones only), newest first."""
        where, values = _where(filter_string)
        with _connection(self.db) as connection:
            runs = pd.read_sql_query(
                "SELECT r.run_uuid AS run_id, r.experiment_id, r.status, r.artifact_uri, "
                "r.start_time, r.end_time FROM runs r WHERE r.experiment_id = ? AND "
                f"r.lifecycle_stage = 'active' AND {where} ORDER BY r.start_time DESC",
                connection,
                params=[self.experiment_id, *values],
            )
            if run_ids is not None:
                runs = runs[runs["run_id"].isin(run_ids)]
            wide = [self._wide(connection, table, prefix, runs) for table, prefix in _COLUMNS]
        runs = runs.astype({"run_id": str, "experiment_id": str, "status": str})
        for column in ("start_time", "end_time"):
            runs[column] = pd.to_datetime(runs[column], unit="ms", utc=True).astype(
                "datetime64[us, UTC]"
            )
        frame = runs.set_index("run_id").join(wide, how="left")
        return frame.reset_index()

    @staticmethod
    def _wide(
        connection: sqlite3.Connection, table: str, prefix: str, runs: pd.DataFrame
    ) -> pd.DataFrame:
        """One column per key of `table` (params, tags or latest metrics), one row per run."""
        ids = list(runs["run_id"])
        if not ids:
            return pd.DataFrame(index=pd.Index([], name="run_id"))
        marks = ",".join("?" * len(ids))
        # MLflow stores a NaN metric as 0 with is_nan set, and reads it back as NaN.
        value = "CASE WHEN is_nan THEN NULL ELSE value END" if prefix == "metrics." else "value"
        long = pd.read_sql_query(
            f"SELECT run_uuid AS run_id, key, {value} AS value FROM {table} "
            f"WHERE run_uuid IN ({marks})",
            connection,
            params=ids,
        )
        wide = long.pivot(index="run_id", columns="key", values="value")
        wide = wide.reindex(sorted(wide.columns), axis=1)
        wide.columns = [f"{prefix}{key}" for key in wide.columns]
        return wide.astype(float) if prefix == "metrics." else wide

    def metric_history(self, run_id: str, name: str) -> list[tuple[int, float]]:
        with _connection(self.db) as connection:
            rows = connection.execute(
                "SELECT step, CASE WHEN is_nan THEN 'nan' ELSE value END FROM metrics "
                "WHERE run_uuid = ? AND key = ?",
                (run_id, name),
            ).fetchall()
        return sorted((int(step), float(value)) for step, value in rows)

    def artifact_dir(self, run_id: str) -> Path:
        with _connection(self.db) as connection:
            (uri,) = connection.execute(
                "SELECT artifact_uri FROM runs WHERE run_uuid = ?", (run_id,)
            ).fetchone()
        return local_path(uri)

    def download_artifact(self, run_id: str, path: str, destination: Path) -> Path | None:
        """A run's artifact as a local file (a copy under `destination`), None when missing."""
        source = self.artifact_dir(run_id) / path
        if not source.is_file():
            return None
        target = destination / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def log_files(self, run_id: str, paths: list[Path], directory: str) -> None:
        """Attach files to a run: copied into its artifacts, as MLflow's local repository does."""
        target = self.artifact_dir(run_id) / directory
        target.mkdir(parents=True, exist_ok=True)
        for path in paths:
            shutil.copyfile(path, target / path.name)


_COLUMNS = (("latest_metrics", "metrics."), ("params", "params."), ("tags", "tags."))


def local_path(location: str) -> Path:
    return (
        Path(unquote(urlparse(location).path)) if location.startswith("file:") else Path(location)
    )


@contextlib.contextmanager
def _connection(db: Path) -> Iterator[sqlite3.Connection]:
    """A read connection that never creates the file (mode=ro) and waits for writers."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        yield connection
    finally:
        connection.close()
