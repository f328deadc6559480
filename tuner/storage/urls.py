"""Storage URLs and settings: which URL and retry window to use, parsing, hiding the password."""

from __future__ import annotations

import math
import os
import re

import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from tuner.errors import TunerError

DEFAULT_STORAGE_URL = "sqlite:///tuner.db"  # a file in the working directory
STORAGE_ENV = "TUNER_STORAGE"
JOURNAL_PREFIX = "journal:"
SUPPORTED = "sqlite:///PATH, postgresql://USER:PASSWORD@HOST:PORT/DB or journal:PATH"

# How long calls wait for an unreachable database (restart, failover, a locked SQLite file)
# before the worker gives up. A managed PostgreSQL fails over in about 30-120 s.
RETRY_SECONDS_ENV = "TUNER_STORAGE_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 60.0

HEARTBEAT_INTERVAL = 30  # seconds between a running trial's heartbeats
MIN_GRACE_PERIOD = 90  # a trial whose heartbeat is older than this is failed and retried
# After an outage the workers' heartbeats resume within RetryingStorage's longest backoff (4 s);
# the grace period must cover a heartbeat interval, the whole retry window and that backoff, or
# a worker coming back could fail the trials of workers that rode the outage out with it.
GRACE_MARGIN = 10


def resolve_storage_url(cli_value: str | None) -> str:
    """The storage URL to use: the `--storage` flag, else $TUNER_STORAGE, else the default."""
    return cli_value or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE_URL


def resolve_retry_seconds(cli_value: float | None) -> float:
    """The outage retry window: `--storage-retry-seconds`, else its environment variable, else
    the default (60 s)."""
    if cli_value is not None:
        return cli_value
    text = os.environ.get(RETRY_SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise TunerError(f"${RETRY_SECONDS_ENV}={text!r}: must be a number of seconds above 0")
    return value


def grace_period_for(retry_seconds: float, heartbeat_interval: int) -> int:
    """The default grace period: at least 90 s, and longer than any outage workers ride out."""
    return max(MIN_GRACE_PERIOD, math.ceil(retry_seconds) + heartbeat_interval + GRACE_MARGIN)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def parse_url(url: str) -> URL:
    """The URL's parts, or a one-line TunerError saying why it is not a storage URL."""
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        hint = f"; did you mean sqlite:///{url}?" if url.endswith(".db") else ""
        raise TunerError(f"not a storage URL: {mask_url(url)!r}; use {SUPPORTED}{hint}") from None
    except ValueError:  # SQLAlchemy reads the port with int()
        port = re.search(r"@[^/@]*:([^/:@]*)(?:/|$)", url)
        what = f"port {port.group(1)!r} is not a number" if port else "it cannot be parsed"
        raise TunerError(f"storage URL {mask_url(url)}: {what}; use {SUPPORTED}") from None
