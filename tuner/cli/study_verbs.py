"""The verbs of a study: run, studies, status, report."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from tuner.cli import views
from tuner.cli.common import (
    ArtifactsOption,
    CacheDirOption,
    DataDirOption,
    DeviceOption,
    StorageOption,
    StudiesDirOption,
    StudyOption,
    app,
    console,
    load_stored_study,
    studies_dir,
    study_name,
)
from tuner.errors import TunerError
from tuner.spec.parse import MAX_TRIALS


class Precision(enum.StrEnum):
    """`tuner run --precision`: engine PRECISIONS, spelled out so `--help` needs no torch."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def _trial_count(value: int | None) -> int | None:
    """`--trials` up to MAX_TRIALS: checked here rather than by typer's max=, whose wider range
    column would squeeze every option's help text at 80 columns."""
    if value is not None and value > MAX_TRIALS:
        raise typer.BadParameter(f"{value} is more than {MAX_TRIALS} trials")
    return value


def _positive_seconds(value: float | None) -> float | None:
    """`--timeout`: zero or less would stop before the first trial; more than a year is a typo."""
    from tuner.spec.budget import MAX_DURATION_SECONDS, MAX_DURATION_TEXT

    if value is not None and not 0 < value <= MAX_DURATION_SECONDS:
        raise typer.BadParameter(
            f"{value:g} is not a positive number of seconds up to {MAX_DURATION_TEXT} "
            f"({MAX_DURATION_SECONDS})"
        )
    return value


def _workers_value(value: str) -> str:
    """`--workers`: a count >= 1 or 'auto'."""
    if value != "auto" and not (value.isdigit() and int(value) >= 1):
        raise typer.BadParameter(
            f"{value!r} is neither 'auto' nor a number greater than or equal to 1"
        )
    return value


def _budget_seconds(value: str | None) -> float | None:
    """`--budget`: a duration, or one error line."""
    from tuner.spec.budget import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise TunerError(f"--budget: {exc}") from None


@app.command()
def run(
    study: StudyOption = "digits-quick",
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            "-n",
            min=1,
            callback=_trial_count,
            help="Finished trials the study should have in total, across all workers "
            "(default: the study file's \\[training] trials).",
        ),
    ] = None,
    storage: StorageOption = None,
    artifacts: ArtifactsOption = None,
    device: DeviceOption = "auto",
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            callback=_positive_seconds,
            help="Stop starting new trials after this many seconds (a running trial finishes; "
            "--budget also cuts it).",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Wall-clock budget of the whole run, e.g. 90s, 10m, 1h30m or seconds: the run "
            "ends on time, cutting the running trial, and fixes max_epochs to fit it (default: "
            "the study file's \\[training] budget).",
        ),
    ] = None,
    storage_retry_seconds: Annotated[
        float | None,
        typer.Option(
            "--storage-retry-seconds",
            callback=_positive_seconds,
            help="How long a database outage may last before the workers give up. "
            "Default: 60, or the variable named below.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Resume even if the search space changed.")
    ] = False,
    studies: StudiesDirOption = None,
    workers: Annotated[
        str,
        typer.Option(
            "--workers",
            "-w",
            callback=_workers_value,
            help="Worker processes on this machine sharing the study, or 'auto': processes x "
            "threads per process from a quick measurement of the study's model (cached).",
        ),
    ] = "1",
    devices: Annotated[
        str | None,
        typer.Option(
            "--devices",
            help="Comma-separated devices the workers are spread over (default: every GPU, "
            "else --device).",
        ),
    ] = None,
    jobs_per_device: Annotated[
        int | None,
        typer.Option(
            "--jobs-per-device",
            min=1,
            help="Trials running at once on each device (sets --workers to this x devices).",
        ),
    ] = None,
    precision: Annotated[
        Precision,
        typer.Option(
            "--precision",
            help="auto: bf16 autocast on CUDA, and on CPUs with native bf16 for models big "
            "enough to gain from it, else fp32 (each trial records its choice). fp32 or bf16 "
            "force one.",
        ),
    ] = Precision.auto,
    compile_model: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile each model (pays off on CUDA, many epochs)."),
    ] = False,
    enqueue_from: Annotated[
        str | None,
        typer.Option(
            "--enqueue-from",
            help="Queue the --top best configurations of this stored study as the first trials.",
        ),
    ] = None,
    top: Annotated[
        int, typer.Option("--top", min=1, help="How many configurations --enqueue-from queues.")
    ] = 5,
    from_study: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Copy this finished study's trials into the new study (spaces must fit).",
        ),
    ] = None,
    enqueue_storage: Annotated[
        str | None,
        typer.Option(
            "--enqueue-storage",
            help="Storage URL of the --from / --enqueue-from study (default: --storage).",
        ),
    ] = None,
) -> None:
    """Run trials of a study until it has --trials finished trials (resumes if it exists).

    Ends with a summary: why it stopped, the trials it ran, what is left, the report command.

    Environment: TUNER_STORAGE (--storage), TUNER_STORAGE_RETRY_SECONDS
    (--storage-retry-seconds), TUNER_DATA_DIR, TUNER_CACHE_DIR, TUNER_STUDIES_DIR.
    """
    from tuner.api import run as run_study
    from tuner.runner.settings import process_started_at

    summary = run_study(
        study,
        budget=_budget_seconds(budget),
        trials=trials,
        storage=storage,
        artifacts=artifacts,
        data_dir=data_dir,
        workers=workers if workers == "auto" else int(workers),
        device=device,
        cache_dir=cache_dir,
        timeout=timeout,
        precision=precision.value,
        compile=compile_model,
        force=force,
        devices=devices,
        jobs_per_device=jobs_per_device,
        storage_retry_seconds=storage_retry_seconds,
        from_study=from_study,
        enqueue_from=enqueue_from,
        top=top,
        enqueue_storage=enqueue_storage,
        studies_dir=studies,
        started_at=process_started_at(),  # the budget counts from the command's start
        console=console(),
    )
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


@app.command("studies")
def list_studies(storage: StorageOption = None, studies: StudiesDirOption = None) -> None:
    """List study files and the studies in storage (trials by state, best value)."""
    views.print_studies(console(), studies_dir(studies), storage)


@app.command()
def status(
    study: StudyOption = "digits-quick",
    storage: StorageOption = None,
    studies: StudiesDirOption = None,
    artifacts: ArtifactsOption = None,
) -> None:
    """Trials by state, the best value and parameters, the trials running now, and the space
    their checkpoints and kept weights take."""
    from tuner.search.checkpoints import space_used
    from tuner.storage import resolve_storage_url, settle_stale_trials
    from tuner.storage.artifacts import open_artifacts, resolve_artifacts, store_errors

    stored = load_stored_study(study_name(study, studies), storage)
    settle_stale_trials(stored)  # a dead worker's trial shows as failed, its retry queued
    views.print_status(console(), stored)
    location = resolve_artifacts(artifacts, resolve_storage_url(storage))
    try:
        used: int | str = space_used(open_artifacts(location, create=False), stored)
    except TunerError as exc:  # a bucket not reachable from here: the trials still show
        used = str(exc)
    except store_errors() as exc:
        used = f"{location}: {exc}"
    views.print_artifacts_space(console(), location, used)


@app.command()
def report(
    study: StudyOption = "digits-quick",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="HTML file (default: report-STUDY.html).")
    ] = None,
    storage: StorageOption = None,
    studies: StudiesDirOption = None,
) -> None:
    """Write one self-contained HTML report of a study (opens offline)."""
    from tuner.api import write_report

    path = write_report(study, out, storage, studies_dir=studies)
    console().print(f"report written to {path}")
