"""The terminal a run writes to: its console and log format, the same in every worker process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from rich.console import Console
from rich.logging import RichHandler

# Off a terminal (a log file, a pipe, CI) lines are not wrapped: a log reader or grep wants
# `storage sqlite:///tuner.db` on one line, not cut at rich's default of 80 columns.
UNWRAPPED_WIDTH = 10_000
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer")


def make_console(*, stderr: bool = False) -> Console:
    """A console for people on a terminal; on anything else, plain lines that never wrap."""
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:
        console = Console(highlight=False, stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)
    return console


def configure_logging(level: int) -> None:
    """Log to stderr: rich lines on a terminal, timestamped plain lines elsewhere.

    Optuna logs every trial itself; tuner's progress already says it, once, so Optuna only
    speaks for warnings (everything in debug mode).
    """
    console = make_console(stderr=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    optuna.logging.set_verbosity(logging.DEBUG if level <= logging.DEBUG else logging.WARNING)
    # boto3 (an s3:// artifact store) logs at INFO where it found its endpoint and
    # credentials, on every command: only its warnings are news (all of it in debug mode).
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )


@contextmanager
def lines_for_python(console: Console) -> Iterator[None]:
    """While a run or retrain called from Python lasts, tuner's log lines reach `console`.

    Off a terminal (a notebook, a pipe) progress is log lines, which an unconfigured Python
    (a notebook, a script) would drop: they print as plain lines on `console` for the call's
    duration, and Optuna's own per-trial lines, which say the same again, are quieted. Where the
    caller configured logging (the CLI does, once), its handlers are kept and nothing changes.
    """
    logger = logging.getLogger("tuner")
    verbosity = optuna.logging.get_verbosity()
    if verbosity == logging.INFO:  # Optuna's default; a caller's DEBUG stays
        optuna.logging.set_verbosity(logging.WARNING)
    handler = None
    if not logger.hasHandlers():
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    level = logger.level
    if handler is not None and logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)
        if handler is not None:
            logger.removeHandler(handler)
            logger.setLevel(level)


@contextmanager
def logs_through(console: Console) -> Iterator[None]:
    """Meanwhile, rich log lines print through `console`.

    A live view redraws its lines on its own console; a warning written to another one lands
    after the live line, glued to it. Through the live view's console it gets a line of its own.
    """
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, RichHandler)]
    saved = [handler.console for handler in handlers]
    for handler in handlers:
        handler.console = console
    try:
        yield
    finally:
        for handler, previous in zip(handlers, saved, strict=True):
            handler.console = previous
