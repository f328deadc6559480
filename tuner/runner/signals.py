"""Stop a worker cleanly on SIGTERM/SIGINT: the running trial ends as FAIL and is queued again.

`docker stop`, Kubernetes and `kill` send SIGTERM, which by default kills Python on the spot and
leaves the trial RUNNING until its heartbeat goes stale. Inside `interrupt_on_signals()` SIGTERM
raises KeyboardInterrupt like Ctrl-C does; `study.optimize` then marks the trial FAIL and re-raises,
and the caller queues the same parameters again (`retry_interrupted`), as the storage does for
a trial whose worker died, and exits with one line.
"""

from __future__ import annotations

import logging
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _QuietWhileStopping(logging.Filter):
    """Drops what Optuna logs about a stop the user asked for: the caller says it, once.

    Optuna logs "Trial N failed ... KeyboardInterrupt()" with the traceback of every frame the
    signal cut through, then "Trial N failed with value None."; after a stop signal these are
    noise before the one line that matters. Records that carry a KeyboardInterrupt are dropped
    from any logger.
    """

    def __init__(self, stopping: list[int]) -> None:
        super().__init__()
        self.stopping = stopping

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt):
            return False
        return not (self.stopping and record.name.startswith("optuna"))


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise KeyboardInterrupt in the main thread.

    SIGINT is included because it is ignored in some launch contexts (a background job of a
    non-interactive shell, PID 1 in a container). A second SIGTERM while the first is being
    handled is ignored, so the FAIL can still be written; a second Ctrl-C is not. The signals
    are unblocked on entry: a parent may start its workers with them blocked, so that a signal
    that arrives while a worker starts up waits for these handlers. No log record inside the
    block shows the interrupt's traceback. Outside the main thread this does nothing (Python
    delivers signals only there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if received:
            logger.debug("already stopping; ignoring another SIGTERM")
            return
        received.append(signum)
        logger.debug("SIGTERM received: stopping after marking the running trial as failed")
        raise KeyboardInterrupt

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    quiet = _QuietWhileStopping(received)
    handlers = {
        handler
        for name in ("", "optuna")  # the root logger's handlers, and Optuna's own
        for handler in logging.getLogger(name).handlers
    }
    for handler in handlers:
        handler.addFilter(quiet)
    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    previous_int = signal.signal(signal.SIGINT, on_sigint)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
        for handler in handlers:
            handler.removeFilter(quiet)


def retry_interrupted(study: optuna.Study, trial_number: int | None) -> int | None:
    """Queue the parameters of interrupted trial `trial_number` to run again; its number, or None.

    Only a trial that the interrupt left FAIL is queued (not one that finished before the
    signal came). The retry is Optuna's stale-trial retry, the same the storage uses for a
    trial whose worker died: a WAITING copy that the next trial of any worker takes first,
    marked with the number of the trial it retries.
    """
    if trial_number is None:
        return None
    trials = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    interrupted = next((t for t in trials if t.number == trial_number), None)
    if interrupted is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # No limit: a trial is retried as often as a person interrupts it.
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, interrupted)
    return trial_number
