"""`tuner run --budget`: durations, the deadline kept, cut trials, no blind starts, the rungs."""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from studies import SMALL_SPACE, spec_from, tiny_data, tiny_study_toml
from tuner import attrs
from tuner.cli import app
from tuner.data import load_dataset, split
from tuner.engine import EngineOptions, to_device
from tuner.errors import TunerError
from tuner.runner import budget, probe
from tuner.runner.budget import BudgetClock, budget_epochs, first_config, plan_budget
from tuner.runner.plan import study_workload, time_steps
from tuner.runner.probe import probe_seconds_per_image
from tuner.runner.run import run_study
from tuner.runner.settings import RunSettings, trial_target, unused_trials_note
from tuner.runner.summary import StopReason, summary_lines
from tuner.search.objective import BUDGET_STOP, make_objective
from tuner.search.portfolio import load_portfolio, place_portfolio
from tuner.search.schedule import TrialSchedule, default_steps_per_epoch, study_schedule
from tuner.search.study import open_study, run_trials
from tuner.spec.budget import format_duration, parse_duration
from tuner.spec.schema import DEFAULT_TRIALS

# ---------------------------------------------------------------- durations and the spec key


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("1h30m", 5400),
        ("2h", 7200),
        ("600", 600),
        (45, 45),
        ("1.5m", 90),
    ],
)
def test_durations_read_as_seconds(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "10q", "0", "-5", "m", "1m1h", True, [1]])
def test_bad_durations_are_refused(text) -> None:
    with pytest.raises(ValueError, match="90s"):
        parse_duration(text)


def test_the_study_file_budget_key(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, tiny_study_toml(training='budget = "1h30m"\nreports_per_epoch = 3'))
    assert spec.training.budget == 5400 and spec.training.reports_per_epoch == 3
    assert spec_from(tmp_path, tiny_study_toml(training="budget = 90")).training.budget == 90
    assert spec_from(tmp_path, tiny_study_toml()).training.budget is None
    assert spec_from(tmp_path, tiny_study_toml()).training.full_trial_share == 0.3
    given = spec_from(tmp_path, tiny_study_toml(training="full_trial_share = 0.8"))
    assert given.training.full_trial_share == 0.8
    whole = spec_from(tmp_path, tiny_study_toml(training="full_trial_share = 1"))
    assert whole.training.full_trial_share == 1
    assert spec_from(tmp_path, tiny_study_toml()).training.full_trial_min_epochs == 0
    floor = spec_from(tmp_path, tiny_study_toml(training="full_trial_min_epochs = 4"))
    assert floor.training.full_trial_min_epochs == 4


@pytest.mark.parametrize(
    ("training", "key"),
    [
        ('budget = "soon"', "[training].budget"),
        ("budget = 0", "[training].budget"),
        ("budget = true", "[training].budget"),
        ("reports_per_epoch = -1", "[training].reports_per_epoch"),
        ('reports_per_epoch = "4"', "[training].reports_per_epoch"),
        ("full_trial_share = 0", "[training].full_trial_share"),
        ("full_trial_share = 1.5", "[training].full_trial_share"),
        ('full_trial_share = "most"', "[training].full_trial_share"),
        ("full_trial_min_epochs = -1", "[training].full_trial_min_epochs"),
        ("full_trial_min_epochs = 2.5", "[training].full_trial_min_epochs"),
        ("full_trial_min_epochs = 99", "[training].full_trial_min_epochs"),  # > max_epochs
    ],
)
def test_bad_budget_keys_name_the_file_and_key(tmp_path: Path, training, key) -> None:
    with pytest.raises(TunerError) as error:
        spec_from(tmp_path, tiny_study_toml(training=training))
    message = str(error.value)
    assert "study.toml" in message and key in message and "\n" not in message


# ---------------------------------------------------------------- the schedule


