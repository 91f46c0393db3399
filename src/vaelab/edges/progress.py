"""Live progress on a terminal (tqdm): a run's or a packed group's steps, a sweep's runs.

Only on a terminal. Anywhere else (CI, a file, Hydra's job logs, a notebook's captured
stream) nothing is drawn and the output stays the plain log lines, which say the same at
each epoch's end. Bars go to the terminal itself: the pipelines pass fd 2 through a filter
that forwards whole lines, and a bar redraws its line without ending it. `VAELAB_PROGRESS=0`
turns them off, `=1` forces them (a terminal that reports itself as none).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

SWITCH = "VAELAB_PROGRESS"
_console: TextIO | None = None  # the terminal, when fd 2 was one before the filter took it


def remember_console(fd: int) -> None:
    """Keep the terminal that fd 2 was before it was rewired (called by `cli`)."""
    global _console
    if os.isatty(fd):
        _console = os.fdopen(os.dup(fd), "w", buffering=1, closefd=True)


def terminal() -> TextIO | None:
    """Where bars go: the terminal, or None where progress is plain log lines."""
    switch = os.environ.get(SWITCH)
    if switch == "0":
        return None
    if _console is not None:
        return _console
    stream = sys.stderr
    if switch == "1" or (hasattr(stream, "isatty") and stream.isatty()):
        return stream
    return None


def bar(total: int, description: str, unit: str, leave: bool = True) -> Any:
    """A tqdm bar on the terminal, or None when there is no terminal."""
    stream = terminal()
    if stream is None:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, desc=description, unit=unit, file=stream, leave=leave,
        ncols=_columns(stream), smoothing=0.3, mininterval=0.2,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} "
                   "[{elapsed}<{remaining}{postfix}]",
    )  # fmt: skip


class _AboveBars(logging.Handler):
    """A console handler that prints each line above the bars (tqdm.write), not through them."""

    def __init__(self, replaced: logging.Handler, stream: TextIO):
        super().__init__(replaced.level)
        self.setFormatter(replaced.formatter)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _columns(stream: TextIO) -> int:
    """The terminal's width; 100 where it reports none (a new pseudo-terminal reports 0)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        columns = 0
    return columns or 100


@contextlib.contextmanager
def logs_above_bars() -> Iterator[None]:
    """While bars are drawn, the console's log lines are printed above them."""
    stream = terminal()
    if stream is None:
        yield
        return
    swapped = []
    for logger in (logging.getLogger(), logging.getLogger("vaelab")):
        for handler in list(logger.handlers):
            console = isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            )
            if console and handler.stream in (sys.stdout, sys.stderr):
                replacement = _AboveBars(handler, stream)
                logger.removeHandler(handler)
                logger.addHandler(replacement)
                swapped.append((logger, handler, replacement))
    try:
        yield
    finally:
        for logger, handler, replacement in swapped:
            logger.removeHandler(replacement)
            logger.addHandler(handler)
