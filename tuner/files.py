"""Files a user names: read as text with one-line errors, written atomically.

Writes go to a temporary file next to the target, renamed over it only when complete (a rename
within a folder is atomic), so readers never see half of one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
