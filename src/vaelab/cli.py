"""What an entry point does with an error: a user's mistake is one clear message, not a trace.

`HYDRA_FULL_ERROR=1` (Hydra's own switch) shows the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from vaelab.errors import is_users_to_fix


def quiet_frameworks() -> None:
    """Keep the console for vaelab's own progress, not the frameworks' start-up chatter.

    TensorFlow's C++ INFO lines and MLflow's schema-migration INFO lines are noise; their
    warnings and errors still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error's message on stderr and exit 1; let every other error through."""
    try:
        yield
    except Exception as error:
        if not is_users_to_fix(error) or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
