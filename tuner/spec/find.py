"""`--study NAME_OR_PATH` -> the study file, and the study files a folder holds."""

from __future__ import annotations

from pathlib import Path

from tuner.errors import TunerError
from tuner.files import name_too_long


def find_study_file(name_or_path: str, studies_dir: Path) -> Path:
    """Resolve `--study`: a path to a .toml file, or a name in `studies_dir`.

    A name wins over a file or folder of that name in the working directory (`--study mnist`
    next to an `mnist/` data folder). Raises TunerError listing the available studies when
    nothing matches.
    """
    candidate = Path(name_or_path)
    too_long = name_too_long(candidate.name) if candidate.suffix != ".toml" else None
    if too_long:
        raise TunerError(f"--study {name_or_path[:40]!r}... {too_long}")
    if candidate.suffix == ".toml":
        # `--study mnist.toml` also finds studies/mnist.toml
        named = studies_dir / candidate.name if candidate.parent == Path() else candidate
        candidates = [candidate, named]
    else:
        named = studies_dir / f"{name_or_path}.toml"
        candidates = [named, candidate]
    for path in candidates:
        try:
            if path.is_file():
                return path
        except OSError as exc:  # a file name longer than the filesystem takes, ...
            raise TunerError(f"--study {str(path)[:60]!r}...: {exc.strerror or exc}") from None
    available = ", ".join(p.stem for p in list_study_files(studies_dir)) or "(none)"
    if candidate.suffix == ".toml":
        raise TunerError(f"{candidate}: no such study file; studies in {studies_dir}: {available}")
    if candidate.is_dir():
        raise TunerError(f"{candidate}: is a directory, not a study file or a study name")
    raise TunerError(
        f"unknown study {name_or_path!r}: no {named}; available in {studies_dir}: {available}"
    )


def list_study_files(studies_dir: Path) -> list[Path]:
    """Study files in `studies_dir`, sorted by name."""
    if not studies_dir.is_dir():
        return []
    return sorted(studies_dir.glob("*.toml"))
