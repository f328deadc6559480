"""TPE on one fidelity: the highest rung that enough trials reached (BOHB's model, on Optuna).

With successive halving most trials are pruned, so Optuna's TPE sees few complete trials and
ranks the pruned ones by the last step they reached, mixing fidelities: a trial cut at the
first rung and one cut at the third are compared as if they had trained alike. BOHB (Falkner
et al., 2018) models one budget instead: the highest one with enough observations, each trial
valued by what it measured there. `RungTPESampler` does that with Optuna's own TPESampler for
the densities: at each trial it writes the trials that reached the chosen step, valued at that
step, into a throwaway in-memory study, and asks a TPESampler about that study. It reads only
the study's storage and keeps no state between trials but the seed and the last rung it logged,
so several workers on one study each build the same model from the same trials.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Rung:
    """The fidelity the model is built on: a reported step, and each trial's value there.

    `values` maps a trial number to its values at `step` (one per objective); `top` says the
    step is the highest any trial reported, where complete trials count with their final value.
    """

    step: int
    values: dict[int, tuple[float, ...]]
    top: bool


def choose_rung(trials: Sequence[FrozenTrial], min_observations: int) -> Rung | None:
    """The highest step at which at least `min_observations` finished trials have a value.

    A trial's value at a step is its intermediate value there (NaN and inf are left out: they
    rank nothing). A complete trial also counts at the top step, the highest any trial
    reported, with its final value: it trained its whole schedule (or stopped early because
    more would not help), so its result is the highest fidelity it has, whatever step it
    ended on. Not one that reported nothing while others did: it did not train on their
    schedule (a short first-result trial); where no trial reports, all complete ones count.
    A trial that never reached a step is not in that step's model. None: no step has enough
    (sample as TPE's startup does).
    """
    finished = [trial for trial in trials if trial.state in _FINISHED]
    steps = {step for trial in finished for step in trial.intermediate_values}
    top = max(steps, default=0)
    final = {
        trial.number
        for trial in finished
        if trial.state == TrialState.COMPLETE and (trial.intermediate_values or not steps)
    }
    for step in sorted(steps | {top}, reverse=True):
        values: dict[int, tuple[float, ...]] = {}
        for trial in finished:
            if step == top and trial.number in final:
                assert trial.values is not None
                values[trial.number] = tuple(trial.values)
                continue
            value = trial.intermediate_values.get(step)
            if value is not None and math.isfinite(value):
                values[trial.number] = (value,)
        if len(values) >= min_observations:
            return Rung(step, values, step == top)
    return None


def default_min_observations(trials: Sequence[FrozenTrial], n_startup_trials: int) -> int:
    """How many trials a rung needs before TPE models on it: max(n_startup_trials, d + 1).

    n_startup_trials: below it TPE itself would not model yet (its own startup rule, kept).
    d + 1, d the parameters sampled so far: BOHB's minimum for a d-dimensional density that is
    not degenerate; with fewer points than that the "good" group is one or two trials and TPE
    samples around them as if they were the answer.
    """
    names = {
        name
        for trial in trials
        if trial.state in _FINISHED
        for name, distribution in trial.distributions.items()
        if not distribution.single()
    }
    return max(n_startup_trials, len(names) + 1, 1)


def trial_seed(seed: int | None, number: int) -> int | None:
    """The inner samplers' seed for trial `number`: fixed by `seed` and the trial alone, so a
    run is repeatable whichever worker draws which trial."""
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed % 2**64, number]).generate_state(1)[0])


def rung_view(
    study: optuna.Study, trials: Sequence[FrozenTrial], rung: Rung, current: FrozenTrial
) -> tuple[optuna.Study, FrozenTrial]:
    """An in-memory study of `study`'s directions holding the trials observed at `rung`,
    COMPLETE with their values there, then the other running trials (TPE's constant liar
    counts them as bad, so workers do not all sample the same point), then `current` as
    running; returns it and its copy of `current`, the trial TPE samples for."""
    storage = optuna.storages.InMemoryStorage()
    name = f"{study.study_name}:step-{rung.step}"
    storage.create_new_study(study.directions, name)
    # load_study, not create_study, which logs a line for every new study: one per trial here.
    view = optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    copies = []
    for trial in trials:
        if trial.number in rung.values:
            state, values = TrialState.COMPLETE, list(rung.values[trial.number])
        elif trial.state == TrialState.RUNNING and trial.number != current.number:
            state, values = TrialState.RUNNING, None
        else:
            continue
        copies.append(_copy(trial, state, values))
    copies.append(_copy(current, TrialState.RUNNING, None))
    view.add_trials(copies)
    return view, view.get_trials(deepcopy=False)[-1]


def _copy(trial: FrozenTrial, state: TrialState, values: list[float] | None) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=state, values=values, params=trial.params, distributions=trial.distributions
    )


@dataclass(frozen=True)
class _TrialModel:
    """What one trial samples from: TPE on a rung's view, or random draws before any rung."""

    key: tuple[str, int]
    random: optuna.samplers.RandomSampler
    view: optuna.Study | None = None
    view_trial: FrozenTrial | None = None
    tpe: optuna.samplers.TPESampler | None = None


class RungTPESampler(optuna.samplers.BaseSampler):
    """TPE on the highest rung (reported step) at which at least `min_observations` trials
    have a value, BOHB-style; random sampling until a rung has that many.

    Args:
        min_observations: trials a rung needs before TPE models on it (None:
            `default_min_observations`, max(n_startup_trials, parameters + 1)).
        n_startup_trials: as TPE's; the least `min_observations` can default to.
        n_ei_candidates, multivariate, constant_liar: passed to the TPESampler that models.
        seed: makes the run repeatable (each trial's draws follow from it and its number).
    """

    def __init__(
        self,
        *,
        min_observations: int | None = None,
        n_startup_trials: int = 10,
        n_ei_candidates: int = 24,
        multivariate: bool | None = None,
        constant_liar: bool = True,
        seed: int | None = None,
    ) -> None:
        if min_observations is not None and min_observations < 1:
            raise ValueError(f"min_observations must be at least 1, got {min_observations}")
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be at least 0, got {n_startup_trials}")
        self._min_observations = min_observations
        self._n_startup_trials = n_startup_trials
        # n_startup_trials=0 inside: whether to model is decided here, by the rung's size.
        self._tpe_options: dict[str, Any] = {
            "n_startup_trials": 0,
            "n_ei_candidates": n_ei_candidates,
            "multivariate": multivariate,
            "constant_liar": constant_liar,
        }
        optuna.samplers.TPESampler(**self._tpe_options)  # Optuna checks its options now
        self._seed = seed
        self._model: _TrialModel | None = None
        self._logged_step: int | None = None

    def reseed_rng(self) -> None:
        self._seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._model = None

    def rung(self, study: optuna.Study) -> Rung | None:
        """The rung the next trial of `study` is modelled on (None: random draws)."""
        trials = study.get_trials(deepcopy=False)
        return choose_rung(trials, self._needed(trials))

    def _needed(self, trials: Sequence[FrozenTrial]) -> int:
        if self._min_observations is not None:
            return self._min_observations
        return default_min_observations(trials, self._n_startup_trials)

    def _for_trial(self, study: optuna.Study, trial: FrozenTrial) -> _TrialModel:
        """The model of `trial`, built once when Optuna first asks about it."""
        key = (study.study_name, trial.number)
        if self._model is not None and self._model.key == key:
            return self._model
        seed = trial_seed(self._seed, trial.number)
        random = optuna.samplers.RandomSampler(seed=seed)
        trials = study.get_trials(deepcopy=False)
        needed = self._needed(trials)
        rung = choose_rung(trials, needed)
        if rung is None:
            self._model = _TrialModel(key, random)
            return self._model
        if rung.step != self._logged_step:
            self._logged_step = rung.step
            log.info(
                "%s: the sampler models on step %d, the highest step that %d finished trials "
                "reached (%d needed)%s",
                study.study_name,
                rung.step,
                len(rung.values),
                needed,
                "; complete trials count by their final value" if rung.top else "",
            )
        view, view_trial = rung_view(study, trials, rung, trial)
        tpe = optuna.samplers.TPESampler(seed=seed, **self._tpe_options)
        self._model = _TrialModel(key, random, view, view_trial, tpe)
        return self._model

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        model = self._for_trial(study, trial)
        if model.tpe is None:
            return {}  # startup: every parameter drawn at random, as TPE's startup does
        assert model.view is not None and model.view_trial is not None
        return model.tpe.infer_relative_search_space(model.view, model.view_trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        model = self._for_trial(study, trial)
        if model.tpe is None or not search_space:
            return {}
        assert model.view is not None and model.view_trial is not None
        return model.tpe.sample_relative(model.view, model.view_trial, search_space)

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        model = self._for_trial(study, trial)
        if model.tpe is None:
            return model.random.sample_independent(study, trial, param_name, param_distribution)
        assert model.view is not None and model.view_trial is not None
        return model.tpe.sample_independent(
            model.view, model.view_trial, param_name, param_distribution
        )
