"""The `tuner` command line: thin verbs over the modules that do the work."""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

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
    """Prints every user error as one line on stderr, exit code 2 (tracebacks are for bugs).

    User errors are the TunerErrors the verbs raise and the usage errors of the command line
    itself (a bad value, an unknown option or verb), which Typer would draw as a boxed panel.
    The group's own options are parsed in make_context; a verb's options, in invoke.
    """

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> typer.Context:
        with _one_line_errors(None):
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: typer.Context) -> Any:
        with _one_line_errors(ctx):
            return super().invoke(ctx)


@contextmanager
def _one_line_errors(ctx: typer.Context | None) -> Iterator[None]:
    try:
        yield
    except TunerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_USER_ERROR) from None
    except typer.TyperException as exc:
        # Click's exceptions: Typer ships its own copy of Click, whose errors derive from this.
        if type(exc).__name__ == "NoArgsIsHelpError":
            raise  # a bare `tuner`: Typer has printed the help already and exits 2 itself
        message = exc.format_message()
        typer.echo(f"error: {message[:1].lower()}{message[1:]}", err=True)
        typer.echo(
            f"(run '{_command_path(getattr(exc, 'ctx', None), ctx)} --help' for usage)", err=True
        )
        raise typer.Exit(EXIT_USER_ERROR) from None


def _command_path(error_ctx: typer.Context | None, group_ctx: typer.Context | None) -> str:
    """`tuner VERB` (or `tuner`) for the help hint of a usage error."""
    if error_ctx is not None:
        return error_ctx.command_path
    # Click raises some parse errors (an option missing its value) without a context; the
    # group has already chosen the verb whose options it was parsing.
    if group_ctx is not None and group_ctx.invoked_subcommand:
        return f"{group_ctx.command_path} {group_ctx.invoked_subcommand}"
    return group_ctx.command_path if group_ctx is not None else "tuner"


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
    from tuner.spec import find_study_file, load_spec

    try:
        path = find_study_file(study, studies_dir(studies))
    except TunerError:
        if Path(study).suffix == ".toml":
            raise
        return study  # not a file: take it as the name of a study in storage
    return load_spec(path).name


