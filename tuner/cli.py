"""The `tuner` command line: thin verbs over the modules that do the work."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any

import click
import optuna
import typer
from optuna.trial import TrialState
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tuner import attrs
from tuner.errors import TunerError

EXIT_USER_ERROR = 2


class _TunerGroup(typer.core.TyperGroup):
    """Turns every TunerError into one line on stderr and exit code 2 (tracebacks are bugs)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TunerError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None


app = typer.Typer(
    cls=_TunerGroup,
    help="Hyperparameter tuning for CNN image classifiers (Optuna + PyTorch).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

REPO_STUDIES_DIR = Path(__file__).resolve().parent.parent / "studies"

StudyOption = Annotated[
    str,
    typer.Option("--study", "-s", help="Study name in the studies folder, or a .toml file path."),
]
StorageOption = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Storage URL (sqlite:///tuner.db, postgresql+psycopg://...). "
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


def studies_dir(option: Path | None) -> Path:
    """Where `--study NAME` is looked up."""
    if option is not None:
        return option
    if "TUNER_STUDIES_DIR" in os.environ:
        return Path(os.environ["TUNER_STUDIES_DIR"])
    local = Path("studies")
    return local if local.is_dir() else REPO_STUDIES_DIR


def _console() -> Console:
    return Console(highlight=False)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Set up logging once for every verb."""
    console = Console(stderr=True)
    level = logging.DEBUG if verbose else logging.INFO
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler()
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=[handler], force=True)
    # Optuna logs every trial itself; tuner's progress already says it, once.
    optuna.logging.set_verbosity(optuna.logging.DEBUG if verbose else optuna.logging.WARNING)


def _load_spec(study: str, studies: Path | None):
    from tuner.spec import find_study_file, load_spec

    return load_spec(find_study_file(study, studies_dir(studies)))


def _study_name(study: str, studies: Path | None) -> str:
    """`--study` for verbs that read storage: a study file's name, or a stored study's name."""
    from tuner.spec import find_study_file

    try:
        return _load_spec(study, studies).name
    except TunerError:
        candidate = Path(study)
        if candidate.suffix == ".toml":
            raise
        try:
            find_study_file(study, studies_dir(studies))
        except TunerError:
            return study  # not a file: take it as the name of a study in storage
        raise


def _load_stored_study(name: str, storage_option: str | None) -> optuna.Study:
    from tuner.storage import mask_url, open_storage, resolve_storage_url

    url = resolve_storage_url(storage_option)
    storage = open_storage(url)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        raise TunerError(
            f"no study {name!r} in {mask_url(url)}; studies there: {', '.join(names) or '(none)'}"
        )
    return optuna.load_study(study_name=name, storage=storage)


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
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
    ] = "auto",
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Dataset files. Default: $TUNER_DATA_DIR or ~/.cache."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option("--cache-dir", help="Decoded-tensor cache. Default: $TUNER_CACHE_DIR."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", help="Stop starting new trials after this many seconds."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Resume even if the search space changed.")
    ] = False,
    studies: StudiesDirOption = None,
) -> None:
    """Run trials of a study until it has --trials finished trials (resumes if it exists)."""
    from tuner.data import load_dataset, split
    from tuner.objective import make_objective
    from tuner.progress import TrialProgress
    from tuner.storage import mask_url, open_storage, resolve_storage_url
    from tuner.study import open_study, run_trials
    from tuner.train import pick_device, to_device

    spec = _load_spec(study, studies)
    total = trials or spec.training.trials
    torch_device = pick_device(device)
    dataset = load_dataset(spec.dataset.name, data_dir, cache_dir)
    data = to_device(split(dataset, spec.dataset), torch_device)

    url = resolve_storage_url(storage)
    optuna_study = open_study(spec, open_storage(url), force=force)
    console = _console()
    console.print(
        f"study [bold]{spec.name}[/bold]: {spec.dataset.name} {dataset.input_shape} on "
        f"{torch_device}, {total} trials in total, storage {mask_url(url)}"
    )
    with TrialProgress(console, optuna_study, total, spec.training.max_epochs) as progress:
        objective = make_objective(spec, data, torch_device, on_epoch=progress.on_epoch)
        outcome = run_trials(
            optuna_study,
            objective,
            total,
            timeout=timeout,
            callbacks=[progress.on_trial_end],
            gc_after_trial=torch_device.type == "cuda",
        )
    if outcome.finished_before >= total:
        console.print(f"study {spec.name} already has {outcome.finished_before} finished trials")
    _print_best(console, optuna_study)


def _print_best(console: Console, study: optuna.Study) -> None:
    try:
        best = study.best_trial
    except ValueError:
        console.print("no trial has completed yet")
        return
    metric = study.user_attrs.get(attrs.STUDY_METRIC, "value")
    console.print(f"best trial {best.number}: {metric} = {best.value:.4f}")
    table = Table("parameter", "value", box=None)
    for name, value in best.params.items():
        table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)


@app.command("studies")
def list_studies(storage: StorageOption = None, studies: StudiesDirOption = None) -> None:
    """List study files and the studies in storage (trials by state, best value)."""
    from tuner.spec import list_study_files, load_spec
    from tuner.storage import mask_url, open_storage, resolve_storage_url

    console = _console()
    folder = studies_dir(studies)
    files = Table("study file", "dataset", "sampler", "pruner", "description", title=str(folder))
    for path in list_study_files(folder):
        try:
            spec = load_spec(path)
        except TunerError as exc:
            files.add_row(path.stem, "[red]invalid[/red]", "", "", str(exc))
            continue
        files.add_row(
            spec.name, spec.dataset.name, spec.sampler.name, spec.pruner.name, spec.description
        )
    console.print(files)

    url = resolve_storage_url(storage)
    opened = open_storage(url)
    summaries = optuna.get_all_study_summaries(opened, include_best_trial=True)
    stored = Table("study", "complete", "pruned", "failed", "running", "best", title=mask_url(url))
    for summary in sorted(summaries, key=lambda s: s.study_name):
        counts = _state_counts(optuna.load_study(study_name=summary.study_name, storage=opened))
        best = summary.best_trial.value if summary.best_trial else None
        stored.add_row(
            summary.study_name,
            *(str(counts[state]) for state in _SHOWN_STATES),
            "-" if best is None else f"{best:.4f}",
        )
    console.print(stored)


_SHOWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def _state_counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


@app.command()
def status(
    study: StudyOption = "digits-quick",
    storage: StorageOption = None,
    studies: StudiesDirOption = None,
) -> None:
    """Trials by state, the best value and parameters, and the trials running now."""
    optuna_study = _load_stored_study(_study_name(study, studies), storage)
    console = _console()
    counts = _state_counts(optuna_study)
    console.print(
        f"study [bold]{optuna_study.study_name}[/bold] "
        f"({optuna_study.user_attrs.get(attrs.STUDY_DATASET, '?')}): "
        + ", ".join(f"{counts[s]} {s.name.lower()}" for s in TrialState if counts[s])
    )
    _print_best(console, optuna_study)
    running = optuna_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        table = Table("running trial", "worker", "started", "last epoch", "last value")
        for trial in running:
            last_step = trial.last_step
            table.add_row(
                str(trial.number),
                str(trial.user_attrs.get(attrs.WORKER, "?")),
                f"{trial.datetime_start:%Y-%m-%d %H:%M:%S}" if trial.datetime_start else "?",
                "-" if last_step is None else str(last_step),
                "-" if last_step is None else f"{trial.intermediate_values[last_step]:.4f}",
            )
        console.print(table)


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
    from tuner.report import write_report

    optuna_study = _load_stored_study(_study_name(study, studies), storage)
    path = write_report(optuna_study, out or Path(f"report-{optuna_study.study_name}.html"))
    _console().print(f"report written to {path}")
