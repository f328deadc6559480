"""Files a user names: read as text with one-line errors, written atomically, named safely,
and the TOML values tuner writes (`toml_value`).

Writes go to a temporary file next to the target, renamed over it only when complete (a rename
within a folder is atomic), so readers never see half of one. A study's name becomes part of a
file name only through `study_slug`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tuner.errors import TunerError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path next to `path` that replaces `path` only when the block succeeds.

    Creates missing parent folders; the temporary file is removed whatever happens.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the file from the rest of a team
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` via a temporary file and a rename; returns `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_text_file(path: Path, kind: str) -> str:
    """The text of a UTF-8 file the user named; any failure is a TunerError naming it and `kind`.

    `kind` says what the file should be ("study file", "model card"). A leading byte-order
    mark is dropped: editors on Windows like to start UTF-8 files with one.
    """
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TunerError(f"{path}: no such {kind}") from None
    except IsADirectoryError:
        raise TunerError(f"{path}: is a directory, not a {kind}") from None
    except UnicodeDecodeError as exc:
        raise TunerError(
            f"{path}: not a UTF-8 text file (byte {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise TunerError(f"{path}: cannot read {kind}: {exc.strerror or exc}") from None


# A study name's length in UTF-8 bytes: `NAME.toml` and the names derived from it stay far below
# what filesystems allow for one file name (NAME_MAX, 255 bytes on Linux and macOS).
MAX_NAME_BYTES = 128


def name_too_long(name: str) -> str | None:
    """Why `name` is too long for a study name ("has 300 bytes ..."), None when it is not."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if size <= MAX_NAME_BYTES:
        return None
    return f"has {size} bytes in UTF-8, more than the {MAX_NAME_BYTES} a study name may have"


SLUG_MAX_CHARS = 64  # of the readable part; the whole slug stays far below NAME_MAX (255 bytes)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_UNSAFE_RUN = re.compile(r"[^A-Za-z0-9._-]+")


def study_slug(name: str) -> str:
    """A study name as one safe file-name component: the only way a name becomes a path.

    A name of letters, digits, `.`, `_` and `-` that starts with a letter, digit or `_` and has
    at most SLUG_MAX_CHARS characters is its own slug (`digits-quick`). Any other name keeps
    its safe characters (each other run, such as `/`, spaces, control or non-ASCII characters,
    becomes `-`; leading dots and dashes go, so never `..`, hidden or option-like), shortened
    to SLUG_MAX_CHARS, then `~` and 8 hex digits of the name's SHA-256. `~` never occurs in a
    name that is its own slug, so distinct names get distinct slugs. Stored studies can have
    any name (Optuna takes any string), so this never fails.
    """
    if len(name) <= SLUG_MAX_CHARS and _SAFE_NAME.fullmatch(name):
        return name
    cleaned = _UNSAFE_RUN.sub("-", name).lstrip(".-")[:SLUG_MAX_CHARS].rstrip(".-")
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned or 'study'}~{digest}"


def toml_value(value: Any) -> str:
    """A value as TOML text: bools, ints, floats (nan, inf), strings, lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back as the same float
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as a TOML value")
