"""Whether a server may listen on a host and port here, and whether the process serving it runs.

Shared by `make ui` (`ui`) and the team store (`vaelab_server`): both refuse a taken port in
one line before anything listens, keep a login-less service on this machine unless told
otherwise, and wait a cold MLflow server out. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket

# A cold `mlflow server` imports MLflow once per process (CLI and workers), and a fresh database
# gets its schema: tens of seconds on a small loaded machine.
START_TIMEOUT_S = 180


def port_taken(host: str, port: int) -> bool:
    """Whether a server could not listen on `host`:`port` now, something else listening there.

    Binding is the test, as the server will bind: it also sees a listener on every interface
    when `host` is one address, or on one address when `host` is every interface, which a
    connection to `host` would miss. A host that is not this machine's is left to the server.
    """
    try:
        (family, kind, proto, _, address), *_ = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return False
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn does: a port whose last connections are closing (TIME_WAIT) is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def reachable(host: str) -> str:
    """The address this host reaches a server bound to `host` at."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach a server bound to `host` (localhost, 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def is_running(pid: int) -> bool:
    """Whether the process runs; one of this process's children (tests) is reaped once it ends."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG) != (0, 0):
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