def _load_stored_study(name: str, storage_option: str | None) -> optuna.Study:
    from tuner.storage import mask_url, open_storage, resolve_storage_url

    url = resolve_storage_url(storage_option)
    storage = open_storage(url, must_exist=True)
    names = optuna.get_all_study_names(storage)
    if name not in names:
        raise TunerError(
            f"no study {name!r} in {mask_url(url)}; studies there: {', '.join(names) or '(none)'}"
        )
    return optuna.load_study(study_name=name, storage=storage)


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
        typer.Option(
            "--timeout",
            callback=_positive_seconds,
            help="Stop starting new trials after this many seconds.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Resume even if the search space changed.")
    ] = False,
    studies: StudiesDirOption = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers", "-w", min=1, help="Worker processes on this machine sharing the study."
        ),
    ] = 1,
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
    storage_retry_seconds: Annotated[
        float | None,
        typer.Option(
            "--storage-retry-seconds",
            callback=_positive_seconds,
            help="How long a database outage may last before the workers give up. "
            "Default: $TUNER_STORAGE_RETRY_SECONDS, else 60.",
        ),
    ] = None,
) -> None:
    """Run trials of a study until it has --trials finished trials (resumes if it exists)."""
    from tuner.data import load_dataset, split
    from tuner.engine.train import EngineOptions, pick_device, to_device
    from tuner.runner.parallel import worker_seed_offset
    from tuner.runner.progress import TrialProgress
    from tuner.runner.signals import interrupt_on_signals
    from tuner.search.objective import make_objective
    from tuner.search.study import open_study, run_trials
    from tuner.storage import check_local_workers, mask_url, open_storage, resolve_storage_url

    spec = _load_spec(study, studies)
    total = trials or spec.training.trials
    engine = EngineOptions(precision=precision.value, compile=compile_model)
    url = resolve_storage_url(storage)
    console = _console()
    if workers > 1 or jobs_per_device:
        from tuner.runner.parallel import plan_workers, resolve_devices, run_workers

        device_list = resolve_devices(devices, device)
        for name in device_list:
            pick_device(name)  # fail here, once, rather than in every worker
        worker_count = jobs_per_device * len(device_list) if jobs_per_device else workers
        check_local_workers(url, worker_count)
        # Decode the dataset into the cache and create the study once, before the workers race.
        load_dataset(spec.dataset.name, data_dir, cache_dir)
        opened = open_storage(url, outage_timeout=storage_retry_seconds)
        optuna_study = open_study(spec, opened, force=force)
        run_args = ["--study", str(spec.path.resolve()), "--trials", str(total)]
        for flag, value in (("--data-dir", data_dir), ("--cache-dir", cache_dir)):
            if value is not None:
                run_args += [flag, str(Path(value).resolve())]
        if timeout is not None:
            run_args += ["--timeout", str(timeout)]
        run_args += ["--precision", precision.value, *(["--compile"] if compile_model else [])]
        if storage_retry_seconds is not None:
            run_args += ["--storage-retry-seconds", str(storage_retry_seconds)]
        console.print(
            f"study [bold]{spec.name}[/bold]: {worker_count} workers on "
            f"{', '.join(device_list)}, {total} trials in total, storage {mask_url(url)}"
        )
        # The URL travels in the environment: a password on a command line is visible to all.
        os.environ["TUNER_STORAGE"] = url
        exit_code = run_workers(plan_workers(run_args, worker_count, device_list))
        _print_best(console, optuna_study)
        if exit_code:
            raise typer.Exit(exit_code)
        return

    torch_device = pick_device(device)
    dataset = load_dataset(spec.dataset.name, data_dir, cache_dir)
    data = to_device(split(dataset, spec.dataset), torch_device)
    opened = open_storage(url, outage_timeout=storage_retry_seconds)
    optuna_study = open_study(spec, opened, seed_offset=worker_seed_offset(), force=force)
    console.print(
        f"study [bold]{spec.name}[/bold]: {spec.dataset.name} {dataset.input_shape} on "
        f"{torch_device}, {total} trials in total, storage {mask_url(url)}"
    )
    try:
        with (
            interrupt_on_signals(),
            TrialProgress(console, optuna_study, total, spec.training.max_epochs) as progress,
        ):
            objective = make_objective(
                spec, data, torch_device, on_epoch=progress.on_epoch, options=engine
            )
            outcome = run_trials(
                optuna_study,
                objective,
                total,
                timeout=timeout,
                callbacks=[progress.on_trial_end],
                gc_after_trial=torch_device.type == "cuda",
            )
    except KeyboardInterrupt:
        # Optuna has already marked the running trial FAIL; finished trials are all stored.
        typer.echo(
            f"interrupted: the running trial was marked failed; run the same command to "
            f"resume study {spec.name}",
            err=True,
        )
        raise typer.Exit(130) from None
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
    try:
        opened = open_storage(url, must_exist=True)
    except TunerError as exc:
        console.print(f"no studies in storage: {exc}")
        return
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
    from tuner.storage import settle_stale_trials

    optuna_study = _load_stored_study(_study_name(study, studies), storage)
    settle_stale_trials(optuna_study)  # a dead worker's trial shows as failed, its retry queued
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


# ---------------------------------------------------------------- trained models and reading aids
# best, retrain, visualize, predict, dashboard

ModelOption = Annotated[
    Path,
    typer.Option(
        "--model", "-m", help="A model directory written by `tuner retrain`, or its .safetensors."
    ),
]
DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Dataset files. Default: $TUNER_DATA_DIR or ~/.cache."),
]
CacheDirOption = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Decoded-tensor cache. Default: $TUNER_CACHE_DIR."),
]


class ExportFormat(enum.StrEnum):
    """`tuner best --format`."""

    toml = "toml"
    json = "json"


def _best_config(study: str | None, config: Path | None, storage: str | None, studies: Path | None):
    """The configuration to retrain: from `--config FILE`, else the best trial of `--study`."""
    from tuner.trained.export import best_config, read_best

    if config is not None:
        if study is not None:
            raise TunerError("give either --study or --config, not both")
        return read_best(config)
    if study is None:
        raise TunerError("--study NAME or --config FILE is required")
    return best_config(_load_stored_study(_study_name(study, studies), storage))


@app.command()
def best(
    study: StudyOption = "digits-quick",
    fmt: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="toml (with comments) or json.")
    ] = ExportFormat.toml,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of stdout.")
    ] = None,
    storage: StorageOption = None,
    studies: StudiesDirOption = None,
) -> None:
    """Print the best trial's full configuration (read back by `tuner retrain --config`)."""
    from tuner.files import write_text_atomic
    from tuner.trained.export import render

    text = render(_best_config(study, None, storage, studies), fmt.value)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomic(out, text)
        typer.echo(f"written to {out}", err=True)


