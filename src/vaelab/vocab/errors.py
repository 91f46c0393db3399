"""Errors a user can fix. Entry points print their message and exit 1, without a traceback.

Each module raises its own subclass (the name says where the problem is); the message names
the setting, file or id at fault and what to do about it. `HYDRA_FULL_ERROR=1` shows the full
traceback as well.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class UserError(Exception):
    """Bad input or a missing resource: the message says what is wrong and how to fix it."""


class ConfigError(UserError, ValueError):
    """A config value that is well-typed but unusable; the message names the key to fix."""


class DataError(UserError, RuntimeError):
    """MNIST is missing, incomplete or not the real thing; the message says how to fix it."""


class TrackingError(UserError, RuntimeError):
    """The run store cannot be used; the message names the URI and how to fix it."""


class ReportError(UserError, RuntimeError):
    """Nothing to report, or a report setting that cannot be honoured."""


class RerunError(UserError, RuntimeError):
    """The run cannot be re-created (unknown id, no config artifact) or strict mode refused."""


class NonFiniteLossError(UserError, FloatingPointError):
    """Training produced NaN or inf; the run stops and is marked FAILED."""


class RunFailed(RuntimeError):
    """A run ended FAILED and its failure is already written to the store.

    Raised from the original error (`__cause__`), so the caller knows both what went wrong
    and that nothing remains to record.
    """

    def __init__(self, run_id: str, error: BaseException):
        super().__init__(f"run {run_id} FAILED: {type(error).__name__}: {error}")
        self.run_id = run_id


def is_users_to_fix(error: BaseException) -> bool:
    """A user error itself, or a recorded run failure that a user error caused."""
    if isinstance(error, RunFailed):
        error = error.__cause__ or error
    return isinstance(error, UserError)


def interrupt_behind(error: BaseException | None) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM an error was raised while handling, if any.

    A signal lands between any two bytecodes. Inside a framework's context manager the
    interrupt can make its exit raise an error of its own (TensorFlow's device scope:
    "Exiting device scope without proper scope nesting", seen under load in CI), and the
    interrupt then survives only as that error's context: the run was stopped, not broken.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class ServerError(UserError, RuntimeError):
    """The team's store (PostgreSQL + mlflow server) cannot start; the message says why."""


@dataclass(frozen=True)
class KilledRun:
    """A run that Ctrl-C or SIGTERM ended KILLED, as the command's last line names it."""

    run_id: str
    epoch: int  # the last epoch it recorded (0: none)
    epochs: int  # of how many it was to train
    sweep_id: str | None = None


# The attribute of an interrupt that carries the runs it ended KILLED, up to the entry point.
_KILLED = "vaelab_killed_runs"


def note_killed(interrupt: BaseException, runs: Iterable[KilledRun]) -> None:
    """Attach to an interrupt the runs it ended KILLED.

    The recorder knows them; the entry point that prints the interrupt's line does not.
    """
    setattr(interrupt, _KILLED, [*killed_runs(interrupt), *runs])


def killed_runs(interrupt: BaseException) -> list[KilledRun]:
    return list(getattr(interrupt, _KILLED, ()))