@pytest.fixture(scope="module")
def cpu_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_default_rungs_follow_the_dataset_size(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, tiny_study_toml())
    assert default_steps_per_epoch(spec, 1_400) == 1  # digits: one report per epoch
    assert default_steps_per_epoch(spec, 10_000) == 2
    assert default_steps_per_epoch(spec, 54_000) == 8  # Fashion-MNIST: eighths of an epoch
    given = spec_from(tmp_path, tiny_study_toml(training="reports_per_epoch = 3"))
    assert default_steps_per_epoch(given, 54_000) == 3


def test_the_budget_probe_times_the_configuration_trained_first(tmp_path: Path) -> None:
    # The known good configuration of [[enqueue]] is what the first trial trains, so its
    # batch size and model are what the epoch count is planned on.
    known = "[[enqueue]]\nlearning_rate = 0.005\n"
    spec = spec_from(tmp_path, tiny_study_toml(space=SMALL_SPACE) + known)
    config = first_config(spec)
    assert (config.learning_rate, config.batch_size, config.filters) == (0.005, 64, (4,))
    # A partial table leaves parameters to the sampler: the probe takes their middle values.
    space = SMALL_SPACE + 'dropout = { type = "float", low = 0.1, high = 0.5 }\n'
    partial = first_config(spec_from(tmp_path, tiny_study_toml(space=space) + known))
    assert (partial.learning_rate, partial.dropout, partial.filters) == (0.005, 0.3, (4,))
    # Without [[enqueue]] the shipped portfolio's first configuration trains first.
    plain = spec_from(tmp_path, tiny_study_toml(space=space))
    first = place_portfolio(plain.space, load_portfolio())[0].values
    config = first_config(plain)
    assert (config.learning_rate, config.dropout) == (first["learning_rate"], first["dropout"])
    off = first_config(spec_from(tmp_path, "portfolio = false\n" + tiny_study_toml(space=space)))
    assert off.dropout == 0.3  # nothing queued: the middle of the range


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_budget_probe_trains_in_the_trials_precision(
    monkeypatch: pytest.MonkeyPatch, one_torch_thread, precision: str
) -> None:
    """On a CPU with native bf16 the trials autocast and run ~1.7x the fp32 speed: a probe in
    fp32 guessed 43 s an epoch for 29 s on a Xeon with AMX, and the budget planned too few."""
    data = to_device(
        split(load_dataset("digits"), val_fraction=0.2, split_seed=0), torch.device("cpu")
    )
    trained_with: list[EngineOptions] = []

    def recording_fit(model, data, config, device, options=None, **kwargs):
        trained_with.append(options)
        return budget_fit(model, data, config, device, options, **kwargs)

    budget_fit = probe.fit
    monkeypatch.setattr(probe, "fit", recording_fit)
    options = EngineOptions(precision=precision, compile=True)
    assert probe_seconds_per_image(data, torch.device("cpu"), options=options) > 0
    # Not compiled: 40 batches cannot pay the compile time back.
    assert trained_with == [EngineOptions(precision=precision, compile=False)]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "0.25s"), (42.5, "42.5s"), (185, "3m 05s"), (7620, "2h 07m")],
)
def test_durations_are_written_as_the_budget_flag_reads_them(seconds: float, text: str) -> None:
    # One spelling in progress lines, summaries and reports; a user can paste it back.
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds, abs=0.05)


