"""The `tuner` app, the options several verbs share (declared once), and study lookup."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import optuna
import typer
from rich.console import Console

from tuner.cli.errors import TunerGroup
from tuner.runner.console import configure_logging, make_console

app = typer.Typer(
    cls=TunerGroup,
    help="Hyperparameter tuning for CNN image classifiers (Optuna + PyTorch).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

StudyOption = Annotated[
    str,
    typer.Option("--study", "-s", help="Study name in the studies folder, or a .toml file path."),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Storage URL: sqlite:///FILE, or postgresql+psycopg:// then user@host/db. "
        "Default: $TUNER_STORAGE, else sqlite:///tuner.db in the working directory.",
    ),
]
StudiesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--studies-dir",
        help="Folder of study files. Default: $TUNER_STUDIES_DIR, else ./studies, "
        "else the studies shipped with tuner.",
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Dataset files. Default: $TUNER_DATA_DIR, else ~/.cache/tuner/data."
    ),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Decoded-tensor cache. Default: $TUNER_CACHE_DIR, else ~/.cache/tuner/tensors.",
    ),
]
ArtifactsOption = Annotated[
    str | None,
    typer.Option(
        "--artifacts",
        help="Where trials keep checkpoints and best weights: a folder or s3://BUCKET "
        "(an existing bucket; needs boto3: pip install 'tuner[s3]'). "
        "Default: $TUNER_ARTIFACTS, else next to a SQLite or journal file (tuner.db.artifacts), "
        "else under the user's cache folder.",
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
]


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Set up logging once for every verb."""
    configure_logging(logging.DEBUG if verbose else logging.INFO)


def console() -> Console:
    """Where verbs print: stdout, unwrapped off a terminal."""
    return make_console()


def studies_dir(option: Path | None) -> Path:
    """Where `--study NAME` is looked up."""
    from tuner.api import studies_dir as lookup

    return lookup(option)


def study_file(study: str, studies: Path | None) -> Path:
    """The study file `--study` names (a name in the studies folder, or a path)."""
    from tuner.api import study_source

    return study_source(study, studies).path


def study_name(study: str, studies: Path | None) -> str:
    """`--study` for verbs that read storage: a study file's name, or a stored study's name."""
    from tuner.api import stored_study_name

    return stored_study_name(study, studies)


def load_stored_study(name: str, storage_option: str | None) -> optuna.Study:
    """Study `name` from the storage `--storage` names; a one-line error when it isn't there."""
    from tuner.storage import load_stored_study as load
    from tuner.storage import resolve_storage_url

    return load(name, resolve_storage_url(storage_option))


def spec_and_study(study: str, storage: str | None, studies: Path | None):
    """The study file (for its train/validation split) and the stored study it created."""
    from tuner import attrs
    from tuner.errors import TunerError
    from tuner.files import name_too_long
    from tuner.spec import load_spec

    try:
        path = study_file(study, studies)
    except TunerError:
        if Path(study).suffix == ".toml" or name_too_long(Path(study).name):
            raise
    else:
        spec = load_spec(path)
        return spec, load_stored_study(spec.name, storage)
    stored = load_stored_study(study, storage)  # a stored name: its study file, as recorded
    recorded = stored.user_attrs.get(attrs.STUDY_FILE)
    if not recorded:
        raise TunerError(f"study {study!r} does not record its study file; pass --study FILE")
    return load_spec(Path(recorded)), stored
