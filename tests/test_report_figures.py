"""The study report's figures through their data functions (no browser): categorical axes,
pruned trials in the history, how sure the importances are, the contour's pair, the
train-vs-validation caption, slices and parallel coordinates that fit the page."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState
from study_fixtures import make_study, sqlite_url

from studies import spec_from, tiny_study_toml
from tuner import attrs
from tuner.report import build_report, history, importance, params
from tuner.report.data import summarize
from tuner.report.trials import CATEGORICAL, LOG, param_table
from tuner.search.study import open_study


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return make_study(40)


def kernel_study(n_trials: int = 24) -> optuna.Study:
    """kernel_size and batch_size are categorical numbers; the objective likes kernel_size 5."""

    def objective(trial: optuna.Trial) -> float:
        kernel = trial.suggest_categorical("kernel_size", [3, 5])
        batch = trial.suggest_categorical("batch_size", [16, 32, 64])
        learning_rate = trial.suggest_float("learning_rate", 1e-4, 3e-2, log=True)
        blocks = trial.suggest_int("num_blocks", 1, 3)
        return (
            0.8
            + 0.05 * (kernel == 5)
            - 0.01 * abs(math.log10(learning_rate) + 2.5)
            + 0.001 * (blocks + batch / 64)
        )

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=n_trials)
    return study


# ---------------------------------------------------------------- categorical parameters


def test_categorical_numbers_are_categories_in_the_table() -> None:
    table = param_table(kernel_study())
    kernel = table.axis("kernel_size")
    assert kernel.kind == CATEGORICAL
    assert kernel.categories == ("3", "5")
    assert set(kernel.values) == {"3", "5"}
    assert table.axis("batch_size").categories == ("16", "32", "64")  # the choices' order
    assert table.axis("learning_rate").kind == LOG
    assert table.axis("num_blocks").integer


def test_contour_puts_categorical_numbers_on_a_category_axis() -> None:
    study = kernel_study()
    data = params.contour_data(study, "kernel_size", "learning_rate")
    assert data.x_grid == ("3", "5")
    figure = params.draw_contour(data, "accuracy")
    assert figure.layout.xaxis.type == "category"
    assert list(figure.layout.xaxis.categoryarray) == ["3", "5"]
    assert figure.layout.yaxis.type == "log"
    contour = figure.data[0]
    assert list(contour.x) == ["3", "5"]  # no grid points at 3.5 or 4.5
    assert all(len(row) == 2 for row in contour.z)


def test_slices_and_parallel_coordinates_keep_categories() -> None:
    table = param_table(kernel_study())
    slices = params.draw_slices(table, "accuracy")
    names = [annotation.text for annotation in slices.layout.annotations]
    kernel_axis = slices.layout[f"xaxis{names.index('kernel_size') + 1}"]
    assert kernel_axis.type == "category"
    assert list(kernel_axis.categoryarray) == ["3", "5"]

    dimensions = {dim.label: dim for dim in params.parallel_data(table).params}
    kernel = dimensions["kernel_size"]
    assert kernel.ticktext == ("3", "5")
    assert kernel.tickvals == (0.0, 1.0)
    assert set(kernel.values) <= {0.0, 1.0}
    assert dimensions["batch_size"].ticktext == ("16", "32", "64")


def test_a_parameter_made_categorical_on_resume_is_categorical_throughout() -> None:
    study = optuna.create_study()
    as_int = optuna.distributions.IntDistribution(3, 7)
    as_choice = optuna.distributions.CategoricalDistribution([3, 5])
    for value, distribution in ((7, as_int), (4, as_int), (3, as_choice), (5, as_choice)):
        study.add_trial(
            optuna.trial.create_trial(
                value=float(value),
                params={"kernel_size": value},
                distributions={"kernel_size": distribution},
            )
        )
    axis = param_table(study).axis("kernel_size")
    assert axis.kind == CATEGORICAL
    assert axis.categories == ("3", "5", "7", "4")  # the choices first, then other values


# ---------------------------------------------------------------- history, slices, parallel


def test_history_shows_pruned_trials_marked(study: optuna.Study) -> None:
    data = history.history_data(study)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert len(pruned) > 0
    assert [number for number, _, _ in data.pruned] == [trial.number for trial in pruned]
    for (_, epoch, value), trial in zip(data.pruned, pruned, strict=True):
        assert (epoch, value) == max(trial.intermediate_values.items())
    figure = history.draw_history(data, "val accuracy")
    traces = {trace.name: trace for trace in figure.data}
    assert traces["pruned (last reported value)"].marker.symbol == "x"
    assert len(traces["complete"].x) == len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert traces["best so far"].y[-1] == study.best_value
    assert data.notes == ("1 failed trial reported no value.",)


def twelve_parameter_study() -> optuna.Study:
    def objective(trial: optuna.Trial) -> float:
        values = [trial.suggest_float(f"p{index:02d}", 0, 1) for index in range(10)]
        trial.suggest_categorical("kernel_size", [3, 5])
        trial.suggest_float("learning_rate", 1e-5, 1e-1, log=True)
        return sum(values)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(1))
    study.optimize(objective, n_trials=15)
    return study


def test_slices_show_every_parameter_without_scrolling() -> None:
    table = param_table(twelve_parameter_study())
    figure = params.draw_slices(table, "loss")
    assert len(table.axes) == 12
    assert figure.layout.width is None  # fits the page; Optuna's is 300 px per parameter
    titles = [annotation.text for annotation in figure.layout.annotations]
    assert sorted(titles) == sorted(axis.name for axis in table.axes)
    domains = [figure.layout[f"xaxis{i if i > 1 else ''}"].domain for i in range(1, 13)]
    assert all(high - low > 0.18 for low, high in domains)  # four per row at most
    assert len({tuple(domain) for domain in domains}) == params.SLICE_COLUMNS


def test_parallel_coordinate_ticks_are_few_short_and_apart() -> None:
    data = params.parallel_data(param_table(twelve_parameter_study()))
    for dim in (data.objective, *data.params):
        span = dim.range[1] - dim.range[0]
        gaps = [b - a for a, b in zip(dim.tickvals, dim.tickvals[1:], strict=False)]
        assert len(dim.tickvals) <= 8, dim
        assert all(gap >= 0.1 * span for gap in gaps), dim
        assert all(len(text) <= 6 for text in dim.ticktext), dim
        assert dim.range[0] <= min(dim.values) and max(dim.values) <= dim.range[1]
    learning_rate = next(dim for dim in data.params if dim.label == "learning_rate")
    assert set(learning_rate.ticktext) <= {"1e-5", "1e-4", "0.001", "0.01", "0.1"}
    figure = params.draw_parallel(data, "loss")
    assert figure.data[0].labelangle != 0  # 13 axes: tilted names do not run together


def test_parameters_some_trials_lack_get_their_own_tick(study: optuna.Study) -> None:
    dimensions = {dim.label: dim for dim in params.parallel_data(param_table(study)).params}
    filters_3 = dimensions["filters_3"]  # only trials with three blocks sampled it
    assert filters_3.ticktext[0] == params.MISSING_LABEL
    assert filters_3.values.count(filters_3.tickvals[0]) == sum(
        1
        for trial in study.get_trials(states=(TrialState.COMPLETE,))
        if "filters_3" not in trial.params
    )


# ---------------------------------------------------------------- importances and the contour


def test_importances_come_with_their_spread_and_agree_on_a_clear_winner() -> None:
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        y = trial.suggest_float("y", 0, 1)
        kernel = trial.suggest_categorical("kernel_size", [3, 5])
        return 10 * x + 0.1 * y + 0.01 * (kernel == 5)

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(2))
    study.optimize(objective, n_trials=30)
    data = importance.importance_data(study)
    assert not data.too_few
    assert [result.evaluator for result in data.results] == list(importance.IMPORTANCE_EVALUATORS)
    for result in data.results:
        assert result.top == "x"
        assert result.resamples == importance.RESAMPLES
        assert result.top_kept >= importance.RESAMPLES - 1
        for item in result.importances:
            assert 0 <= item.low <= item.value <= item.high <= 1
    assert data.ranking[0] == "x"
    assert not any("disagree" in note for note in data.notes)
    figures = importance.draw_importances(data, "loss")
    assert [figure.layout.title.text for figure in figures] == ["fANOVA", "PED-ANOVA"]
    assert all(figure.data[0].error_x.array is not None for figure in figures)
    assert list(figures[0].data[0].y) == list(figures[1].data[0].y)  # the same order in both


def test_few_trials_are_called_too_few_to_rank() -> None:
    study = kernel_study(n_trials=4)  # four parameters
    data = importance.importance_data(study)
    assert data.too_few
    assert any("too few to rank" in note for note in data.notes)
    assert "too few to rank" in build_report(study)


def test_contour_pair_follows_both_evaluators_not_fanova_alone() -> None:
    fanova = importance.EvaluatorResult(
        "fANOVA",
        tuple(importance.Importance(p, v, v, v) for p, v in (("a", 0.5), ("b", 0.3), ("c", 0.2))),
    )
    ped_anova = importance.EvaluatorResult(
        "PED-ANOVA",
        tuple(importance.Importance(p, v, v, v) for p, v in (("c", 0.9), ("a", 0.06), ("b", 0.04))),
    )
    ranking = importance.combined_ranking((fanova, ped_anova))
    assert ranking == ("c", "a", "b")
    data = importance.ImportanceData(12, 3, (fanova, ped_anova), ranking)
    assert importance.contour_pair(data, ["a", "b", "c"]) == (["c", "a"], "")
    assert importance.contour_pair(data, ["a", "b"]) == (["a", "b"], "")  # candidates only
    notes = data.notes
    assert any("disagree" in note and "fANOVA ranks a first" in note for note in notes)


# ---------------------------------------------------------------- training vs validation


def test_training_worse_than_validation_is_explained() -> None:
    study = optuna.create_study(direction="maximize")
    config = {"dropout": 0.3, "label_smoothing": 0.1, "augment": {"horizontal_flip": True}}
    # Training loss 0.53 above validation loss 0.12, as in issue 14.
    rows = [
        {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy}
        | {"val_loss": val_loss, "val_accuracy": val_accuracy}
        for epoch, train_loss, train_accuracy, val_loss, val_accuracy in (
            (1, 0.9, 0.7, 0.4, 0.9),
            (2, 0.53, 0.8, 0.12, 0.97),
        )
    ]
    study.add_trial(
        optuna.trial.create_trial(
            value=0.97,
            params={"dropout": 0.3},
            distributions={"dropout": optuna.distributions.FloatDistribution(0, 0.5)},
            user_attrs={attrs.HISTORY: rows, attrs.BEST_EPOCH: 2, attrs.CONFIG: config},
        )
    )
    data = history.best_curves_data(study)
    assert data.training_looks_worse
    assert data.regularisers == (
        "dropout 0.3",
        "label smoothing 0.1",
        "augmentation: horizontal flip",
    )
    (note,) = data.notes
    assert "expected here, not a bug" in note and "dropout 0.3" in note
    page = build_report(study)
    assert "training mode" in page and "expected here, not a bug" in page
    names = {trace.name for trace in history.draw_best_curves(data).data}
    assert "training (train mode)" in names


def test_training_better_than_validation_needs_no_note(study: optuna.Study) -> None:
    assert history.best_curves_data(study).notes == ()


# ---------------------------------------------------------------- the metric's name


def test_studies_tuner_opens_name_their_metric(tmp_path: Path) -> None:
    spec = spec_from(tmp_path, tiny_study_toml())
    open_study(spec, sqlite_url(tmp_path))
    stored = optuna.load_study(study_name=spec.name, storage=sqlite_url(tmp_path))
    assert stored.metric_names == [spec.metric]  # what optuna-dashboard shows, not "Objective 0"


def test_report_falls_back_to_optunas_metric_name() -> None:
    study = optuna.create_study()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)  # set_metric_names, since 3.2
        study.set_metric_names(["val_loss"])
    assert summarize(study).metric == "val_loss"