def test_budget_epochs_give_a_full_trial_a_share_of_the_budget() -> None:
    assert budget_epochs(600, 20, 50, 0.3) == 9  # 30% of 600 s at 20 s an epoch
    assert budget_epochs(600, 20, 50, 0.8) == 24  # a study that mostly trains its best guess
    assert budget_epochs(600, 20, 5, 0.3) == 5  # never above the study's max_epochs
    assert budget_epochs(10, 20, 5, 0.3) == 1
    # The full trial must fit in what is left, with a margin for the estimate: at 40 s an
    # epoch guessed (up to 50 s real) and 590 s left, 14 epochs would end after the deadline.
    assert budget_epochs(600, 40, 30, 1.0, left=590) == 11
    assert budget_epochs(600, 40, 30, 0.8, left=590) == 11
    assert budget_epochs(600, 40, 30, 0.3, left=590) == 4  # a small share: unchanged
    # A floor gives the full trial the epochs it needs to be worth training, when they fit:
    # a slow machine (48 s an epoch) gets 10, not the share's 3; a fast one keeps the share's.
    assert budget_epochs(600, 48, 30, 0.3, left=590, min_epochs=10) == 9  # only 9 fit
    assert budget_epochs(600, 40, 30, 0.3, left=590, min_epochs=10) == 10
    assert budget_epochs(600, 5, 30, 0.3, left=590, min_epochs=10) == 30
    assert budget_epochs(600, 500, 30, 0.3, left=590, min_epochs=10) == 1  # never none


@pytest.mark.parametrize(("share", "epochs"), [(None, 3), (0.6, 6), (1.0, 7)])
def test_a_study_chooses_the_share_a_full_trial_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, share, epochs
) -> None:
    """The study file's full_trial_share sets the epochs a budget run plans, up to what fits
    in the budget with the estimate's margin (1.0: 7 of the 10 guessed, not 10), and the study
    keeps them for its later runs."""
    training = "max_epochs = 50" + ("" if share is None else f"\nfull_trial_share = {share}")
    spec = spec_from(tmp_path, tiny_study_toml(training=training))
    data = to_device(
        split(load_dataset("digits"), val_fraction=0.2, split_seed=0), torch.device("cpu")
    )
    epoch_seconds = 10.0  # the probe's guess, made exact: 100 s hold 10 epochs
    monkeypatch.setattr(
        budget, "probe_seconds_per_image", lambda *_: epoch_seconds / len(data.train_labels)
    )
    study = optuna.create_study(direction="maximize")
    planned = plan_budget(study, spec, data, torch.device("cpu"), 100.0, time.time(), 1)
    assert planned.epochs == epochs == study.user_attrs[attrs.STUDY_BUDGET_EPOCHS]


def test_a_study_keeps_its_epochs_for_the_same_budget_and_plans_again_for_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers and resumed runs with the budget that chose the epochs train the same schedule;
    a later run with a longer budget gets the epochs that budget buys, not the first one's."""
    spec = spec_from(tmp_path, tiny_study_toml(training="max_epochs = 50"))
    data = to_device(
        split(load_dataset("digits"), val_fraction=0.2, split_seed=0), torch.device("cpu")
    )
    seconds_per_image = [10.0 / len(data.train_labels)]  # 10 s an epoch
    monkeypatch.setattr(budget, "probe_seconds_per_image", lambda *_: seconds_per_image[0])
    study = optuna.create_study(direction="maximize")
    cpu = torch.device("cpu")
    assert plan_budget(study, spec, data, cpu, 100.0, time.time(), 1).epochs == 3
    seconds_per_image[0] *= 3  # a loaded machine later: the same budget keeps its schedule
    assert plan_budget(study, spec, data, cpu, 100.0, time.time(), 1).epochs == 3
    seconds_per_image[0] /= 3
    assert plan_budget(study, spec, data, cpu, 1000.0, time.time(), 1).epochs == 30
    assert study.user_attrs[attrs.STUDY_BUDGET_EPOCHS] == 30
    assert study.user_attrs[attrs.STUDY_BUDGET_SECONDS] == 1000.0


def test_a_floor_gives_the_full_trial_its_epochs_on_a_slow_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = "max_epochs = 50\nfull_trial_min_epochs = 6"
    spec = spec_from(tmp_path, tiny_study_toml(training=training))
    data = to_device(
        split(load_dataset("digits"), val_fraction=0.2, split_seed=0), torch.device("cpu")
    )
    monkeypatch.setattr(budget, "probe_seconds_per_image", lambda *_: 10.0 / len(data.train_labels))
    planned = plan_budget(
        optuna.create_study(), spec, data, torch.device("cpu"), 100.0, time.time(), 1
    )
    assert planned.epochs == 6  # the share alone gives 3 (30 of 100 s at 10 s an epoch)


