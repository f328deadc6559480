"""Warm starts: another study's best configurations queued first, or its trials copied in.

`enqueue_best` (`tuner run --enqueue-from S --top K`) queues the K best configurations of study
S to run again in this one; `copy_trials` (`tuner run --from S`) adds S's finished trials to
this study as they are, so the sampler learns from them without training anything. Either way
every parameter must fit this study's [space]: one that is not in it, or a value outside its
range or choices, is a one-line error naming the trial and the parameter.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuner import attrs
from tuner.checking import Checker
from tuner.errors import TunerError
from tuner.search.space import distribution
from tuner.spec import StudySpec
from tuner.spec.enqueue import check_values, trial_params
from tuner.spec.grid import FILTERS_PER_BLOCK

log = logging.getLogger(__name__)

FILTER_PREFIX = "filters_"


def spec_values(trial: FrozenTrial) -> dict[str, Any]:
    """A stored trial's parameters by the names of [space] (`filters` as a list per block)."""
    values: dict[str, Any] = {}
    filters: dict[int, int] = {}
    for name, value in trial.params.items():
        if name == FILTERS_PER_BLOCK:  # a grid study's conv stack
            stack = json.loads(value)
            values["filters"], values["num_blocks"] = stack, len(stack)
        elif name.startswith(FILTER_PREFIX) and name[len(FILTER_PREFIX) :].isdigit():
            filters[int(name[len(FILTER_PREFIX) :])] = value
        else:
            values[name] = value
    if filters:
        blocks = values.get("num_blocks", max(filters))
        values["filters"] = [filters[block] for block in sorted(filters) if block <= blocks]
    return values


def compatible_params(source: optuna.Study, trial: FrozenTrial, spec: StudySpec) -> dict[str, Any]:
    """`trial`'s parameters as this study's trial parameters; TunerError when one doesn't fit."""
    if spec.sampler.name == "grid":
        raise TunerError(
            f"{spec.path}: a grid study runs its own grid; warm starts need another sampler"
        )
    where = Checker(Path(f"study {source.study_name!r} trial {trial.number}"))
    try:
        values = check_values(where, spec_values(trial), spec.space, "parameter")
    except TunerError as exc:
        raise TunerError(f"{exc} (does not fit the [space] of {spec.path})") from None
    return trial_params(values, spec.space)


def ranked(source: optuna.Study) -> list[FrozenTrial]:
    """The source study's complete trials, best first."""
    if len(source.directions) != 1:
        raise TunerError(
            f"study {source.study_name!r} has several objectives: warm starts need one"
        )
    trials = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = source.direction == optuna.study.StudyDirection.MAXIMIZE
    return sorted(trials, key=lambda trial: trial.value, reverse=maximize)


def enqueue_best(study: optuna.Study, spec: StudySpec, source: optuna.Study, top: int) -> int:
    """Queue the `top` best configurations of `source` in `study`; how many were queued.

    All are checked before any is queued. One already in `study` (a repeated command) is not
    queued again.
    """
    best = ranked(source)[:top]
    if not best:
        raise TunerError(f"study {source.study_name!r} has no complete trials to take the best of")
    params = [compatible_params(source, trial, spec) for trial in best]
    for one in params:
        study.enqueue_trial(
            one, user_attrs={attrs.SOURCE: f"enqueue-from:{source.study_name}"}, skip_if_exists=True
        )
    log.info("queued the %d best configurations of %s", len(params), source.study_name)
    return len(params)


def copy_trials(study: optuna.Study, spec: StudySpec, source: optuna.Study) -> int:
    """Add `source`'s finished trials to `study` (once), with `study`'s distributions.

    Values, per-epoch values and tuner's trial attributes travel along, so samplers and pruners
    treat them as this study's own history. All are checked before any is added.
    """
    if study.user_attrs.get(attrs.STUDY_SEEDED_FROM) == source.study_name:
        log.info("%s already holds the trials of %s", study.study_name, source.study_name)
        return 0
    if source.direction != study.direction:
        raise TunerError(
            f"study {source.study_name!r} is {source.direction.name.lower()}d, "
            f"{spec.path} says {spec.direction}"
        )
    finished = source.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    if not finished:
        raise TunerError(f"study {source.study_name!r} has no finished trials to start from")
    copies = []
    for trial in finished:
        params = compatible_params(source, trial, spec)
        distributions = {
            name: distribution(spec.space["filters" if name.startswith(FILTER_PREFIX) else name])
            for name in params
        }
        copies.append(
            optuna.trial.create_trial(
                state=trial.state,
                value=trial.value if trial.state == TrialState.COMPLETE else None,
                params=params,
                distributions=distributions,
                user_attrs={
                    **trial.user_attrs,
                    attrs.WARM_START: f"{source.study_name} trial {trial.number}",
                },
                intermediate_values=trial.intermediate_values,
            )
        )
    study.add_trials(copies)
    study.set_user_attr(attrs.STUDY_SEEDED_FROM, source.study_name)
    log.info("added %d trials of %s to %s", len(copies), source.study_name, study.study_name)
    return len(copies)
