"""Progress of a running study: a live line per running trial, or plain log lines off a TTY."""

from __future__ import annotations

import logging
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from tuner import attrs
from tuner.engine.train import EpochResult
from tuner.search.study import count_finished

log = logging.getLogger("tuner.runner.progress")


class TrialProgress:
    """Shows each running trial's epoch, validation accuracy and the best value so far.

    State is real here (the live display and the last epoch per trial), hence a class. Use it
    as a context manager; pass `on_epoch` to the objective and `on_trial_end` to Optuna.
    """

    def __init__(self, console: Console, study: optuna.Study, total_trials: int, max_epochs: int):
        self.console = console
        self.study = study
        self.total_trials = total_trials
        self.max_epochs = max_epochs
        self.running: dict[int, EpochResult] = {}
        self.finished = count_finished(study)
        self.best_value: float | None = _best_value(study)
        self.live: Live | None = None

    def __enter__(self) -> TrialProgress:
        if self.console.is_terminal:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4)
            self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.__exit__(exc_type, exc, traceback)

    def on_epoch(self, trial_number: int, result: EpochResult) -> None:
        self.running[trial_number] = result
        if self.live is not None:
            self.live.update(self._render())
        else:
            log.info(
                "trial %d epoch %d/%d: val_accuracy %.4f val_loss %.4f (%.1fs)",
                trial_number,
                result.epoch,
                self.max_epochs,
                result.val_accuracy,
                result.val_loss,
                result.seconds,
            )

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.running.pop(trial.number, None)
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
            self.finished += 1
        self.best_value = _best_value(study)
        value = "" if trial.value is None else f" value {trial.value:.4f}"
        reason = trial.user_attrs.get(attrs.STOP_REASON)
        message = f"trial {trial.number} {trial.state.name.lower()}{value}" + (
            f" ({reason})" if reason else ""
        )
        if self.live is not None:
            self.live.console.print(message)
            self.live.update(self._render())
        else:
            log.info("%s; best so far %s", message, _format(self.best_value))

    def _render(self) -> Table:
        table = Table.grid(padding=(0, 2))
        table.add_row(
            f"[bold]{self.study.study_name}[/bold]",
            f"finished {self.finished}/{self.total_trials}",
            f"best {_format(self.best_value)}",
        )
        for number, result in sorted(self.running.items()):
            table.add_row(
                f"  trial {number}",
                f"epoch {result.epoch}/{self.max_epochs}",
                f"val_accuracy {result.val_accuracy:.4f}  val_loss {result.val_loss:.4f}",
            )
        return table


def _best_value(study: optuna.Study) -> float | None:
    try:
        return study.best_value
    except ValueError:  # no complete trial yet
        return None


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