@pytest.mark.parametrize(
    ("pruner", "expected"),
    [
        # Two epochs of warm-up at 8 reports an epoch: 16 steps, not a quarter of an epoch.
        (
            'name = "median"\noptions = { n_warmup_steps = 2, interval_steps = 1 }',
            {"_n_warmup_steps": 16, "_interval_steps": 8},
        ),
        (
            'name = "hyperband"\noptions = { min_resource = 2, max_resource = 6 }',
            {"_min_resource": 16, "_max_resource": 48},
        ),
        ('name = "successive-halving"\noptions = { min_resource = 3 }', {"_min_resource": 24}),
        ('name = "successive-halving"', {"_min_resource": 1}),  # a slice of one epoch
    ],
)
def test_pruner_options_in_the_study_file_count_epochs(
    tmp_path: Path, pruner: str, expected: dict
) -> None:
    spec = spec_from(tmp_path, tiny_study_toml().replace('name = "none"', pruner))
    built = TrialSchedule(6, spec.pruner, steps_per_epoch=8).build_pruner()
    assert {key: getattr(built, key) for key in expected} == expected


def test_hyperband_never_plans_rungs_beyond_the_budget_epochs(tmp_path: Path) -> None:
    text = 'name = "hyperband"\noptions = { min_resource = 1, max_resource = 30 }'
    spec = spec_from(tmp_path, tiny_study_toml().replace('name = "none"', text))
    built = TrialSchedule(13, spec.pruner, steps_per_epoch=8).build_pruner()  # a budget: 13
    assert (built._min_resource, built._max_resource) == (8, 13 * 8)


def test_every_rung_is_reported_and_the_pruner_counts_in_steps(tmp_path, cpu_threads) -> None:
    text = tiny_study_toml(training="max_epochs = 2\npatience = 0").replace(
        'name = "none"', 'name = "hyperband"'
    )
    spec = spec_from(tmp_path, text)
    schedule = TrialSchedule(2, spec.pruner, steps_per_epoch=3)
    pruner = schedule.build_pruner()
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert (pruner._min_resource, pruner._max_resource) == (1, 6)
    study = open_study(spec, optuna.storages.InMemoryStorage())
    study.pruner = pruner
    run_trials(study, make_objective(spec, tiny_data(spec), torch.device("cpu"), schedule), 1)
    trial = study.trials[0]
    assert trial.state == TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [1, 2, 3, 4, 5, 6]
    assert trial.user_attrs[attrs.STEPS_PER_EPOCH] == 3
    assert trial.user_attrs[attrs.TRAIN_IMAGES] == 2 * 300
    # The epoch-end steps hold the full validation set's accuracy, as the history says.
    epochs = trial.user_attrs[attrs.HISTORY]
    assert [trial.intermediate_values[3], trial.intermediate_values[6]] == [
        e["val_accuracy"] for e in epochs
    ]


# ---------------------------------------------------------------- the deadline


def test_a_trial_running_at_the_deadline_is_pruned_with_reason_budget(
    tmp_path, cpu_threads
) -> None:
    spec = spec_from(tmp_path, tiny_study_toml(training="max_epochs = 50\npatience = 0"))
    polls = []

    def should_stop() -> bool:  # the deadline passes in the third epoch (5 batches an epoch)
        polls.append(1)
        return len(polls) > 12

    study = open_study(spec, optuna.storages.InMemoryStorage())
    deadline = dataclasses.replace(
        study_schedule(spec), deadline=SimpleNamespace(should_stop=should_stop)
    )
    objective = make_objective(spec, tiny_data(spec), torch.device("cpu"), deadline)
    run_trials(study, objective, 1)
    trial = study.trials[0]
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs[attrs.STOP_REASON] == BUDGET_STOP
    assert sorted(trial.intermediate_values) == [1, 2]  # what it reported is kept
    assert trial.user_attrs[attrs.EPOCHS_RUN] == 2
    assert 2 * 300 <= trial.user_attrs[attrs.TRAIN_IMAGES] < 3 * 300


