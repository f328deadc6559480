"""The search race's contenders that run the usual script, each in its own process.

    python bench/race_contenders.py run --contender optuna-recipe --seed 0 --budget 600 \\
        --storage sqlite:///run.db --out DIR [--train-limit 6000]
    python bench/race_contenders.py retrain --params '{"learning_rate": ...}' --epochs 9 \\
        --out result.json

The usual script is bench/trial_throughput.py's `UsualScript` (PIL images per sample as its
users read them, bench/usual_data.py: torchvision's MNIST classes for IDX sets, ImageFolder for
`imagefolder:PATH`; transforms, DataLoader, tuner's model families), on the study's own
train/validation split:
- optuna-recipe: `TPESampler(seed)` + `MedianPruner()` defaults, accuracy reported each epoch.
- random: `RandomSampler(seed)`, no pruning (the floor).
- ray-asha: Ray Tune, `ASHAScheduler` (max_t = the study's max_epochs, other defaults) and
  `OptunaSearch` over the same space, one CPU per trial (Ray's default), `time_budget_s`.
Optuna contenders write their trials to --storage; ray-asha writes DIR/ray_trials.json. The
parent (bench/search_race.py) reads them back into the race's records.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch
from trial_throughput import UsualScript
from usual_data import recipe_data

from tuner import attrs
from tuner.engine import pick_device
from tuner.search.space import suggest
from tuner.spec import StudySpec, load_spec

BENCH = Path(__file__).resolve().parent
OPTUNA_CONTENDERS = {
    "optuna-recipe": lambda seed: (
        optuna.samplers.TPESampler(seed=seed),
        optuna.pruners.MedianPruner(),
    ),
    "random": lambda seed: (optuna.samplers.RandomSampler(seed=seed), optuna.pruners.NopPruner()),
}
RAY_CONTENDER = "ray-asha"
EPOCH_LOG = "epochs.jsonl"  # in a run's folder: the usual script's epoch-level log


def race_spec(path: Path, seed: int, train_limit: int, max_epochs: int = 0) -> StudySpec:
    """The study with the run's seed for trial seeds, at most `train_limit` train images and
    `max_epochs` epochs per trial (0: the study file's)."""
    spec = load_spec(path)
    dataset = replace(spec.dataset, train_subset=train_limit or spec.dataset.train_subset)
    training = replace(spec.training, seed=seed, max_epochs=max_epochs or spec.training.max_epochs)
    return replace(spec, dataset=dataset, training=training)


def usual_script(
    spec: StudySpec, dataset_dir: Path, into: Path, epoch_log: Path | None = None
) -> UsualScript:
    """The usual script on the study's dataset and split (bench/usual_data.py), normalized with
    its training split's mean/std; with `epoch_log`, each finished epoch is appended there (the
    race's epoch-level curve)."""
    data = recipe_data(spec, dataset_dir, into)
    device = pick_device("auto")
    return UsualScript(spec, data, device, loader_workers=0, epoch_log=epoch_log)


def run_optuna(
    contender: str,
    usual: UsualScript,
    seed: int,
    budget: float,
    url: str,
    trials: int | None = None,
) -> None:
    """Optuna's recipe: `study.optimize(objective, n_trials, timeout)` as its examples write it.

    `trials` None: the budget alone ends it, as it ends a tuner budget run (the study file's
    trial count, 20 by default, stopped the recipe minutes early on small datasets)."""
    sampler, pruner = OPTUNA_CONTENDERS[contender](seed)
    study = optuna.create_study(
        storage=url, study_name=contender, direction="maximize", sampler=sampler, pruner=pruner
    )
    study.optimize(usual.objective, n_trials=trials, timeout=budget)


def run_ray(
    usual: UsualScript, seed: int, budget: float, out: Path, trials: int | None = None
) -> None:
    """Ray Tune with ASHA and OptunaSearch (bench/race_ray.py), or one clear line without ray."""
    try:
        import race_ray
    except ImportError as exc:
        sys.exit(f"error: ray-asha needs ray[tune] ({exc}): pip install -e '.[bench]'")
    race_ray.run_ray(usual, seed, budget, out, trials)


def tuner_epoch_points(
    trials: list[optuna.trial.FrozenTrial], started: datetime.datetime
) -> list[list[float]]:
    """[seconds since `started`, validation accuracy] at the end of each epoch tuner's trials
    ran, from their stored history (a pruned trial's epochs count too).

    tuner stores each epoch's duration, not its end: an epoch's end is taken as the trial's
    datetime_complete less the epochs after it. That errs late (against tuner) by the work
    after the last whole epoch, e.g. the slices of a trial pruned mid-epoch.
    """
    points = []
    for trial in trials:
        history = trial.user_attrs.get(attrs.HISTORY) or []
        if trial.datetime_complete is None or not history:
            continue
        end = (trial.datetime_complete - started).total_seconds()
        for epoch in reversed(history):
            points.append([end, epoch["val_accuracy"]])
            end -= epoch["seconds"]
    return sorted(points)


def logged_epoch_points(epoch_log: Path, started: float) -> list[list[float]]:
    """The usual script's epoch log (UsualScript.epoch_log) as [seconds since `started` (epoch
    seconds), validation accuracy]; a line cut by a stopped run is skipped."""
    if not epoch_log.is_file():
        return []
    points = []
    for line in epoch_log.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        points.append([entry["wall"] - started, entry["value"]])
    return sorted(points)


def read_optuna_run(
    url: str, started: datetime.datetime, budget_s: float, epoch_log: Path | None = None
) -> dict[str, Any]:
    """Points, epoch points, trial counts and best trial of the one study in an Optuna storage.

    Works for tuner's storage as for the usual script's: a point is a COMPLETE trial's value at
    its datetime_complete, in seconds since `started` (naive local time, as Optuna stores it).
    Epoch points are every epoch's validation accuracy at its end, from `epoch_log` (the usual
    script) or the trials' history (tuner). Trials still RUNNING, or FAILed after the budget
    (the race stopped the run), are unfinished.
    """
    names = optuna.get_all_study_names(url)
    if not names:
        return {"points": [], "epoch_points": [], "trials": {}, "best": None}
    trials = optuna.load_study(study_name=names[0], storage=url).get_trials(deepcopy=False)
    states = optuna.trial.TrialState
    complete = [t for t in trials if t.state == states.COMPLETE and t.value is not None]
    points = [[(t.datetime_complete - started).total_seconds(), t.value] for t in complete]
    best = max(complete, key=lambda t: t.value, default=None)

    def cut(trial: optuna.trial.FrozenTrial) -> bool:
        ended = trial.datetime_complete
        return trial.state == states.FAIL and (ended - started).total_seconds() > budget_s

    counts = {
        "started": len(trials),
        "pruned": sum(t.state == states.PRUNED for t in trials),
        "finished": len(complete),
        "failed": sum(t.state == states.FAIL and not cut(t) for t in trials),
        "unfinished": sum(t.state == states.RUNNING or cut(t) for t in trials),
    }
    if epoch_log is None:
        epoch_points = tuner_epoch_points(trials, started)
    else:
        epoch_points = logged_epoch_points(epoch_log, started.timestamp())
    return {
        "points": points,
        "epoch_points": epoch_points,
        "trials": counts,
        "best": None
        if best is None
        else {
            "value": best.value,
            "params": best.params,
            "trial": best.number,
            "best_epoch": best.user_attrs.get("best_epoch"),
        },
    }


def read_ray_run(path: Path, started: float) -> dict[str, Any]:
    """The same for ray-asha: a finished trial's value (tuner's rule: the accuracy of its epoch
    with the lowest validation loss) at its last report, in seconds since `started` (epoch s);
    epoch points from every trial's reports."""
    trials = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    points, best = [], None
    epoch_points = sorted(
        [wall - started, accuracy] for trial in trials for wall, _, _, accuracy in trial["epochs"]
    )
    for trial in trials:
        if trial["state"] != "finished":
            continue
        _, epoch, _, value = min(trial["epochs"], key=lambda e: e[2])
        points.append([trial["epochs"][-1][0] - started, value])
        if best is None or value > best["value"]:
            best = {"value": value, "params": trial["params"], "best_epoch": epoch}
    counts = {
        "started": len(trials),
        **{
            state: sum(t["state"] == state for t in trials)
            for state in ("pruned", "finished", "failed", "unfinished")
        },
    }
    return {"points": points, "epoch_points": epoch_points, "trials": counts, "best": best}


def retrain_usual(usual: UsualScript, params: dict[str, Any], epochs: int) -> float:
    """Train `params` on the whole training split for `epochs`, then test once: the accuracy."""
    config = replace(suggest(optuna.trial.FixedTrial(params), usual.spec), max_epochs=epochs)
    loaders = usual.loaders(config.batch_size, config.seed, test=True)
    *_, (_, _, accuracy) = usual.epochs(config, loaders)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("run", "retrain"))
    parser.add_argument("--contender", choices=(*OPTUNA_CONTENDERS, RAY_CONTENDER))
    parser.add_argument("--study", type=Path, required=True)
    parser.add_argument("--dataset-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, help="seconds")
    parser.add_argument("--train-limit", type=int, default=0)
    parser.add_argument("--trials", type=int, default=0, help="run: at most (0: the budget)")
    parser.add_argument("--max-epochs", type=int, default=0, help="run: epochs per trial")
    parser.add_argument("--storage", help="Optuna storage URL of an optuna contender")
    parser.add_argument("--out", type=Path, required=True, help="run folder, or retrain's JSON")
    parser.add_argument("--params", help="retrain: the configuration's params as JSON")
    parser.add_argument("--epochs", type=int, help="retrain: epochs on the whole training split")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    spec = race_spec(args.study, args.seed, args.train_limit, args.max_epochs)
    with tempfile.TemporaryDirectory(prefix="race-torchvision-") as into:
        epoch_log = args.out / EPOCH_LOG if args.action == "run" else None
        usual = usual_script(spec, args.dataset_dir, Path(into), epoch_log)
        print(f"torch threads {torch.get_num_threads()}, device {usual.device}", flush=True)
        if args.action == "retrain":
            started = time.perf_counter()
            accuracy = retrain_usual(usual, json.loads(args.params), args.epochs)
            result = {"test_accuracy": accuracy, "seconds": time.perf_counter() - started}
            args.out.write_text(json.dumps(result), encoding="utf-8")
        elif args.contender == RAY_CONTENDER:
            run_ray(usual, args.seed, args.budget, args.out, args.trials or None)
        else:
            run_optuna(
                args.contender, usual, args.seed, args.budget, args.storage, args.trials or None
            )


if __name__ == "__main__":
    main()
