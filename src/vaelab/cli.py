"""What an entry point does with an error: a user's mistake is one clear message, not a trace.

`HYDRA_FULL_ERROR=1` (Hydra's own switch) shows the full traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


def help_requested() -> bool:
    return any(arg in ("--help", "-h") for arg in sys.argv[1:])


def print_help(config_name: str) -> None:
    """What --help shows: the config groups and their options, and the composed config.

    Hydra's own `--help` composes every group of every installed plugin and takes seconds;
    this reads conf/ and composes once. `--hydra-help` still shows Hydra's.
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vaelab.config import project_root

    conf = Path(project_root()) / "conf"
    script = Path(sys.argv[0]).name
    groups = sorted(
        (d.name, sorted(f.stem for f in d.glob("*.yaml")))
        for d in conf.iterdir()
        if d.is_dir() and d.name != "hydra"
    )
    launchers = sorted(f.stem for f in (conf / "hydra" / "launcher").glob("*.yaml"))
    overrides = [a for a in sys.argv[1:] if a not in ("--help", "-h")]
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        composed = compose(config_name=config_name, overrides=overrides)
    lines = [
        f"{script}: override any setting as key=value, choose a preset as group=option.",
        f"  python pipelines/{script} --cfg job      the composed config, nothing run",
        f"  python pipelines/{script} --hydra-help   Hydra's own options",
        "",
        "Config groups (conf/):",
        *[f"  {name}: {', '.join(options)}" for name, options in groups],
        f"  hydra/launcher (with --multirun): {', '.join(launchers)}",
        "",
        "The composed config:",
        OmegaConf.to_yaml(composed),
    ]
    print("\n".join(lines))
