"""Who may use the server: MLflow's basic-auth app (`--auth`), or nobody asked (loopback only).

The app keeps its users in sqlite beside the server, with an admin made on the first start;
without it, a server reachable from the network lets anyone write, and says so.
"""

from __future__ import annotations

from vaelab.edges.network import is_loopback
from vaelab_server.layout import Layout, secret, write_private

ADMIN = "admin"


def auth_env(layout: Layout, default_permission: str) -> dict[str, str]:
    """MLflow's basic-auth app: its users in sqlite beside the server, an admin made once."""
    config = layout.file("basic_auth.ini")
    write_private(
        config,
        "[mlflow]\n"
        f"default_permission = {default_permission}\n"
        f"database_uri = sqlite:///{layout.file('basic_auth.db')}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        # Read only when the admin does not exist yet (first start).
        "MLFLOW_AUTH_ADMIN_PASSWORD": secret(layout.file("admin_password")),
        # CSRF tokens of the sign-up page must verify in every worker.
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret(layout.file("flask_secret_key")),
    }


def auth_summary(layout: Layout, host: str, auth: bool) -> str:
    """How the server admits users, with a warning when anyone on the network may write."""
    if auth:
        return f"user {ADMIN}, password in {layout.file('admin_password')}"
    if is_loopback(host):
        return "off"
    return "off (anyone who reaches this host can read and write runs: AUTH=1 for logins)"
