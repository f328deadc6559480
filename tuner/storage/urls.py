"""Storage URLs and settings: which URL and retry window to use, parsing, hiding the password."""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path

import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

from tuner.errors import TunerError

DEFAULT_STORAGE_URL = "sqlite:///tuner.db"  # a file in the working directory
STORAGE_ENV = "TUNER_STORAGE"
STORAGE_FILE_ENV = "TUNER_STORAGE_FILE"  # a file holding the URL: a docker/k8s secret
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
    """The storage URL to use: the `--storage` flag, else $TUNER_STORAGE, else the file that
    $TUNER_STORAGE_FILE names (a docker or Kubernetes secret), else the default.

    A URL in an environment variable or a file stays out of `ps`; one on the command line does
    not. Raises TunerError when both variables are set or the file cannot be read.
    """
    if cli_value:
        return cli_value
    given, path = os.environ.get(STORAGE_ENV), os.environ.get(STORAGE_FILE_ENV)
    if given and path:
        raise TunerError(f"${STORAGE_ENV} and ${STORAGE_FILE_ENV} are both set: unset one")
    if path:
        return read_storage_file(Path(path))
    return given or DEFAULT_STORAGE_URL


def read_storage_file(path: Path) -> str:
    """The storage URL in the file at `path` (its first line), as ${STORAGE_FILE_ENV} names it."""
    where = f"${STORAGE_FILE_ENV}={path}"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise TunerError(f"{where}: cannot read the storage URL: {why}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise TunerError(f"{where}: the file is empty; write the storage URL on its first line")
    return lines[0]


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


# Query parameters that carry a secret (`?password=...` is a libpq connection parameter).
_SECRET_PARAMETER = re.compile(r"([?&][^=&#]*(?:password|secret|token)[^=&#]*=)[^&#]*", re.I)
PERCENT_ENCODING = "percent-encode '@' as %40, ':' as %3A and '/' as %2F in the password"


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ***, safe for messages and logs.

    The password is hidden wherever it is: after `user:` up to the last `@` before the query
    (an unencoded `@` in it included), and in query parameters such as `?password=`.
    """
    if isinstance(url, URL):
        text = url.render_as_string(hide_password=True)
    else:
        at = _userinfo_end(url)
        text = _masked_userinfo(url, at)
        if at is None or url.count("@", 0, at + 1) == 1:  # parsed the same by SQLAlchemy
            with contextlib.suppress(sqlalchemy.exc.ArgumentError, ValueError):
                text = make_url(url).render_as_string(hide_password=True)
    return _SECRET_PARAMETER.sub(r"\1***", text)


def _userinfo_end(url: str) -> int | None:
    """The index of the last `@` of the URL's authority, before any query; None without one."""
    start = url.find("://")
    if start < 0 or url.startswith("/", start + 3):  # journal:PATH, sqlite:///PATH
        return None
    query = url.find("?", start)
    at = url.rfind("@", start, len(url) if query < 0 else query)
    return None if at < 0 else at


def _masked_userinfo(url: str, at: int | None) -> str:
    if at is None:
        return url
    colon = url.find(":", url.find("://") + 3, at)
    return url if colon < 0 else f"{url[: colon + 1]}***{url[at:]}"


def parse_url(url: str) -> URL:
    """The URL's parts, or a one-line TunerError saying why it is not a storage URL."""
    at = _userinfo_end(url)
    if at is not None and url.count("@", 0, at) > 0:  # SQLAlchemy would split at the first `@`
        raise TunerError(
            f"storage URL {mask_url(url)}: '@' appears more than once before the host; "
            f"{PERCENT_ENCODING} (Python: urllib.parse.quote(password, safe=''))"
        )
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        hint = f"; did you mean sqlite:///{url}?" if url.endswith(".db") else ""
        raise TunerError(f"not a storage URL: {mask_url(url)!r}; use {SUPPORTED}{hint}") from None
    except ValueError:  # SQLAlchemy reads the port with int()
        port = re.search(r"@[^/@]*:([^/:@]*)(?:/|$)", url)
        what = f"port {port.group(1)!r} is not a number" if port else "it cannot be parsed"
        hint = f"; {PERCENT_ENCODING}" if at is not None else ""
        raise TunerError(f"storage URL {mask_url(url)}: {what}; use {SUPPORTED}{hint}") from None
