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
    study_file,
    study_name,
)
from tuner.errors import TunerError


class Precision(enum.StrEnum):
    """`tuner run --precision`: engine PRECISIONS, spelled out so `--help` needs no torch."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


def _positive_seconds(value: float | None) -> float | None:
    """`--timeout`: zero or less would stop before the first trial."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"{value:g} is not a positive number of seconds")
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
            help="Finished trials the study should have in total, across all workers "
            "(default: the study file's [training].trials).",
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
            "the study file's [training].budget).",
        ),
    ] = None,
    storage_retry_seconds: Annotated[
        float | None,
        typer.Option(
            "--storage-retry-seconds",
            callback=_positive_seconds,
            help="How long a database outage may last before the workers give up. "
            "Default: $TUNER_STORAGE_RETRY_SECONDS, else 60.",
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
    """
    from tuner.runner.settings import process_started_at

    started_at = process_started_at()  # the budget counts from the command's start
    from tuner.runner.run import run_study
    from tuner.runner.settings import RunSettings
    from tuner.storage import resolve_storage_url
    from tuner.storage.artifacts import resolve_artifacts

    url = resolve_storage_url(storage)
    settings = RunSettings(
        study_file=study_file(study, studies),
        storage=url,
        storage_given=storage is not None,
        artifacts=resolve_artifacts(artifacts, url),
        trials=trials,
        device=device,
        data_dir=data_dir,
        cache_dir=cache_dir,
        timeout=timeout,
        budget=_budget_seconds(budget),
        started_at=started_at,
        storage_retry_seconds=storage_retry_seconds,
        force=force,
        precision=precision.value,
        compile=compile_model,
        workers=1 if workers == "auto" else int(workers),
        devices=devices,
        jobs_per_device=jobs_per_device,
    )
    out = console()
    if workers == "auto":
        from tuner.runner.plan import resolve_workers_auto

        settings, line = resolve_workers_auto(settings)
        out.print(line)
    if enqueue_from and from_study:
        raise TunerError("--from and --enqueue-from: give one of them")
    if enqueue_from or from_study:
        from tuner.runner.warm import WarmStart, apply_warm_start
        from tuner.storage import resolve_storage_url as resolve

        warm = WarmStart(
            source=from_study or enqueue_from or "",
            storage=resolve(enqueue_storage) if enqueue_storage else None,
            top=top,
            copy=from_study is not None,
        )
        out.print(apply_warm_start(settings, warm))
    summary = run_study(settings, out)
    views.print_run_end(out, summary)
    if summary.detail is not None:
        raise TunerError(summary.detail)
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
    from tuner.storage.artifacts import open_artifacts, resolve_artifacts

    stored = load_stored_study(study_name(study, studies), storage)
    settle_stale_trials(stored)  # a dead worker's trial shows as failed, its retry queued
    views.print_status(console(), stored)
    location = resolve_artifacts(artifacts, resolve_storage_url(storage))
    used = space_used(open_artifacts(location, create=False), stored)
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
    from tuner.files import study_slug
    from tuner.report import write_report

    optuna_study = load_stored_study(study_name(study, studies), storage)
    default = Path(f"report-{study_slug(optuna_study.study_name)}.html")
    path = write_report(optuna_study, out or default)
    console().print(f"report written to {path}")
