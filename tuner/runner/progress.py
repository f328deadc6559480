"""Progress of a running study: a live view on a terminal, one log line per epoch elsewhere.

Both say the same: elapsed time, the running trial's epoch and batch, how long an epoch takes,
estimates of what is left of the trial and of the study, and the best value so far.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType

import optuna
from optuna.trial import FrozenTrial
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from tuner import attrs
from tuner.engine import EpochResult
from tuner.runner.console import logs_through
from tuner.runner.summary import TrialCounts
from tuner.search.study import FINISHED_STATES, count_finished
from tuner.spec.budget import format_duration

log = logging.getLogger("tuner.runner.progress")

MIN_TRIALS_FOR_ESTIMATE = 3  # finished trials before the study's time left is estimated


@dataclass
class _RunningTrial:
    """What the display knows of the trial this process is running."""

    number: int
    started: float
    epochs: int  # the trial's schedule (a first-result trial's is shorter)
    epoch_seconds: list[float] = field(default_factory=list)  # of the finished epochs
    batch: int = 0  # batches done in the running epoch
    batches: int = 0  # batches per epoch
    first_batch: tuple[int, float] | None = None  # (batch, when) first seen in this epoch
    last: EpochResult | None = None

    def epoch_estimate(self, now: float) -> float | None:
        """Seconds an epoch takes: the mean of the finished ones, else from the batch rate."""
        if self.epoch_seconds:
            return sum(self.epoch_seconds) / len(self.epoch_seconds)
        if self.first_batch is None or self.batch <= self.first_batch[0]:
            return None
        first, at = self.first_batch
        return (now - at) / (self.batch - first) * self.batches

    def seconds_left(self, now: float) -> float | None:
        """Seconds until the trial ends if it runs every epoch (early stopping ends it sooner)."""
        if len(self.epoch_seconds) >= self.epochs:
            return 0.0
        per_epoch = self.epoch_estimate(now)
        if per_epoch is None:
            return None
        done = self.batch / self.batches if self.batches else 0.0
        epochs_after = max(0, self.epochs - len(self.epoch_seconds) - 1)
        return per_epoch * (1 - done) + per_epoch * epochs_after


class TrialProgress:
    """Shows the running trial's epoch, batch and estimates and the study's best value so far.

    State is real here (the live display, the running trial's timings, the counts of this run),
    hence a class. Use it as a context manager; wrap the objective with `watch`, pass `on_epoch`
    and `on_batch` to it and `on_trial_end` to Optuna. `workers` is how many processes share
    the trials left, for the study estimate. Off a terminal, or with `live=False`, it logs.
    """

    def __init__(
        self,
        console: Console,
        study: optuna.Study,
        total_trials: int | None,
        max_epochs: int,
        *,
        live: bool = True,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
        deadline: float | None = None,
        first_result_epochs: int = 0,
        started: float | None = None,
    ):
        self.console = console
        self.study = study
        self.total_trials = total_trials
        self.max_epochs = max_epochs
        self.first_result_epochs = first_result_epochs  # the FIRST_RESULT trial's epochs
        self.workers = workers
        self.clock = clock
        self.deadline = deadline  # on `clock`: when the run's budget ends, if it has one
        # On `clock`: when the command started (the budget counts from there too), else now.
        self.started = clock() if started is None else started
        self.finished = count_finished(study)
        self.trial_costs = _trial_costs(study)  # seconds of the study's finished trials
        self.best_value: float | None = _best_value(study)
        self.ran = TrialCounts()
        self.current: _RunningTrial | None = None
        self.live: Live | None = None
        self._logs: AbstractContextManager[None] = nullcontext()  # log lines above the live view
        self._live_wanted = live and console.is_terminal
        self._lock = threading.Lock()  # the live display renders from its own thread

    @property
    def current_trial(self) -> int | None:
        """The number of the trial this process is running, if any."""
        return None if self.current is None else self.current.number

    def __enter__(self) -> TrialProgress:
        if self._live_wanted:
            self.live = Live(
                console=self.console, refresh_per_second=4, get_renderable=self._render
            )
            self._logs = logs_through(self.console)
            self._logs.__enter__()
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
            self._logs.__exit__(exc_type, exc, traceback)

    def watch(self, objective: Callable[[optuna.Trial], float]) -> Callable[[optuna.Trial], float]:
        """`objective`, telling this display when each trial starts."""

        def watched(trial: optuna.Trial) -> float:
            now = self.clock()
            short = trial.user_attrs.get(attrs.FIRST_RESULT)
            epochs = self.first_result_epochs if short else self.max_epochs
            with self._lock:
                self.current = _RunningTrial(trial.number, started=now, epochs=epochs)
            return objective(trial)

        return watched

    def on_batch(self, done: int, per_epoch: int) -> None:
        """Called by the training loop after every batch: keep it cheap."""
        running = self.current
        if running is None:
            return
        running.batch, running.batches = done, per_epoch
        if running.first_batch is None:
            # The rate is measured from here: the epoch's start also holds one-off set-up.
            running.first_batch = (done, self.clock())
            if self.live is not None:
                self.live.refresh()  # each epoch is drawn at least once, however short

    def on_epoch(self, trial_number: int, result: EpochResult) -> None:
        now = self.clock()
        with self._lock:
            running = self.current
            if running is None or running.number != trial_number:
                running = self.current = _RunningTrial(trial_number, now, self.max_epochs)
            running.epoch_seconds.append(result.seconds)
            running.batch, running.first_batch, running.last = 0, None, result
        if self.live is None:
            log.info(
                "trial %d epoch %d/%d: val_accuracy %.4f val_loss %.4f (%.1fs); %s",
                trial_number,
                result.epoch,
                running.epochs,
                result.val_accuracy,
                result.val_loss,
                result.seconds,
                "; ".join([*self._trial_facts(now), *self._study_facts(now)]),
            )

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        with self._lock:
            if self.current is not None and self.current.number == trial.number:
                self.current = None
            self.ran = self.ran.counted(trial.state)
        self.finished = count_finished(study)  # other workers' trials too
        self.trial_costs = _trial_costs(study)
        self.best_value = _best_value(study)
        values = trial.values or []  # several with several objectives (trial.value raises)
        value = f" value{'s' * (len(values) > 1)} {', '.join(f'{v:.4g}' for v in values)}"
        value = value if values else ""
        reason = trial.user_attrs.get(attrs.STOP_REASON)
        message = f"trial {trial.number} {trial.state.name.lower()}{value}" + (
            f" ({reason})" if reason else ""
        )
        if self.live is not None:
            self.live.console.print(message)
        else:
            log.info("%s; best so far %s", message, _format(self.best_value))

    def _trial_facts(self, now: float) -> list[str]:
        """The running trial's epoch timing and estimate, as short phrases."""
        running = self.current
        if running is None:
            return []
        facts = []
        per_epoch = running.epoch_estimate(now)
        if per_epoch is not None:
            facts.append(f"epoch ~{format_duration(per_epoch)}")
        trial_left = running.seconds_left(now)
        if trial_left is not None:
            facts.append(f"trial ~{format_duration(trial_left)} left")
        return facts

    def _study_facts(self, now: float) -> list[str]:
        """Elapsed time, the study's estimate, finished trials and the best value."""
        facts = [f"elapsed {format_duration(now - self.started)}"]
        if self.deadline is not None:
            facts.append(f"budget {format_duration(max(0.0, self.deadline - now))} left")
        study_left = self._study_seconds_left(now)
        if study_left is not None:
            low, high = (format_duration(seconds) for seconds in study_left)
            facts.append(f"study ~{low} left" if low == high else f"study {low} to {high} left")
        ran = self.ran
        return [
            *facts,
            f"finished {self.finished}"
            + ("" if self.total_trials is None else f"/{self.total_trials}"),
            f"best {_format(self.best_value)}",
            f"this run {ran.complete} complete {ran.pruned} pruned {ran.failed} failed",
        ]

    def _study_seconds_left(self, now: float) -> tuple[float, float] | None:
        """(fewest, most) seconds until the study has its trials, or None while unknown.

        Trials cost what the study's finished ones cost here, pruned and early-stopped ones
        included: the middle half of their durations gives the range. A full-length guess from
        the first epochs would be far too long for a study whose trials are mostly pruned, so
        there is no estimate until MIN_TRIALS_FOR_ESTIMATE trials have finished.
        """
        if self.total_trials is None:
            return None  # the budget ends the run: its line says how long is left
        if len(self.trial_costs) < MIN_TRIALS_FOR_ESTIMATE:
            return None
        running = self.current
        low, _, high = statistics.quantiles(self.trial_costs, n=4, method="inclusive")
        after = max(0, self.total_trials - self.finished - (running is not None))
        trial_left = 0.0
        if running is not None:  # it may be pruned at any time: at most what it has left
            trial_left = min(running.seconds_left(now) or high, high)
        if after == 0:  # only the running trial is left: no range of trials to span
            return trial_left, trial_left
        return low * after / self.workers, trial_left + high * after / self.workers

    def _render(self) -> Group:
        """The live view: the study's line, and the running trial's."""
        now = self.clock()
        with self._lock:
            lines = [
                Text.assemble(
                    (self.study.study_name, "bold"), "  ", "  ".join(self._study_facts(now))
                )
            ]
            running = self.current
            if running is not None:
                epoch = min(len(running.epoch_seconds) + 1, running.epochs)
                facts = [f"trial {running.number}", f"epoch {epoch}/{running.epochs}"]
                if running.batch:
                    facts.append(f"batch {running.batch}/{running.batches}")
                facts += self._trial_facts(now)
                if running.last is not None:
                    facts.append(f"val_accuracy {running.last.val_accuracy:.4f}")
                lines.append(Text("  " + "  ".join(facts)))
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"  # a narrow terminal cuts, never wraps
        return Group(*lines)


def _trial_costs(study: optuna.Study) -> list[float]:
    """Wall seconds of the study's finished trials (complete and pruned), as stored."""
    return [
        trial.duration.total_seconds()
        for trial in study.get_trials(deepcopy=False, states=FINISHED_STATES)
        if trial.duration is not None
    ]


def _best_value(study: optuna.Study) -> float | None:
    try:
        if len(study.directions) > 1:  # the front's best first objective
            sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
            return -sign * min(sign * t.values[0] for t in study.best_trials)
        return study.best_value
    except ValueError:  # no complete trial yet
        return None


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
