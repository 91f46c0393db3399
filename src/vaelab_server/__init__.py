"""The team's run store on one host: PostgreSQL holds the runs, `mlflow server` serves them.

An application of its own (`python -m vaelab_server start|stop`, `make server`), not a layer
of vaelab: training reaches it only through its URL (`tracking=server`), so nothing that
trains imports it. One module per concern: `layout` (where the state lives, kept private),
`cluster` (the local PostgreSQL), `database` (a database's URI, checked), `auth` (MLflow's
basic-auth app), `mlflow_server` (the server's process), `stack` (both, started and stopped
together), `cli` (the command line). docs/team.md: the same on a shared host.
"""