def begun(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that began: a new study also holds the portfolio's, queued (WAITING)."""
    return [trial for trial in study.trials if trial.state != TrialState.WAITING]


def test_no_trial_starts_when_its_first_rung_cannot_fit(tmp_path) -> None:
    spec = spec_from(tmp_path, tiny_study_toml())
    study = open_study(spec, optuna.storages.InMemoryStorage())
    clock = BudgetClock(time.time() + 60, 60, first_rung_images=300, seconds_per_image=1.0)
    run_trials(study, lambda trial: 0.0, 5, budget=clock)
    assert begun(study) == [] and clock.exhausted


def test_a_measured_cost_stops_a_budget_run_before_a_blind_start(tmp_path, cpu_threads) -> None:
    """A study that measured 10 s per image does not start a 300-image trial with 60 s left."""
    (tmp_path / "study.toml").write_text(tiny_study_toml())
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    spec = spec_from(tmp_path, tiny_study_toml())
    study = open_study(spec, storage)
    study.add_trial(
        optuna.trial.create_trial(
            value=0.5,
            params={"learning_rate": 0.01},
            distributions={
                "learning_rate": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)
            },
            user_attrs={attrs.TRAIN_SECONDS: 3000.0, attrs.TRAIN_IMAGES: 300},
        )
    )
    settings = RunSettings(
        study_file=tmp_path / "study.toml", storage=storage, trials=5, budget=60.0
    )
    summary = run_study(settings, _quiet_console())
    assert summary.reason == StopReason.BUDGET
    assert summary.ran.total == 0
    assert len(begun(optuna.load_study(study_name="tiny", storage=storage))) == 1