@app.command()
def retrain(
    study: Annotated[
        str | None,
        typer.Option("--study", "-s", help="Retrain the best trial of this study."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Or a file written by `tuner best` (TOML or JSON)."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs",
            "-e",
            min=1,
            help="Epochs on the full training split (default: the tuned trial's best epoch).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: runs/STUDY).")
    ] = None,
    storage: StorageOption = None,
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")
    ] = "auto",
    studies: StudiesDirOption = None,
) -> None:
    """Train a configuration on train+validation, test it once, save model, card and report.

    Writes model.safetensors, model.json (the model card) and retrain.html into --out.
    """
    from tuner.data import load_dataset
    from tuner.engine.train import pick_device
    from tuner.trained.retrain import epochs_for, save
    from tuner.trained.retrain import retrain as retrain_model

    chosen = _best_config(study, config, storage, studies)
    torch_device = pick_device(device)
    dataset = load_dataset(chosen.dataset, data_dir, cache_dir)
    out_dir = out or Path("runs") / (chosen.study or (config.stem if config else "model"))
    source = f"trial {chosen.trial} of {chosen.study}" if chosen.study else str(config)
    console = _console()
    console.print(
        f"retraining {source}: {dataset.name}, {len(dataset.train)} training images, "
        f"{epochs_for(chosen, epochs)} epochs on {torch_device}"
    )
    result = retrain_model(chosen, dataset, torch_device, epochs)
    weights, report_path = save(out_dir, result)
    console.print(
        f"test accuracy {result.card.test_accuracy:.4f} on {result.card.test_count} held-out "
        f"images\nmodel: {weights}\nreport: {report_path}"
    )


@app.command()
def visualize(
    model: ModelOption,
    image: Annotated[
        Path | None,
        typer.Option("--image", "-i", help="Image file to look at (default: a test image)."),
    ] = None,
    index: Annotated[
        int, typer.Option("--index", min=0, help="Which test image, without --image.")
    ] = 0,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "viz.html"
    ),
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
) -> None:
    """One HTML page of a model's filters and feature maps for one image."""
    from tuner.report.visualize import test_image, write_visualization
    from tuner.trained.card import load_model
    from tuner.trained.predict import read_image

    loaded, card = load_model(model)
    if image is not None:
        pixels, label = read_image(image, card), image.name
    else:
        pixels, label = test_image(card, index, data_dir, cache_dir)
    path = write_visualization(out, loaded, card, pixels, label)
    _console().print(f"visualization written to {path}")


@app.command()
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (any size or mode).")],
    model: ModelOption,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes per image.")] = 3,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON on stdout instead of a table.")
    ] = False,
) -> None:
    """Class probabilities for image files.

    A file that cannot be read gets an error line on stderr and the others are still
    predicted. Exit code 0 when every file was predicted, 1 when any could not be read,
    2 for usage errors (bad options, unusable model).
    """
    import json

    from tuner.trained.card import load_model
    from tuner.trained.predict import predict_files

    loaded, card = load_model(model)
    results = predict_files(loaded, card, images, top_k)
    for result in results:
        if result.error:
            typer.echo(f"error: {result.error}", err=True)
    if as_json:
        rows = [
            {"image": str(r.path), "error": r.error}
            if r.error
            else {
                "image": str(r.path),
                "predictions": [{"class": name, "probability": p} for name, p in r.top],
            }
            for r in results
        ]
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table("image", "class", "probability", box=None)
        table.columns[0].overflow = "fold"
        for result in results:
            for rank, (name, probability) in enumerate(result.top):
                table.add_row(
                    str(result.path) if rank == 0 else "",
                    name,
                    f"{probability:.2%}",
                    end_section=rank == len(result.top) - 1,
                )
        if table.rows:
            _console().print(table)
    if any(result.error for result in results):
        raise typer.Exit(1)


@app.command()
def dashboard(
    study: StudyOption = "digits-quick",
    storage: StorageOption = None,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind; the dashboard has no login.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port.")] = 8080,
    studies: StudiesDirOption = None,
) -> None:
    """Serve optuna-dashboard on the study's storage (needs the optional dashboard extra)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise TunerError(
            "optuna-dashboard is not installed; install it with: pip install 'tuner[dashboard]'"
        ) from None
    from tuner.storage import open_storage, resolve_storage_url

    name = _study_name(study, studies)
    _load_stored_study(name, storage)  # a clear error when the study isn't there
    opened = open_storage(resolve_storage_url(storage))
    study_id = opened.get_study_id_from_name(name)
    shown_host = f"[{host}]" if ":" in host else host
    if host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger(__name__).warning(
            "the dashboard has no authentication: anyone who can reach %s:%d can read and "
            "edit the studies in this storage",
            host,
            port,
        )
    _console().print(
        f"optuna-dashboard for study {name}: http://{shown_host}:{port}/dashboard/studies/"
        f"{study_id}  (Ctrl-C to stop)"
    )
    try:
        run_server(opened, host=host, port=port)
    except OSError as exc:
        raise TunerError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    except KeyboardInterrupt:
        _console().print("dashboard stopped")
