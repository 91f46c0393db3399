"""What an entry point does with an error: a user's mistake is one clear message, not a trace.

`HYDRA_FULL_ERROR=1` (Hydra's own switch) shows the full traceback instead.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

from vaelab.edges import progress
from vaelab.edges.config_errors import check_home
from vaelab.edges.process import RunInterrupted
from vaelab.vocab.errors import is_users_to_fix

# What TensorFlow's C++ runtime writes to fd 2 before absl's logging is set up, whatever
# TF_CPP_MIN_LOG_LEVEL says (TF 2.21): absl's INFO lines ("I0000 00:00:1796147894.5 port.cc:153]
# oneDNN custom operations are on"), the banner before them, the cpu_feature_guard line's tail.
_NATIVE_NOISE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)
# Set to 1 to see every line the native runtimes write (the tests set it: pytest owns fd 2).
RAW_STDERR = "VAELAB_RAW_STDERR"


def quiet_frameworks() -> None:
    """Keep the console for vaelab's own progress, not the frameworks' start-up chatter.

    TensorFlow's C++ INFO lines and MLflow's schema-migration INFO lines are noise; their
    warnings and errors still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    for name in ("mlflow.store.db.utils", "alembic.runtime.migration", "jax._src.xla_bridge"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if os.environ.get(RAW_STDERR) != "1":
        _filter_native_stderr()


# The filter: a process of its own that copies stdin to stdout line by line, dropping the
# lines that match the pattern in argv[1]. Not a thread: a thread dies with a crashing process
# (an abort in native code), and with it the last lines the crash wrote, which sit in the pipe.
# A process reads the pipe to its end, whenever and however every writer goes.
_FILTER = """
import re, sys
noise = re.compile(sys.argv[1])
out = sys.stdout.buffer
for line in iter(sys.stdin.buffer.readline, b""):
    if not noise.match(line.decode(errors="replace")):
        try:
            out.write(line)
            out.flush()
        except OSError:  # the console went away: keep draining, so no writer ever blocks
            pass
"""


def _filter_native_stderr() -> None:
    """Pass fd 2 through a filter process that drops `_NATIVE_NOISE`, line by line.

    The C++ runtime writes below Python (no logger or env var reaches those lines), so the
    file descriptor itself goes through a pipe; everything else, warnings, errors and
    tracebacks, is forwarded as it comes, and the last lines before a crash are forwarded
    after it (the filter outlives the process). Worker processes inherit the filtered fd.
    """
    if getattr(_filter_native_stderr, "started", False):
        return
    _filter_native_stderr.started = True
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    filter_process = subprocess.Popen(
        [sys.executable, "-S", "-c", _FILTER, _NATIVE_NOISE.pattern],
        stdin=read_end,
        stdout=2,  # the console, still
        start_new_session=True,  # Ctrl-C stops the command, not the copy of its last lines
    )
    os.close(read_end)
    progress.remember_console(2)
    console = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:  # at exit: our end closed, the filter drains the pipe and ends
        sys.stderr.flush()
        os.dup2(console, 2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            filter_process.wait(timeout=0.5)  # longer only if a worker still holds the pipe

    atexit.register(restore)


@contextmanager
def user_errors() -> Iterator[None]:
    """Print a user error's message on stderr and exit 1; let every other error through."""
    try:
        yield
    except Exception as error:
        if not _one_line(error):
            raise
        print(f"Error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _one_line(error: BaseException) -> bool:
    """A user's mistake is shown as its message alone, unless the full error is asked for."""
    return is_users_to_fix(error) and os.environ.get("HYDRA_FULL_ERROR") != "1"


def exit_for(error: Exception, context: str) -> SystemExit:
    """Report an error as `user_errors` would, where raising it would be lost; exit 1.

    Hydra turns an exception in a callback into a warning and carries on: a sweep that cannot
    be tracked must stop, so the callback raises this instead. A user's mistake is one line;
    anything else (or HYDRA_FULL_ERROR=1) shows its traceback.
    """
    if _one_line(error):
        print(f"Error: {context}: {error}", file=sys.stderr)
    else:
        traceback.print_exception(error)
    return SystemExit(1)


def run_command(
    main: Callable[[], object],
    config_name: str,
    prepare: Callable[[list[str]], list[str]] | None = None,
) -> None:
    """What `python pipelines/<script>.py` does: `--help`, or the Hydra app; then `leave`.

    A mistake in the command line or VAELAB_HOME, and Ctrl-C or SIGTERM, are one line each.
    `prepare` rewrites the command line's arguments before Hydra reads them (a sweep's seeds).
    """
    if help_requested():
        print_help(config_name)
        leave(0)
    try:
        with user_errors():
            check_home()
            if prepare is not None:
                sys.argv[1:] = prepare(sys.argv[1:])
        _translate_hydra_errors(config_name)
        refuse_credentials(sys.argv[1:])
        with private_outputs():
            main()
    except SystemExit as exit:
        leave(exit_code(exit))
    except KeyboardInterrupt as interrupt:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(interrupted_line(interrupt, sys.argv), file=sys.stderr)
        leave(signal_exit_code(interrupt))
    leave(0)


def _translate_hydra_errors(config_name: str) -> None:
    """Hydra's composition errors as the one line of `config_errors.config_error`.

    Hydra prints a typo'd key, a wrong type or an unknown preset in 6 to 12 lines (advising
    `+key=value` for a typo, which is wrong), and has no hook for it: its `run_and_report`,
    which wraps composing and running the app, is wrapped in turn. Where Hydra's internals
    differ from 1.3's, its own messages stay.
    """
    import hydra
    from hydra._internal import utils as hydra_utils

    from vaelab.edges.config_errors import config_error

    current = getattr(hydra_utils, "run_and_report", None)
    if current is None or not hydra.__version__.startswith("1.3."):
        return
    original = getattr(current, "hydras", current)  # a process may run several commands

    def run_and_report(func: Callable[[], object]) -> object:
        def translated() -> object:
            try:
                return func()
            except Exception as error:
                if (mistake := config_error(error, config_name)) is None:
                    raise
                with user_errors():  # one line and exit 1, or HYDRA_FULL_ERROR's traceback
                    raise mistake from error

        return original(translated)

    run_and_report.hydras = original
    hydra_utils.run_and_report = run_and_report


def interrupted_line(interrupt: KeyboardInterrupt, argv: list[str]) -> str:
    """What Ctrl-C or SIGTERM prints: the runs it ended KILLED, and the command to resume.

    The runs come from the recorder (`errors.killed_runs`); resuming is the same command
    again (a relaunch of train.py carries KILLED runs on from their last checkpoint).
    """
    import shlex

    from vaelab.vocab.errors import killed_runs

    killed = killed_runs(interrupt)
    how = "SIGTERM" if isinstance(interrupt, RunInterrupted) else "Ctrl-C"
    command = shlex.join(["python", f"pipelines/{Path(argv[0]).name}", *argv[1:]])
    if not killed:
        return f"Interrupted ({how}). To carry on, run the same command again: {command}"
    first = killed[0]
    where = f"run {first.run_id} KILLED after epoch {first.epoch}/{first.epochs}"
    if len(killed) > 1:
        where += f" (and {len(killed) - 1} more of its group)"
    if first.sweep_id:
        where = f"sweep {first.sweep_id}: {where}"
    again = "Resume with" if Path(argv[0]).name == "train.py" else "Run it again with"
    return f"Interrupted ({how}): {where}. {again}: {command}"


def signal_exit_code(interrupt: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a command a signal ended."""
    return 128 + (signal.SIGTERM if isinstance(interrupt, RunInterrupted) else signal.SIGINT)


def exit_code(exit: SystemExit) -> int:
    """The status the interpreter would exit with, printing a message as it would."""
    if exit.code is None or isinstance(exit.code, int):
        return exit.code or 0
    print(exit.code, file=sys.stderr)
    return 1


def leave(code: int) -> NoReturn:
    """Exit now, without the interpreter's teardown of TensorFlow, Keras and MLflow.

    Tearing those modules down takes seconds (docs/benchmarks.md) and does nothing a finished
    command needs: by now every run is closed and every write committed. Exit handlers still
    run and every stream is flushed. Where worker processes or threads are still alive (a
    joblib pool), the ordinary exit waits for them as it should.
    """
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if multiprocessing.active_children() or any(not t.daemon for t in others):
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def help_requested() -> bool:
    return any(arg in ("--help", "-h") for arg in sys.argv[1:])


def print_help(config_name: str) -> None:
    """What --help shows (vaelab.edges.help): the command's presets, keys and examples.

    Hydra's own `--help` composes every group of every installed plugin and takes seconds;
    this composes the command's config once. `--hydra-help` still shows Hydra's.
    """
    from vaelab.edges.config import project_root
    from vaelab.edges.help import help_text

    conf = Path(project_root()) / "conf"
    script = Path(sys.argv[0]).name
    overrides = [a for a in sys.argv[1:] if a not in ("--help", "-h")]
    doc = getattr(sys.modules.get("__main__"), "__doc__", None) or ""
    print(help_text(script, config_name, conf, overrides, doc))


def refuse_credentials(arguments: list[str]) -> None:
    """Refuse a password on the command line before Hydra writes a word of it (exit 1).

    Hydra copies every override into its outputs (`.hydra/overrides.yaml`, `config.yaml`,
    `hydra.yaml`, and `multirun.yaml` for a sweep) before the command itself runs, so the
    check in `tracking` would come after the secret is on disk. Here, each URI in an
    override is checked by the same rule (`store_uri`), with the same one line.
    """
    from vaelab.edges.store_uri import carries_credentials, credentials_refusal, uris_in

    for argument in arguments:
        key, equals, value = argument.partition("=")
        if argument.startswith("-") or not equals:
            continue
        if any(carries_credentials(uri) for uri in uris_in(value)):
            print(f"Error: {credentials_refusal(key.lstrip('+~'))}", file=sys.stderr)
            raise SystemExit(1)


@contextmanager
def private_outputs() -> Iterator[None]:
    """What the command writes is its owner's only: Hydra's outputs, logs, reports, stores.

    Hydra creates its folders and files with the process's umask (0755 and 0644 under the
    usual 022); a run's config and log are nobody else's to read. Restored after, for a caller
    that goes on (the tests run the pipelines in their own process).
    """
    from vaelab.edges.private import PRIVATE_UMASK

    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)
