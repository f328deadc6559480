"""The search race's ray-asha contender: Ray Tune, ASHA and OptunaSearch on the usual script.

Imported only when that contender runs: ray[tune] is the optional `bench` extra, never a
dependency of tuner (pip install -e '.[bench]').
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch
from trial_throughput import UsualScript

from tuner.search.space import suggest
from tuner.spec import StudySpec

BENCH = Path(__file__).resolve().parent


class RecordingASHA(ASHAScheduler):
    """ASHA as it is, remembering which trials it stopped before max_t (pruned)."""

    def __init__(self, max_t: int) -> None:
        super().__init__(max_t=max_t)
        self.max_epochs = max_t
        self.pruned: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result):  # type: ignore[no-untyped-def]
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == self.STOP and result["training_iteration"] < self.max_epochs:
            self.pruned.add(trial.trial_id)
        return decision


def define_space(trial: optuna.Trial, spec: StudySpec) -> None:
    """The study's space, define-by-run, as OptunaSearch takes it."""
    suggest(trial, spec)


def run_ray(
    usual: UsualScript, seed: int, budget: float, out: Path, trials: int | None = None
) -> None:
    """ASHA (max_t = the study's max_epochs, other defaults) + OptunaSearch (its default TPE),
    one CPU per trial (Ray's default), `time_budget_s` (and at most `trials` samples); writes
    every trial's epochs and end state to out/ray_trials.json."""
    spec = usual.spec
    max_epochs = spec.training.max_epochs

    def trainable(params: dict[str, Any]) -> None:
        config = suggest(optuna.trial.FixedTrial(params), spec)
        loaders = usual.loaders(config.batch_size, config.seed)
        for epoch, val_loss, accuracy in usual.epochs(config, loaders):
            metrics = {"val_accuracy": accuracy, "val_loss": val_loss, "epoch": epoch}
            tune.report({**metrics, "wall": time.time()})

    # Ray's workers unpickle UsualScript by reference: they must import bench/ and tuner.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False, log_to_driver=False)
    scheduler = RecordingASHA(max_t=max_epochs)
    searcher = OptunaSearch(
        space=functools.partial(define_space, spec=spec),
        metric="val_accuracy",
        mode="max",
        seed=seed,
    )
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials or -1,  # -1: until the time budget, as tuner's budget runs
            time_budget_s=budget,
        ),
        run_config=tune.RunConfig(storage_path=str(out.resolve() / "ray"), name="race", verbose=0),
    )
    trials = []
    for result in tuner.fit():
        frame = result.metrics_dataframe
        rows = [] if frame is None or "epoch" not in frame else frame.to_dict("records")
        epochs = [[r["wall"], int(r["epoch"]), r["val_loss"], r["val_accuracy"]] for r in rows]
        trial_id = (result.metrics or {}).get("trial_id")
        if result.error is not None:
            state = "failed"
        elif epochs and epochs[-1][1] == max_epochs:
            state = "finished"
        elif trial_id in scheduler.pruned:
            state = "pruned"
        else:
            state = "unfinished"  # cut by the time budget
        trials.append({"params": result.config, "epochs": epochs, "state": state})
    (out / "ray_trials.json").write_text(json.dumps(trials), encoding="utf-8")
    ray.shutdown()
