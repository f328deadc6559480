"""Small Optuna studies that look like tuner's, for the report tests.

`fake_objective` samples the same kind of space as `tuner.search.space.suggest`, reports a made-up
validation accuracy per epoch (so the MedianPruner prunes some trials) and writes every user
attribute of `tuner.attrs`, like the real objective. No model is trained: a study of 40 trials
takes well under a second.
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

import optuna

from tuner import attrs
from tuner.config import TrialConfig

MAX_EPOCHS = 6
WORKERS = ("gpu-node-1:4242", "gpu-node-2:977", "laptop:31337")
FAILING_TRIALS = (7,)  # these trial numbers raise before writing any user attribute


class FakeTrainingError(RuntimeError):
    """What a crashing trial raises (caught by `optimize`, so the trial becomes FAIL)."""


def fake_objective(trial: optuna.Trial, optimizers: tuple[str, ...] = ("adamw", "sgd")) -> float:
    """A tuner-like objective: per-epoch reports, pruning and all the user attributes."""
    worker = WORKERS[trial.number % len(WORKERS)]
    if trial.number in FAILING_TRIALS:
        raise FakeTrainingError("CUDA out of memory (fake)")
    learning_rate = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    batch_size = trial.suggest_categorical("batch_size", [32, 64, 128])
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    num_blocks = trial.suggest_int("num_blocks", 1, 3)
    filters = tuple(
        trial.suggest_categorical(f"filters_{block}", [16, 32, 64])
        for block in range(1, num_blocks + 1)
    )
    optimizer = trial.suggest_categorical("optimizer", list(optimizers))
    config = TrialConfig(
        learning_rate=learning_rate,
        batch_size=batch_size,
        dropout=dropout,
        filters=filters,
        optimizer=optimizer,
        max_epochs=MAX_EPOCHS,
        seed=trial.number,
    )
    trial.set_user_attr(attrs.CONFIG, config.to_dict())
    trial.set_user_attr(attrs.WORKER, worker)
    trial.set_user_attr(attrs.DEVICE, "cpu")
    trial.set_user_attr(attrs.SEED, trial.number)
    trial.set_user_attr(attrs.PARAM_COUNT, 1_000 * sum(f * f for f in filters) + 12_345)

    # Accuracy peaks near lr = 3e-3, likes moderate dropout and more filters; a learning rate
    # far from the sweet spot also learns slower, which is what the pruner catches.
    distance = abs(math.log10(learning_rate / 3e-3))
    peak = 0.97 - 0.08 * distance - 0.2 * (dropout - 0.2) ** 2
    tau = 1.0 + 1.5 * distance
    peak += 0.01 * sum(filters) / 64 - (0.02 if optimizer != "adamw" else 0.0)
    history: list[dict[str, float]] = []
    best_accuracy, best_epoch = -1.0, 0
    for epoch in range(1, MAX_EPOCHS + 1):
        val_accuracy = peak * (1 - math.exp(-epoch / tau)) - 0.004 * max(0, epoch - 4)
        train_accuracy = min(0.999, val_accuracy + 0.01 * epoch)
        history.append(
            {
                "epoch": epoch,
                "train_loss": 2.3 * math.exp(-epoch / 1.2) + 0.05,
                "train_accuracy": train_accuracy,
                "val_loss": 2.3 * math.exp(-epoch / 1.5) + 0.02 * epoch + 0.1,
                "val_accuracy": val_accuracy,
                "seconds": 2.5 + batch_size / 64,
            }
        )
        if val_accuracy > best_accuracy:
            best_accuracy, best_epoch = val_accuracy, epoch
        _write_progress(trial, history, best_epoch)
        trial.report(val_accuracy, epoch)
        if trial.should_prune():
            trial.set_user_attr(attrs.STOP_REASON, f"pruned at epoch {epoch}")
            raise optuna.TrialPruned()
    return best_accuracy


def _write_progress(trial: optuna.Trial, history: list[dict[str, float]], best_epoch: int) -> None:
    trial.set_user_attr(attrs.HISTORY, history)
    trial.set_user_attr(attrs.EPOCHS_RUN, len(history))
    trial.set_user_attr(attrs.BEST_EPOCH, best_epoch)
    trial.set_user_attr(attrs.TRAIN_SECONDS, sum(row["seconds"] for row in history))


def make_study(
    n_trials: int,
    name: str = "digits-cnn",
    storage: str | None = None,
    optimizers: tuple[str, ...] = ("adamw", "sgd"),
    spread_over_workers: bool = True,
) -> optuna.Study:
    """A finished study of `n_trials` fake trials (some pruned, trial 7 failed).

    With `spread_over_workers`, trial times are rewritten so the trials look like they ran
    side by side on `WORKERS` for their `train_seconds` (a real fake run takes milliseconds,
    which makes a useless timeline).
    """
    source = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=1, n_startup_trials=8),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
    )
    source.optimize(
        lambda trial: fake_objective(trial, optimizers),
        n_trials=n_trials,
        catch=(FakeTrainingError,),
    )
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr(attrs.STUDY_DATASET, "digits")
    study.set_user_attr(attrs.STUDY_METRIC, "val_accuracy")
    study.set_user_attr(attrs.STUDY_FILE, "studies/digits-cnn.toml")
    trials = source.get_trials()
    if spread_over_workers:
        trials = _spread_over_workers(trials)
    study.add_trials(trials)
    return study


def _spread_over_workers(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    finished = {worker: 0.0 for worker in WORKERS}  # seconds at which each worker is free
    start_of_study = datetime.datetime.now() - datetime.timedelta(hours=1)
    for trial in trials:
        worker = trial.user_attrs.get(attrs.WORKER, WORKERS[trial.number % len(WORKERS)])
        seconds = float(trial.user_attrs.get(attrs.TRAIN_SECONDS, 1.0)) * 10
        trial.datetime_start = start_of_study + datetime.timedelta(seconds=finished[worker] + 5)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(seconds=seconds)
        finished[worker] += seconds + 5
    return trials


def sqlite_url(directory: Path) -> str:
    """A fresh SQLite storage URL inside `directory`."""
    return f"sqlite:///{directory / 'study.db'}"
