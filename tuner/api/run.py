"""`tuner.run` / `tuner run`: run a study's trials and say how it ended."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.api.study import StudyLike, study_source
from tuner.errors import TunerError

if TYPE_CHECKING:
    from rich.console import Console

    from tuner.runner.summary import RunSummary
    from tuner.spec import StudySpec


def run(
    study: StudyLike,
    *,
    budget: str | float | None = None,
    trials: int | None = None,
    storage: str | None = None,
    artifacts: str | None = None,
    data_dir: Path | str | None = None,
    workers: int | str = 1,
    device: str = "auto",
    cache_dir: Path | str | None = None,
    timeout: float | None = None,
    precision: str = "auto",
    compile: bool = False,
    force: bool = False,
    devices: str | None = None,
    jobs_per_device: int | None = None,
    storage_retry_seconds: float | None = None,
    from_study: str | None = None,
    enqueue_from: str | None = None,
    top: int = 5,
    enqueue_storage: str | None = None,
    studies_dir: Path | str | None = None,
    started_at: float | None = None,
    console: Console | None = None,
) -> RunSummary:
    """Run trials of `study` until it has `trials` finished ones or `budget` runs out.

    `study`: a study file's path, a name in the studies folder, or a dict in the study file's
    structure. The keywords are `tuner run`'s options (`budget` as "10m" or seconds, `workers`
    a count or "auto"); `storage` defaults to $TUNER_STORAGE, else sqlite:///tuner.db;
    `artifacts` (where trials keep checkpoints and best weights) to $TUNER_ARTIFACTS, else next
    to the storage (`tuner.storage.artifacts.resolve_artifacts`). Shows
    progress on `console` (live on a terminal, plain lines elsewhere, as in a notebook) and the
    summary the command ends with. Returns that summary: the study's name, why the run
    stopped, the trials it ran by state, the best value and parameters so far.

    Raises TunerError for a user's mistake (the CLI's one-line message), before anything is
    written to storage when the study or an option is wrong, and for an error that stopped
    the run (a database lost for too long) after the summary. An interrupted run returns its
    summary, with reason "interrupted".
    """
    from tuner.engine import EngineOptions
    from tuner.runner.console import lines_for_python, make_console
    from tuner.runner.run import run_study
    from tuner.runner.settings import RunSettings, run_budget, unused_trials_note
    from tuner.runner.summary import print_run_end
    from tuner.storage import resolve_storage_url
    from tuner.storage.artifacts import resolve_artifacts

    started_at = time.time() if started_at is None else started_at  # the budget counts from here
    out = console or make_console()
    storage_url = resolve_storage_url(storage)
    source = _run_source(study, studies_dir, storage_url, out)
    if from_study and enqueue_from:
        raise TunerError("--from and --enqueue-from: give one of them")
    EngineOptions(precision=precision)  # an unknown precision fails here, before any worker
    spec = source.spec()
    check_family(spec, data_dir, cache_dir)
    auto = workers == "auto"
    settings = RunSettings(
        study_file=source.path,
        study_data=source.data,
        storage=storage_url,
        storage_given=storage is not None,
        artifacts=resolve_artifacts(artifacts, storage_url),
        trials=_at_least_one(trials, "trials"),
        device=device,
        data_dir=None if data_dir is None else Path(data_dir),
        cache_dir=None if cache_dir is None else Path(cache_dir),
        timeout=_seconds(timeout, "timeout"),
        budget=_seconds(budget, "budget"),
        started_at=started_at,
        storage_retry_seconds=_seconds(storage_retry_seconds, "storage_retry_seconds"),
        force=force,
        precision=precision,
        compile=compile,
        workers=1 if auto else _worker_count(workers),
        devices=devices,
        jobs_per_device=_at_least_one(jobs_per_device, "jobs_per_device"),
    )
    if note := unused_trials_note(settings.trials, spec, run_budget(settings, spec)):
        out.print(note)
    with lines_for_python(out):
        if auto:
            from tuner.runner.plan import resolve_workers_auto

            settings, line = resolve_workers_auto(settings)
            out.print(line)
        if from_study or enqueue_from:
            from tuner.runner.warm import WarmStart, apply_warm_start

            warm = WarmStart(
                source=from_study or enqueue_from or "",
                storage=resolve_storage_url(enqueue_storage) if enqueue_storage else None,
                top=_at_least_one(top, "top"),
                copy=from_study is not None,
            )
            out.print(apply_warm_start(settings, warm))
        summary = run_study(settings, out)
    print_run_end(out, summary)
    if summary.detail is not None:
        raise TunerError(summary.detail)
    return summary


def _run_source(study: StudyLike, studies_dir: Path | str | None, storage_url: str, out: Console):
    """The study `run` is given; for a stored study's name, the study file it recorded.

    `status`, `report` and `retrain` take a stored study's name; `run` does too when the study
    file it was created from is still where it was, and says in one line what to pass if not.
    """
    import os

    from tuner import attrs
    from tuner.api.study import StudySource
    from tuner.spec import load_spec
    from tuner.storage import load_stored_study, mask_url

    try:
        return study_source(study, studies_dir)
    except TunerError as missing:
        if not isinstance(study, str | os.PathLike) or Path(os.fspath(study)).suffix == ".toml":
            raise  # a dict, a wrong type or a missing file: the source's own error
        name = os.fspath(study)
        try:  # must_exist: a mistyped name creates no SQLite file
            stored = load_stored_study(name, storage_url)
        except TunerError:
            raise missing from None
    recorded = stored.user_attrs.get(attrs.STUDY_FILE)
    if recorded and Path(recorded).is_file():
        named = load_spec(Path(recorded)).name  # a file with a mistake says so, as with a path
        if named == name:
            out.print(f"study {name}: resuming with its study file {recorded}")
            return StudySource(Path(recorded))
        problem = f"created from {recorded}, which now names study {named!r}"
    elif recorded:
        problem = f"created from {recorded}, which is no longer there"
    else:
        problem = "and does not record its study file"
    raise TunerError(
        f"study {name!r} is in {mask_url(storage_url)}, {problem}: pass its study file, "
        "--study PATH.toml"
    )


def check_family(
    spec: StudySpec, data_dir: Path | str | None, cache_dir: Path | str | None
) -> None:
    """A family from code or timm builds and answers a batch of 2 before anything is stored.

    Its typical configuration (the first [[enqueue]] set, else mid-range values) is built
    for the dataset's images and run forward; TunerError naming the study file and
    `[model].family` on any problem. Built-in families need no such check.
    """
    from tuner.config import TrialConfig
    from tuner.data import load_dataset
    from tuner.families import FAMILIES, get_family
    from tuner.families.user import dry_run
    from tuner.runner.plan import study_workload

    family = spec.space.get("family")
    if family is None or not family.is_fixed or family.value in FAMILIES:
        return
    dataset = load_dataset(
        spec.dataset.name,
        None if data_dir is None else Path(data_dir),
        None if cache_dir is None else Path(cache_dir),
    )
    shape, classes = dataset.input_shape, dataset.num_classes
    try:
        config = TrialConfig.from_dict(study_workload(spec, shape, classes).config)
        dry_run(get_family(family.value), config, shape, classes)
    except TunerError as exc:
        raise TunerError(f"{spec.path}: [model].family: {exc}") from None


def _seconds(value: Any, name: str) -> float | None:
    """A positive duration ("90s", "1h30m" or seconds), or None; TunerError naming `name`."""
    from tuner.spec.budget import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise TunerError(f"{name}: {exc}") from None


def _at_least_one(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TunerError(f"{name}: must be an integer >= 1, got {value!r}")
    return value


def _worker_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TunerError(f"workers: must be 'auto' or an integer >= 1, got {value!r}")
    return value
