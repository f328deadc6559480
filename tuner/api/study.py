"""The `study` argument of every entry point: a study file, a shipped study's name, or a dict.

`tuner run --study X` and `tuner.run(X)` resolve X here, the same way: a path to a .toml file,
or a name looked up in the studies folder; from Python also a dict in the TOML's structure,
validated by the same checks as a file (`tuner.spec.load_spec`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.files import name_too_long

if TYPE_CHECKING:
    from tuner.spec import StudySpec

# A study file's path, a study's name (in the studies folder, or in storage for the verbs
# that read it), or a study as a dict of its tables.
StudyLike = str | os.PathLike[str] | Mapping[str, Any]

# The repository's studies/, which tuner/studies links to and a wheel ships as package data.
REPO_STUDIES_DIR = Path(__file__).resolve().parent.parent.parent / "studies"


def studies_dir(option: Path | str | None = None) -> Path:
    """Where a study name is looked up: `option`, $TUNER_STUDIES_DIR, ./studies, the shipped."""
    if option is not None:
        return Path(option)
    if "TUNER_STUDIES_DIR" in os.environ:
        return Path(os.environ["TUNER_STUDIES_DIR"])
    local = Path("studies")
    return local if local.is_dir() else REPO_STUDIES_DIR


@dataclass(frozen=True)
class StudySource:
    """Where a study comes from: its file, or a dict (then `path` only names it in messages)."""

    path: Path
    data: dict[str, Any] | None = None

    def spec(self) -> StudySpec:
        """The validated study; TunerError naming the file (or `<dict>`) and the key."""
        from tuner.spec import load_spec

        return load_spec(self.path, self.data)


def study_source(study: StudyLike, studies: Path | str | None = None) -> StudySource:
    """`study` as a source to load: a dict as given, else the study file it names."""
    from tuner.spec import find_study_file
    from tuner.spec.parse import DICT_STUDY

    if isinstance(study, Mapping):
        return StudySource(DICT_STUDY, dict(study))
    _check_type(study)
    return StudySource(find_study_file(os.fspath(study), studies_dir(studies)))


def stored_study_name(study: StudyLike, studies: Path | str | None = None) -> str:
    """The name in storage of `study`: its file's or dict's `name`, else `study` itself.

    For the verbs that read storage (trials, best, report): a string that names no study file
    is taken as the name of a study in storage; a missing .toml file is an error.
    """
    if isinstance(study, Mapping):
        return study_source(study).spec().name
    _check_type(study)
    try:
        source = study_source(study, studies)
    except TunerError:
        if Path(os.fspath(study)).suffix == ".toml" or name_too_long(Path(os.fspath(study)).name):
            raise  # a name longer than a study name may be is no name in storage either
        return os.fspath(study)  # not a file: the name of a study in storage
    return source.spec().name


def _check_type(study: Any) -> None:
    if not isinstance(study, str | os.PathLike):
        raise TunerError(
            f"study: a study file's path, a study name or a dict, got {type(study).__name__}"
        )
