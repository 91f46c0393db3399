"""Which run-store URIs vaelab accepts, decided before anything opens one (no MLflow import).

One owner for the rule, used where a store is opened (`tracking`) and on the command line
before Hydra writes its files (`cli.refuse_credentials`): a URI never carries a password,
which every run, Hydra's outputs and the config artifact would record; a local store is an
absolute path, never one under whatever folder the command happens to run in.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from vaelab.vocab.errors import TrackingError

# Stores vaelab opens: a sqlite file (tracking=local) or an `mlflow server` (tracking=server).
SCHEMES = ("sqlite", "file", "http", "https")
# Where MLflow's client takes basic-auth credentials from (never logged).
LOGIN = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
# The setting that names the store; its refusals name it.
SETTING = "tracking.uri"
# Anything in a command-line value that looks like a URI (a value may hold several: a sweep's
# `a,b`): a login up to its `@` (a password may hold any of `,()[]`), then the rest.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^/@\s'\"]*@)?[^\s,'\"()\[\]]*")


def carries_credentials(uri: str) -> bool:
    """A password in the URI, or any login at all in a web address (a token as user name)."""
    parts = urlsplit(uri)
    return parts.password is not None or (
        parts.scheme in ("http", "https") and bool(parts.username)
    )


def credentials_refusal(setting: str) -> str:
    """What to do about credentials in `setting`: the same words wherever they are caught."""
    if setting == SETTING:
        return (
            f"{SETTING} carries credentials, which would be recorded with every run: remove "
            f"them from the URI and set {LOGIN} instead"
        )
    return (
        f"{setting} carries credentials, which Hydra would write in plain text to its outputs "
        "and every run would record: remove them from the command line (give a password "
        "through the tool's own environment variable or file, e.g. PGPASSWORD or ~/.pgpass)"
    )


def uris_in(text: str) -> list[str]:
    """The URIs in a command-line value (`a,b` of a sweep, `choice(...)`, quoted or not)."""
    return _URI.findall(text)


def check_uri(uri: str) -> None:
    """Refuse a tracking.uri that cannot work, or that would record a password with every run.

    A database is never opened directly: its password would sit in every run's config, and its
    artifacts would have no shared home. An `mlflow server` in front of it holds both. A
    relative sqlite path would open a store under the current folder while the artifacts go
    to `tracking.artifact_root`.
    """
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        shown = uri.replace(f":{parts.password}@", ":***@") if parts.password else uri
        raise TrackingError(
            f"{SETTING}={shown} is not a run store vaelab can open: expected "
            "sqlite:////absolute/path/mlflow.db (tracking=local) or http://host:port of an "
            "`mlflow server` (tracking=server; `make server` runs one on PostgreSQL)"
        )
    if not parts.scheme.startswith("http"):
        _check_local(uri)
        return
    if carries_credentials(uri):
        raise TrackingError(credentials_refusal(SETTING))
    try:
        parts.port  # noqa: B018 (parsing it is the check)
    except ValueError:
        parts = parts._replace(netloc="")
    if not parts.hostname:
        raise TrackingError(
            f"{SETTING}={uri} is malformed: expected http://host:port of an `mlflow server`"
        )


def _check_local(uri: str) -> None:
    """A local store's path is absolute: sqlite:////abs/mlflow.db (four slashes), file:///abs."""
    path = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else urlsplit(uri).path
    if not path.startswith("/"):
        raise TrackingError(
            f"{SETTING}={uri} is not an absolute path: it would open a store under the "
            "current folder while the artifacts go to tracking.artifact_root; give one, e.g. "
            "sqlite:////absolute/path/mlflow.db (four slashes)"
        )
