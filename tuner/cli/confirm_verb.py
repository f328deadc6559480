"""`tuner confirm`: retrain a study's top trials with new seeds and rank them by their mean."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tuner.cli.common import (
    CacheDirOption,
    DataDirOption,
    DeviceOption,
    StorageOption,
    StudiesDirOption,
    StudyOption,
    app,
    console,
    spec_and_study,
)


@app.command()
def confirm(
    study: StudyOption = "digits-quick",
    top: Annotated[
        int, typer.Option("--top", "-k", min=1, help="Confirm this many best trials.")
    ] = 5,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="New seeds per configuration.")] = 3,
    storage: StorageOption = None,
    device: DeviceOption = "auto",
    data_dir: DataDirOption = None,
    cache_dir: CacheDirOption = None,
    studies: StudiesDirOption = None,
) -> None:
    """Retrain the top trials with new seeds; store the results with the study; rank by mean.

    Each run trains as its tuned trial did (same split, same max_epochs and patience, weights
    of the best validation-loss epoch). Finished runs are kept: run it again to resume, or with
    more --seeds / a larger --top to add runs. `tuner best` and the report then rank the
    confirmed configurations by their mean.
    """
    from tuner.search.confirmed import confirmed_ranking
    from tuner.trained.confirm import confirm_study, plan

    spec, stored = spec_and_study(study, storage, studies)
    jobs = plan(stored, top, seeds)
    out = console()
    trials = len({job.trial for job in jobs})
    left = sum(not job.done for job in jobs)
    budget = jobs[0].config
    out.print(
        f"confirm [bold]{stored.study_name}[/bold]: top {trials} trial(s) x {seeds} seed(s) = "
        f"{len(jobs)} runs, {len(jobs) - left} already done; each trains as its trial did: "
        f"up to max_epochs = {budget.max_epochs}, patience {budget.patience}, "
        "weights of the best val_loss epoch"
    )
    metric = spec.metric

    def progress(done: int, total: int, run) -> None:
        value = "diverged" if run.value is None else f"{metric} {run.value:.4f}"
        out.print(
            f"[{done}/{total}] trial #{run.trial} seed {run.seed}: {value} "
            f"(epochs {run.epochs_run}, kept {run.best_epoch}, {run.seconds:.1f}s)"
        )

    confirm_study(stored, jobs, spec.dataset, device, data_dir, cache_dir, on_run=progress)
    print_ranking(out, confirmed_ranking(stored), spec.metric)


def print_ranking(out, ranking, metric: str) -> None:
    """Confirmed configurations, best mean first, with their spread and the tuned value."""
    table = Table(
        "rank", "trial", f"mean {metric}", "std", "min-max", "seeds", f"tuned {metric}", box=None
    )
    for rank, entry in enumerate(ranking, 1):
        tuned = "-" if entry.tuned_value is None else f"{entry.tuned_value:.4f}"
        diverged = f" (+{entry.diverged} diverged)" if entry.diverged else ""
        table.add_row(
            str(rank),
            f"#{entry.trial}",
            f"{entry.mean:.4f}",
            f"{entry.std:.4f}",
            f"{entry.low:.4f}-{entry.high:.4f}",
            f"{entry.n}{diverged}",
            tuned,
        )
    out.print(table)
