"""The search race's baseline: a tuner run's starting configurations, each trained alone.

    python bench/race_baseline.py --study RUN/study.toml --from-storage sqlite:///RUN/trials.db \\
        --dataset-dir DIR --storage sqlite:///BASELINE/trials.db

The search gain of a tuner run (issue 24, goal 2) is its best trial's value minus the best of
its starting configurations trained alone on the same schedule. The starting configurations
are the trials the study queued before searching (`starting_trials`); each is trained here with
tuner's own engine (`fit`, the study's data through `load_device_data`, the precision tuner
picks), for the full schedule of that run (the most epochs any of its trials was set to train),
with no pruner and no budget, so that the gain measures the search and nothing else.
Results go to --storage as one Optuna study, as the race reads every contender's.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from typing import Any

import optuna
import torch

from tuner import attrs
from tuner.config import TrialConfig
from tuner.engine import EngineOptions, fit, pick_device
from tuner.engine.loading import load_device_data
from tuner.families import build_model
from tuner.search.space import suggest
from tuner.spec import StudySpec, load_spec

# Where a queued trial came from: a user attribute whose name ends in "source" (a portfolio's
# or [[enqueue]]'s trials say so), values starting with one of these.
SOURCE_SUFFIX = "source"
STARTING_SOURCES = ("portfolio", "enqueue")
FIXED_PARAMS = "fixed_params"  # Optuna's system attribute on every enqueued trial
RETRIED = "failed_trial"  # Optuna's system attribute on a retry of a failed trial


def trial_source(trial: optuna.trial.FrozenTrial) -> str | None:
    """The trial's `...source` user attribute (e.g. "portfolio 3"), None without one."""
    for name, value in trial.user_attrs.items():
        if name.endswith(SOURCE_SUFFIX) and isinstance(value, str):
            return value
    return None


def starting_trials(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The configurations a run started from, one trial per distinct parameter set.

    Trials whose source says portfolio or enqueue when any trial says so; else the trials
    Optuna ran from its queue (a study file's [[enqueue]], not retries); else the first
    trial. A short first-result copy is kept only when no full copy of it exists.
    """
    ordered = sorted(trials, key=lambda t: t.number)
    chosen = [t for t in ordered if (trial_source(t) or "").startswith(STARTING_SOURCES)]
    if not chosen:
        chosen = [
            t for t in ordered if FIXED_PARAMS in t.system_attrs and RETRIED not in t.system_attrs
        ]
    if not chosen:
        chosen = ordered[:1]
    distinct: dict[str, optuna.trial.FrozenTrial] = {}
    for trial in chosen:
        key = json.dumps(start_params(trial), sort_keys=True)
        if key not in distinct or distinct[key].user_attrs.get(attrs.FIRST_RESULT):
            distinct[key] = trial
    return list(distinct.values())


def schedule_epochs(trials: list[optuna.trial.FrozenTrial], fallback: int) -> int:
    """The run's full schedule: the most epochs any of its trials was configured to train;
    `fallback` (the epochs the budget chose, else the study file's) when none ran."""
    configured = [
        t.user_attrs[attrs.CONFIG]["max_epochs"] for t in trials if attrs.CONFIG in t.user_attrs
    ]
    return max(configured, default=fallback)


def start_params(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A starting trial's parameters: its own, or those it waits in the queue with."""
    return trial.params or dict(trial.system_attrs.get(FIXED_PARAMS, {}))


def starting_configs(
    trials: list[optuna.trial.FrozenTrial], spec: StudySpec, fallback_epochs: int = 0
) -> list[dict[str, Any]]:
    """[{trial, source, params, config}] of the starting trials, each on the run's full
    schedule (a first-result copy trained fewer epochs than the search's trials). A trial the
    run never started (still queued when the budget ended) is built from the study as tuner
    would have built it."""
    epochs = schedule_epochs(trials, fallback_epochs or spec.training.max_epochs)
    out = []
    for trial in starting_trials(trials):
        params = start_params(trial)
        if attrs.CONFIG in trial.user_attrs:
            config = TrialConfig.from_dict(trial.user_attrs[attrs.CONFIG])
        else:
            config = suggest(optuna.trial.FixedTrial(params), spec)
            config = replace(config, seed=spec.training.seed + trial.number)
        queued = FIXED_PARAMS in trial.system_attrs
        out.append(
            {
                "trial": trial.number,
                "source": trial_source(trial) or ("enqueue" if queued else "first trial"),
                "params": params,
                "config": replace(config, max_epochs=epochs),
            }
        )
    return out


def train_alone(config: TrialConfig, data: Any, device: torch.device, metric: str) -> dict:
    """Train one configuration with tuner's engine; its value is the metric of the epoch whose
    weights it keeps (the last that improved the validation loss), as a tuner trial's."""
    torch.manual_seed(config.seed)
    model = build_model(config, data.input_shape, data.num_classes).to(device)
    engine = EngineOptions().resolve(model, data.input_shape, config.batch_size, device)
    history = list(fit(model, data, config, device, engine))
    best = [r for r in history if r.improved][-1]
    return {
        "value": getattr(best, metric),
        "best_epoch": best.epoch,
        "epochs_run": len(history),
        "precision": engine.precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="the tuner run's (seeded) study file")
    parser.add_argument("--from-storage", required=True, help="the tuner run's storage URL")
    parser.add_argument("--dataset-dir", required=True)
    parser.add_argument("--storage", required=True, help="where the baseline's trials go")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    spec = load_spec(args.study)
    names = optuna.get_all_study_names(args.from_storage)
    if not names:
        raise SystemExit(f"error: no study in {args.from_storage}: the tuner run left nothing")
    source = optuna.load_study(study_name=names[0], storage=args.from_storage)
    trials = source.get_trials(deepcopy=False)
    if not trials:
        raise SystemExit(f"error: the tuner run in {args.from_storage} has no trial")
    budget_epochs = source.user_attrs.get(attrs.STUDY_BUDGET_EPOCHS, 0)
    starting = starting_configs(trials, spec, budget_epochs)
    device = pick_device("auto")
    data = load_device_data(spec.dataset, device, args.dataset_dir, download=False)
    study = optuna.create_study(storage=args.storage, study_name="baseline", direction="maximize")
    for start in starting:
        trial = study.ask()
        trial.set_user_attr("source", f"{start['source']} (tuner trial {start['trial']})")
        trial.set_user_attr("start_params", start["params"])
        trial.set_user_attr(attrs.CONFIG, start["config"].to_dict())
        result = train_alone(start["config"], data, device, spec.metric)
        trial.set_user_attr(attrs.BEST_EPOCH, result["best_epoch"])
        trial.set_user_attr(attrs.EPOCHS_RUN, result["epochs_run"])
        trial.set_user_attr(attrs.PRECISION, result["precision"])
        study.tell(trial, result["value"])
        print(f"{start['source']} trial {start['trial']}: {result}", flush=True)


if __name__ == "__main__":
    main()
