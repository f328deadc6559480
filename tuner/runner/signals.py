"""Stop a worker cleanly on SIGTERM/SIGINT: the running trial ends as FAIL, never stuck RUNNING.

`docker stop`, Kubernetes and `kill` send SIGTERM, which by default kills Python on the spot and
leaves the trial RUNNING until its heartbeat goes stale. Inside `interrupt_on_signals()` SIGTERM
raises KeyboardInterrupt like Ctrl-C does; `study.optimize` then marks the trial FAIL and re-raises,
and the caller exits. (A heartbeat-enabled storage re-queues such a trial only when a worker dies
without a word; an interrupted trial is a plain FAIL.)
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

logger = logging.getLogger(__name__)


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise KeyboardInterrupt in the main thread.

    SIGINT is included because it is ignored in some launch contexts (a background job of a
    non-interactive shell, PID 1 in a container). A second SIGTERM while the first is being
    handled is ignored, so the FAIL can still be written; a second Ctrl-C is not.
    Outside the main thread this does nothing (Python delivers signals only there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if received:
            logger.warning("already stopping; ignoring another SIGTERM")
            return
        received.append(signum)
        logger.warning("SIGTERM received: stopping after marking the running trial as failed")
        raise KeyboardInterrupt

    previous_term = signal.signal(signal.SIGTERM, on_sigterm)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
