"""The rung sampler: TPE on the highest step enough trials reached, valued at that step."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from studies import spec_from, tiny_study_toml
from tuner.errors import TunerError
from tuner.search.rung_tpe import RungTPESampler, choose_rung, default_min_observations
from tuner.search.samplers import SAMPLERS
from tuner.search.schedule import BUDGET_PRUNER, BUDGET_SAMPLER, TrialSchedule

SPACE = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}


def stored(
    x: float, curve: list[float], value: float | None = None, y: float = 0.5
) -> optuna.trial.FrozenTrial:
    """A finished trial at `x` that reported `curve` (steps 1, 2, ...): complete with `value`,
    else pruned after its last report."""
    return create_trial(
        state=TrialState.PRUNED if value is None else TrialState.COMPLETE,
        value=value,
        params={"x": x, "y": y},
        distributions=SPACE,
        intermediate_values={step: v for step, v in enumerate(curve, 1)},
    )


def numbered(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    return study.get_trials()


def slow_starter_value(x: float, step: int) -> float:
    """Fast starters near x = 0.2 lead at step 1; from step 2 on the trials near 0.8 lead."""
    return 1.0 - abs(x - (0.2 if step == 1 else 0.8))


def fidelity_study(direction: str = "maximize") -> optuna.Study:
    """What successive halving leaves: 3 early trials near x = 0.2 that nothing cut (the first
    trials of a run reach the top rung unopposed) and are mediocre there, and 30 trials spread
    over x, every other one reported to step 3, the rest cut at step 1."""
    sign = 1.0 if direction == "maximize" else -1.0
    study = optuna.create_study(direction=direction)

    def curve(x: float, steps: int) -> list[float]:
        return [sign * slow_starter_value(x, step) for step in range(1, steps + 1)]

    for x in (0.15, 0.2, 0.25):
        study.add_trial(stored(x, curve(x, 3), value=sign * slow_starter_value(x, 3)))
    rng = np.random.default_rng(0)
    for index in range(30):
        x, y = float(rng.uniform()), float(rng.uniform())
        study.add_trial(stored(x, curve(x, 3 if index % 2 == 0 else 1), y=y))
    return study


def draw_x(study: optuna.Study, count: int) -> np.ndarray:
    """The x of `count` new trials, each failed at once (so no draw becomes an observation)."""
    xs = []
    for _ in range(count):
        trial = study.ask(SPACE)
        xs.append(trial.params["x"])
        study.tell(trial, state=TrialState.FAIL)
    return np.array(xs)


def test_the_rung_is_the_highest_step_that_enough_trials_reached() -> None:
    trials = numbered(
        [stored(0.1 * i, [0.1 * i] * 3) for i in range(4)]  # reached step 3
        + [stored(0.5, [0.5, 0.6]) for _ in range(6)]  # cut at step 2
        + [stored(0.9, [0.3]) for _ in range(2)]  # cut at step 1
    )
    rung = choose_rung(trials, min_observations=10)
    assert rung is not None and rung.step == 2 and not rung.top
    # The values are those reported at step 2, not the trials' last ones.
    assert rung.values == {
        **{i: (0.1 * i,) for i in range(4)},
        **{number: (0.6,) for number in range(4, 10)},
    }
    assert choose_rung(trials, min_observations=4).step == 3  # the top: four reached it
    assert choose_rung(trials, min_observations=11).step == 1  # too few at step 2: lower
    assert choose_rung(trials, min_observations=13) is None  # no step has 13: startup


def test_complete_trials_count_at_the_top_step_with_their_final_value() -> None:
    trials = numbered(
        [
            stored(0.1, [0.2, 0.3, 0.4], value=0.45),  # final value: its best epoch
            stored(0.2, [0.5], value=0.6),  # stopped early at step 1: complete all the same
            stored(0.3, [0.1, 0.2, 0.9]),  # pruned at the top step: its value there
            stored(0.4, [0.7]),  # never reached the top
            stored(0.5, [], value=0.3),  # reported nothing: trained on another schedule
        ]
    )
    rung = choose_rung(trials, min_observations=3)
    assert rung is not None and (rung.step, rung.top) == (3, True)
    assert rung.values == {0: (0.45,), 1: (0.6,), 2: (0.9,)}
    # Where no trial reports (Optuna without a pruner's steps): the complete ones, as TPE.
    unreported = numbered([stored(0.1 * i, [], value=0.1 * i) for i in range(3)])
    assert choose_rung(unreported, min_observations=3).values == {i: (0.1 * i,) for i in range(3)}


def test_the_default_rung_size_lets_tpe_split_the_space() -> None:
    many = {f"p{i}": FloatDistribution(0.0, 1.0) for i in range(12)}
    trial = create_trial(
        value=1.0, params=dict.fromkeys(many, 0.5), distributions=many, intermediate_values={1: 1.0}
    )
    assert default_min_observations([trial], n_startup_trials=10) == 13  # 12 parameters + 1
    small = numbered([stored(0.5, [0.5])])
    assert default_min_observations(small, n_startup_trials=10) == 10  # TPE's startup


def test_on_the_rung_the_sampler_concentrates_where_trials_end_up_good() -> None:
    """On step 3 the trials near x = 0.8 lead; the early complete trials near 0.2 do not,
    however long they trained. (Optuna's TPE ranks complete trials first, so here it samples
    near 0.2.)"""
    for seed in range(3):
        study = fidelity_study()
        study.sampler = RungTPESampler(seed=seed)
        assert study.sampler.rung(study).step == 3
        xs = draw_x(study, 20)
        assert np.mean(np.abs(xs - 0.8) < 0.25) >= 0.7, (seed, xs)


def test_a_lower_rung_is_modelled_when_the_top_has_too_few() -> None:
    # 18 trials have a value at step 3, 33 at step 1: with 20 needed, step 1 (fast starters).
    study = fidelity_study()
    study.sampler = RungTPESampler(seed=0, min_observations=20)
    assert study.sampler.rung(study).step == 1
    xs = draw_x(study, 20)
    assert np.mean(np.abs(xs - 0.2) < 0.25) >= 0.7, xs


def test_a_minimised_metric_is_modelled_in_its_direction() -> None:
    study = fidelity_study("minimize")  # the same study, every value negated
    study.sampler = RungTPESampler(seed=0)
    xs = draw_x(study, 20)
    assert np.mean(np.abs(xs - 0.8) < 0.25) >= 0.7, xs


def test_before_a_rung_has_enough_trials_it_samples_at_random(caplog) -> None:
    # Five trials, all best near x = 0.2: too few to model, so draws spread over [0, 1].
    study = optuna.create_study(direction="maximize")
    study.add_trials([stored(0.2 + 0.01 * i, [1.0]) for i in range(5)])
    study.sampler = RungTPESampler(seed=0)
    with caplog.at_level(logging.INFO, logger="tuner.search.rung_tpe"):
        xs = draw_x(study, 40)
    assert study.sampler.rung(study) is None
    assert np.sum(xs < 0.5) >= 10 and np.sum(xs >= 0.5) >= 10, xs
    assert "models on step" not in caplog.text


def test_it_says_which_rung_it_models_on_once_per_change(caplog) -> None:
    schedule = TrialSchedule(9, BUDGET_PRUNER, 1, budget_epochs=40.0)
    study = optuna.create_study(
        direction="maximize", sampler=RungTPESampler(seed=0), pruner=schedule.build_pruner()
    )
    with caplog.at_level(logging.INFO, logger="tuner.search.rung_tpe"):
        study.optimize(curve_objective, n_trials=45)
    said = [re.search(r"models on step (\d+)", r.getMessage()) for r in caplog.records]
    steps = [int(found.group(1)) for found in said if found]
    assert steps and steps == sorted(set(steps)), said  # climbs, each rung said once
    assert steps[0] == 1  # the first rung fills first


def curve_objective(trial: optuna.Trial) -> float:
    x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
    value = 0.0
    for step in range(1, 10):
        value = slow_starter_value(x, step) - 0.1 * y
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def test_a_seed_repeats_the_run_and_the_sampler_writes_nothing_to_the_study() -> None:
    """Workers on one study share nothing but its storage: the model comes from the stored
    trials alone, so two samplers with one seed draw the same, and none writes there."""
    runs = []
    for _ in range(2):
        schedule = TrialSchedule(9, BUDGET_PRUNER, 1, budget_epochs=40.0)
        study = optuna.create_study(
            direction="maximize", sampler=RungTPESampler(seed=7), pruner=schedule.build_pruner()
        )
        study.optimize(curve_objective, n_trials=30)
        runs.append([trial.params for trial in study.trials])
        # Only the pruner's marks: TPE's shared draws (constant liar) stay in the view.
        keys = {key for trial in study.trials for key in trial.system_attrs}
        assert keys and all(key.startswith("completed_rung_") for key in keys), keys
    assert runs[0] == runs[1]
    # A fresh sampler (another worker) on the same stored trials draws what this one does.
    first, second = RungTPESampler(seed=3), RungTPESampler(seed=3)
    study = fidelity_study()
    trial = study.ask()
    frozen = study.trials[trial.number]
    drawn = [
        sampler.sample_independent(study, frozen, "x", SPACE["x"]) for sampler in (first, second)
    ]
    assert drawn[0] == drawn[1]


def test_the_study_file_names_it_and_its_options_are_checked(tmp_path: Path) -> None:
    assert SAMPLERS[BUDGET_SAMPLER] is RungTPESampler
    text = tiny_study_toml().replace('name = "random"', 'name = "rung-tpe"')
    assert spec_from(tmp_path, text).sampler.name == "rung-tpe"
    bad = text.replace("seed = 0", "seed = 0\noptions = { min_observations = 0 }")
    with pytest.raises(TunerError, match=r"\[sampler\]\.options: rejected by RungTPESampler: "):
        spec_from(tmp_path, bad)
    unknown = text.replace("seed = 0", "seed = 0\noptions = { gamma_rung = 2 }")
    with pytest.raises(TunerError, match=r"allowed: .*min_observations"):
        spec_from(tmp_path, unknown)
