"""What the verbs print: tables of studies, trials, best configurations and predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from tuner import attrs
from tuner.errors import TunerError
from tuner.runner.summary import print_best_params, study_state

SHOWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


def print_best(console: Console, study: optuna.Study) -> None:
    """`print_best_params` of a stored study (several objectives: by the first, on the front)."""
    state = study_state(study)
    print_best_params(
        console,
        state["metric"] if "best_trial" in state else "",
        state.get("best_trial"),
        state.get("best_value"),
        state.get("best_params", {}),
    )


def state_counts(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state] += 1
    return counts


def print_studies(console: Console, folder: Path, storage: str | None) -> None:
    """The study files in `folder`, then the studies in storage with trials by state."""
    from tuner.spec import list_study_files, load_spec
    from tuner.storage import mask_url, open_storage, resolve_storage_url, settle_stale_trials

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
        study = optuna.load_study(study_name=summary.study_name, storage=opened)
        settle_stale_trials(study)  # a dead worker's trial shows as failed, as in `status`
        counts = state_counts(study)
        best = summary.best_trial.value if summary.best_trial else None
        stored.add_row(
            summary.study_name,
            *(str(counts[state]) for state in SHOWN_STATES),
            "-" if best is None else f"{best:.4f}",
        )
    console.print(stored)


def print_status(console: Console, study: optuna.Study) -> None:
    """Trials by state, the best trial, and the trials running now."""
    counts = state_counts(study)
    console.print(
        f"study [bold]{study.study_name}[/bold] "
        f"({study.user_attrs.get(attrs.STUDY_DATASET, '?')}): "
        + ", ".join(f"{counts[s]} {s.name.lower()}" for s in TrialState if counts[s])
    )
    print_best(console, study)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
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


def print_artifacts_space(console: Console, location: str, used: int | str) -> None:
    """One line: what the study's checkpoints and kept weights take, and where; `used` is
    bytes, or why the store could not be measured."""
    if isinstance(used, str):
        console.print(f"checkpoints and kept weights: not measured ({used})", markup=False)
        return
    size = f"{used / 1e6:.1f} MB" if used >= 100_000 else f"{used / 1e3:.1f} kB"
    console.print(f"checkpoints and kept weights: {size} in {location}")


def print_predictions(console: Console, results: list[Any]) -> None:
    """A table of each image's top classes and probabilities (`tuner predict`)."""
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
        console.print(table)