def test_a_budget_run_ends_on_time_and_says_why(tmp_path, cpu_threads) -> None:
    """Digits, a 12 s budget and more epochs than fit: the run ends at its deadline."""
    text = tiny_study_toml(
        training="max_epochs = 100\npatience = 0\ntrials = 1000", space=SMALL_SPACE
    )
    (tmp_path / "study.toml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    started = time.time()
    settings = RunSettings(
        study_file=tmp_path / "study.toml", storage=storage, budget=12.0, started_at=started
    )
    summary = run_study(settings, _quiet_console())
    assert summary.reason == StopReason.BUDGET
    study = optuna.load_study(study_name="tiny", storage=storage)
    ended = [t.datetime_complete.timestamp() for t in study.trials if t.datetime_complete]
    assert all(t.state != TrialState.RUNNING for t in study.trials)
    assert summary.seconds < 12.0 + 5.0  # generous: storage writes and a loaded CPU
    epochs = study.user_attrs[attrs.STUDY_BUDGET_EPOCHS]
    assert summary.budget_epochs == epochs
    lines = "\n".join(summary_lines(summary))
    if ended:
        assert all(end - started < 12.0 + 3.0 for end in ended)
        # The epochs the budget chose are the ones every trial was scheduled to train.
        assert {t.user_attrs[attrs.CONFIG]["max_epochs"] for t in begun(study)} == {epochs}
    else:
        # On a loaded CPU start-up alone may take the 12 s: the run knew, and says so.
        assert summary.budget_needed > 12.0
        assert "no trial finished: a first trial needs a budget of about" in lines
    assert "stopped: the budget of 12.0s ran out" in lines
    assert f"used of 12.0s; trials train up to {epochs} epoch" in lines


def test_with_a_budget_and_no_trial_count_the_budget_alone_ends_the_run(
    tmp_path, cpu_threads
) -> None:
    """The user chose time, not a count: the study file's `trials` does not end the run early."""
    text = tiny_study_toml(training="max_epochs = 1\npatience = 0\ntrials = 2", space=SMALL_SPACE)
    (tmp_path / "study.toml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    settings = RunSettings(
        study_file=tmp_path / "study.toml", storage=storage, budget=15.0, started_at=time.time()
    )
    summary = run_study(settings, _quiet_console())
    study = optuna.load_study(study_name="tiny", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert summary.reason == StopReason.BUDGET and summary.target is None
    assert len(finished) > 2  # one-epoch digits trials: many fit in 15 s, even on a busy CPU
    lines = "\n".join(summary_lines(summary))
    assert f"study tiny: {len(finished)} finished trials, best" in lines
    assert "left:" not in lines  # no count, so nothing is "left"


def _quiet_console():
    from rich.console import Console

    return Console(file=io.StringIO(), force_terminal=False)


def test_the_budget_flag_refuses_a_bad_duration_in_one_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from tuner.cli import app

    (tmp_path / "study.toml").write_text(tiny_study_toml())
    result = CliRunner().invoke(
        app, ["run", "--study", str(tmp_path / "study.toml"), "--budget", "soon"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().startswith("error: --budget: got 'soon'")


# ---------------------------------------------------------------- one probe, the trial's model


def test_a_resnet18_study_on_a_budget_is_planned_from_a_resnet18_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_threads
) -> None:
    """The budget's probe and --workers auto's build the model the trials build (not the seed
    CNN: resnet18 costs ~100x as much) in the trials' precision, through the same loop."""
    space = 'learning_rate = { type = "float", low = 1e-3, high = 1e-2 }\nbatch_size = 8'
    text = tiny_study_toml(space=space) + '[model]\nfamily = "resnet18"\n'
    spec = spec_from(tmp_path, text)
    data = tiny_data(spec)
    built: list[tuple[str, int]] = []
    build = probe.build_model

    def recording_build(config, input_shape, num_classes):
        model = build(config, input_shape, num_classes)
        built.append((type(model).__name__, config.batch_size))
        return model

    monkeypatch.setattr(probe, "build_model", recording_build)
    monkeypatch.setattr(probe, "PROBE_BATCHES", 3)  # cheap: the model is the point
    monkeypatch.setattr(probe, "PROBE_WARMUP_BATCHES", 1)
    study = open_study(spec, optuna.storages.InMemoryStorage())
    plan = plan_budget(study, spec, data, torch.device("cpu"), 600.0, time.time(), 1)
    assert built == [("ResNet", 8)]
    assert plan.clock.seconds_per_image > 0
    workload = study_workload(spec, data.input_shape, data.num_classes, "fp32")
    assert time_steps(workload) > 0
    assert built[1:] == [("ResNet", 8)]


# ---------------------------------------------------------------- budgets shorter than an epoch


def _slow_probe(monkeypatch: pytest.MonkeyPatch, seconds_per_image: float) -> None:
    """A machine this slow, as the probe measures it (the trials themselves run at full speed)."""
    monkeypatch.setattr(budget, "probe_seconds_per_image", lambda *_: seconds_per_image)


def test_a_budget_shorter_than_an_epoch_still_finishes_a_trial(
    tmp_path, cpu_threads, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An epoch of 300 images that the probe puts at ~90 s does not fit in 60 s: the first trial
    trains one epoch on the part that fits, validated on the whole validation set, and `best`
    has a configuration afterwards; the start says which budget trains whole epochs."""
    text = tiny_study_toml(training="max_epochs = 5\npatience = 0", space=SMALL_SPACE)
    (tmp_path / "study.toml").write_text(text)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _slow_probe(monkeypatch, 0.3)
    settings = RunSettings(
        study_file=tmp_path / "study.toml", storage=storage, budget=60.0, trials=1
    )
    with caplog.at_level(logging.WARNING, logger="tuner.runner.budget"):
        summary = run_study(settings, _quiet_console())
    study = optuna.load_study(study_name="tiny", storage=storage)
    (trial,) = begun(study)
    assert trial.state == TrialState.COMPLETE and summary.best_value == trial.value
    images = trial.user_attrs[attrs.EPOCH_IMAGES]
    assert 30 <= images < 300 and trial.user_attrs[attrs.TRAIN_IMAGES] == images
    assert trial.user_attrs[attrs.EPOCHS_RUN] == 1
    (line,) = [m for m in caplog.messages if "too short for one epoch" in m]
    assert f"trains 1 epoch on {images} of the 300 training images" in line
    assert "--budget" in line and "or more trains whole epochs" in line
    result = CliRunner().invoke(app, ["best", "--study", "tiny", "--storage", storage])
    assert result.exit_code == 0, result.output


def test_a_budget_too_short_for_any_trial_says_what_it_needs(
    tmp_path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not even a tenth of an epoch fits: nothing is trained, and both the start and the
    summary say which budget a first trial needs on this machine."""
    (tmp_path / "study.toml").write_text(tiny_study_toml())
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    _slow_probe(monkeypatch, 10.0)  # 3,000 s an epoch
    settings = RunSettings(study_file=tmp_path / "study.toml", storage=storage, budget=20.0)
    with caplog.at_level(logging.WARNING, logger="tuner.runner.budget"):
        summary = run_study(settings, _quiet_console())
    assert summary.reason == StopReason.BUDGET and summary.ran.total == 0
    assert any("no trial can finish" in m for m in caplog.messages)
    assert summary.budget_needed is not None and summary.budget_needed > 3000
    lines = "\n".join(summary_lines(summary))
    assert "no trial finished: a first trial needs a budget of about" in lines


def test_a_budget_run_says_that_the_files_trial_count_is_not_used(tmp_path: Path) -> None:
    counted = spec_from(tmp_path, tiny_study_toml(training="trials = 20"))
    assert trial_target(None, counted, budget=60.0) is None  # the budget ends the run
    note = unused_trials_note(None, counted, budget=60.0)
    assert note is not None and "trials = 20 is not used" in note and "--trials 20" in note
    assert unused_trials_note(20, counted, budget=60.0) is None  # --trials given: it counts
    assert unused_trials_note(None, counted, budget=None) is None
    assert trial_target(None, counted, budget=None) == 20
    unset = spec_from(tmp_path, tiny_study_toml())  # no trials key: nothing to say
    assert unused_trials_note(None, unset, budget=60.0) is None
    assert trial_target(None, unset, budget=None) == DEFAULT_TRIALS


@pytest.mark.parametrize(
    ("left", "said"),
    [(30.0, "only 29.0s of the budget is left"), (0.5, "the budget is used up")],
)
def test_no_new_trial_is_said_as_a_person_would(caplog, left: float, said: str) -> None:
    clock = BudgetClock(1000.0 + left, 60, 300, seconds_per_image=0.2, clock=lambda: 1000.0)
    with caplog.at_level("WARNING", logger="tuner"):
        assert not clock.first_rung_fits()
    message = caplog.records[-1].getMessage()
    assert said in message and "a new trial needs about 1m 00s" in message
    assert "are left" not in message and "~0s" not in message


def test_the_probe_never_guesses_faster_than_its_fastest_timed_batch(
    tmp_path: Path, monkeypatch
) -> None:
    """Two timed batches: the lower quartile must stay between them (the exclusive quartile
    extrapolated below the fastest, down to a negative time per image)."""
    monkeypatch.setattr(probe, "time_batches", lambda *args, **kwargs: [1.0, 6.0])
    config = first_config(spec_from(tmp_path, tiny_study_toml()))
    per_image = probe.probe_seconds_per_image(None, torch.device("cpu"), config)
    assert 1.0 / config.batch_size <= per_image <= 6.0 / config.batch_size
