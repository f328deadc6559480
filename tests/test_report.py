"""tuner.report: the HTML page, its sections and how it copes with small or odd studies."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from plotly.offline import get_plotlyjs
from study_fixtures import make_study, sqlite_url

from tuner import attrs
from tuner.errors import TunerError
from tuner.report import build_report, history, importance, params, timeline, write_report
from tuner.report.data import best_table, format_count, format_metric, format_seconds, summarize
from tuner.report.style import STATE_STYLES

PLOT_DIV = 'class="plotly-graph-div"'
FULL_REPORT_PLOTS = 9  # history, 2 importances, parallel, slice, contour, curves, best, timeline
HOSTILE = '<img src=x onerror="alert(1)">'


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    """40 fake trials (some pruned, one failed without attributes) plus one still running."""
    study = make_study(40)
    study.ask()
    return study


@pytest.fixture(scope="module")
def page(study: optuna.Study) -> str:
    return build_report(study)


def table_rows(page: str) -> list[str]:
    return re.findall(r'<tr data-trial="(\d+)"', page)


def count_states(study: optuna.Study, state: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def test_header_names_the_study_counts_and_best_value(study: optuna.Study, page: str) -> None:
    assert "<h1>digits-cnn</h1>" in page
    assert ">digits<" in page  # the dataset card
    for state, label in (
        (TrialState.COMPLETE, "complete"),
        (TrialState.PRUNED, "pruned"),
        (TrialState.FAIL, "failed"),
        (TrialState.RUNNING, "running"),
    ):
        assert f"{count_states(study, state)} {label}<" in page
    assert count_states(study, TrialState.PRUNED) > 0
    assert count_states(study, TrialState.FAIL) == 1
    assert f">{study.best_value:.4f}<" in page
    assert f"trial #{study.best_trial.number}" in page


def test_best_configurations_lists_the_top_ten_best_first(study: optuna.Study, page: str) -> None:
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    expected = sorted(complete, key=lambda trial: -trial.value)[:10]
    assert table_rows(page) == [str(trial.number) for trial in expected]
    assert f'<tr data-trial="{study.best_trial.number}" class="best">' in page
    for header in ("learning_rate", "batch_size", "dropout", "filters", "epochs", "parameters"):
        assert f"<th>{header}</th>" in page
    assert "<th>filters_1</th>" not in page  # folded into the filters list


def test_every_plot_is_there_and_plotlyjs_is_embedded_once(page: str) -> None:
    assert page.count(PLOT_DIV) == FULL_REPORT_PLOTS
    assert page.count(get_plotlyjs()[:500]) == 1
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"<link[^>]*\bhref=\"?https?:", page)
    for title in ("fANOVA", "PED-ANOVA", "Learning curves", "Trials per worker"):
        assert title in page
    assert "Not shown" not in page


def test_learning_curves_mark_pruned_trials(study: optuna.Study) -> None:
    figure = history.draw_learning_curves(history.curves_data(study), "val accuracy")
    traces = {trace.name: trace for trace in figure.data}
    assert traces["pruned"].line.dash == "dash"
    assert traces["pruned"].line.color == STATE_STYLES[TrialState.PRUNED].color
    assert traces["complete"].line.dash == "solid"
    assert len(traces["pruned here"].x) == count_states(study, TrialState.PRUNED)
    assert f"best (trial {study.best_trial.number})" in traces


def test_contour_shows_the_two_most_important_parameters(study: optuna.Study) -> None:
    # Most important by both evaluators together (issue 14: not by fANOVA alone).
    ranked = importance.importance_data(study)
    candidates = params.contour_candidates(study)
    (x_name, y_name), note = importance.contour_pair(ranked, candidates)
    figure = params.draw_contour(params.contour_data(study, x_name, y_name), "val accuracy")
    mean = {
        name: sum(r_values) / len(r_values)
        for name in candidates
        if (r_values := [i.value for r in ranked.results for i in r.importances if i.param == name])
    }
    top_two = set(sorted(mean, key=lambda name: -mean[name])[:2])
    assert {figure.layout.xaxis.title.text, figure.layout.yaxis.title.text} == top_two
    assert note == ""


def test_timeline_has_one_row_per_worker(study: optuna.Study) -> None:
    figure = timeline.draw_timeline(timeline.timeline_data(study))
    rows = {worker for trace in figure.data for worker in trace.y}
    workers = {trial.user_attrs.get(attrs.WORKER) for trial in study.trials}
    assert rows == {worker or "(unknown worker)" for worker in workers}


def test_empty_study_gets_an_explanatory_page() -> None:
    study = optuna.create_study(study_name="nothing-yet")
    page = build_report(study)
    assert "<h1>nothing-yet</h1>" in page
    assert "No trial has finished yet." in page
    assert "0 complete<" in page
    assert PLOT_DIV not in page


def test_running_trials_are_counted_before_any_finishes() -> None:
    study = optuna.create_study(study_name="warming-up")
    study.ask()
    assert "No trial has finished yet (1 running)." in build_report(study)


def test_one_trial_study_gets_an_explanatory_page() -> None:
    page = build_report(make_study(1))
    assert "Only one trial has finished" in page
    assert table_rows(page) == ["0"]
    assert page.count(PLOT_DIV) == 1  # the trial's own training curves


def test_param_values_and_names_are_escaped(tmp_path: Path) -> None:
    study = make_study(6, name="cnn <b>&</b>", optimizers=(HOSTILE,))
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in page  # the table cell
    assert HOSTILE not in page  # nor raw in the plots' JSON
    assert "<h1>cnn &lt;b&gt;&amp;&lt;/b&gt;</h1>" in page
    assert "<b>&</b>" not in page


def test_single_parameter_study_skips_the_contour_with_a_reason() -> None:
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda trial: -((trial.suggest_float("dropout", 0, 0.5) - 0.2) ** 2), 8)
    page = build_report(study)
    assert "Not shown: needs two parameters" in page
    # No intermediate values and no user attributes either: said, not crashed.
    assert "Not shown: no trial reported intermediate values" in page
    assert "has no per-epoch history attribute" in page
    assert page.count(PLOT_DIV) == FULL_REPORT_PLOTS - 3


def test_all_categorical_study_builds() -> None:
    def objective(trial: optuna.Trial) -> float:
        optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
        batch_norm = trial.suggest_categorical("batch_norm", [True, False])
        kernel = trial.suggest_categorical("kernel_size", [3, 5, 7])
        return (optimizer == "adamw") + 0.5 * batch_norm + 0.1 * kernel

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=12)
    page = build_report(study)
    assert 'id="contour"' in page
    assert page.count(PLOT_DIV) >= FULL_REPORT_PLOTS - 2


def test_constant_objective_explains_why_fanova_is_missing() -> None:
    study = optuna.create_study()
    study.optimize(
        lambda trial: trial.suggest_float("x", 0, 1) * 0 + trial.suggest_int("y", 1, 3) * 0, 6
    )
    page = build_report(study)
    assert "fANOVA could not rank the parameters" in page
    assert "PED-ANOVA" in page


def test_study_without_complete_trials_says_so() -> None:
    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
        if trial.number % 2:
            raise optuna.TrialPruned()
        raise RuntimeError("loss is nan")

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=4, catch=(RuntimeError,))
    page = build_report(study)
    assert "No trial has completed" in page
    assert "Not shown: needs at least 1 complete trial; this study has 0." in page
    assert table_rows(page) == []


def test_minimized_metric_sorts_ascending_and_shows_val_accuracy() -> None:
    study = optuna.create_study(direction="minimize")
    study.set_user_attr(attrs.STUDY_METRIC, "val_loss")
    distributions = {"dropout": optuna.distributions.FloatDistribution(0, 0.5)}
    for number, loss in enumerate((0.5, 0.2, 0.9)):
        history = [{"epoch": 1, "val_loss": loss, "val_accuracy": 1 - loss}]
        study.add_trial(
            optuna.trial.create_trial(
                value=loss,
                params={"dropout": number / 10},
                distributions=distributions,
                user_attrs={attrs.HISTORY: history, attrs.BEST_EPOCH: 1},
            )
        )
    table = best_table(study, "val_loss")
    assert table.keys == (1, 0, 2)
    assert table.headers[:3] == ("trial", "val loss", "val accuracy")
    assert table.rows[0][:3] == ("#1", "0.2000", "0.8000")
    assert summarize(study).best_value == 0.2


def one_value_trials(value: float, runs: list[tuple[str, int, int]]) -> optuna.Study:
    """A study with one trial per (worker, start minute, end minute), each scoring `value`."""
    study = optuna.create_study(direction="maximize")
    study.set_user_attr(attrs.STUDY_METRIC, "val_accuracy")
    distributions = {"dropout": optuna.distributions.FloatDistribution(0, 0.5)}
    start = datetime.datetime(2026, 1, 1)
    for number, (worker, begin, end) in enumerate(runs):
        trial = optuna.trial.create_trial(
            value=value,
            params={"dropout": number / 100},
            distributions=distributions,
            user_attrs={attrs.WORKER: worker},
        )
        trial.datetime_start = start + datetime.timedelta(minutes=begin)
        trial.datetime_complete = start + datetime.timedelta(minutes=end)
        study.add_trial(trial)
    return study


def test_header_and_table_show_the_metric_with_its_four_decimals() -> None:
    page = build_report(one_value_trials(1.0, [("a:1", 0, 1), ("a:1", 1, 2)]))
    assert ">1.0000<" in page  # the best-value card, as the run's lines write it
    assert '<td class="pin pin-1">1.0000</td>' in page
    assert format_metric(1234567.0) == "1,234,567"  # a params or flops objective


def test_best_table_keeps_trial_and_value_in_view_when_it_scrolls() -> None:
    page = build_report(one_value_trials(0.5, [("a:1", 0, 1), ("a:1", 1, 2)]))
    assert '<th class="pin pin-0">trial</th>' in page
    assert '<td class="pin pin-0">#0</td>' in page
    assert re.search(r"\.pin \{[^}]*position: sticky", page)


def test_runs_one_after_another_are_not_counted_as_parallel_workers() -> None:
    after = summarize(one_value_trials(0.5, [("a:1", 0, 1), ("a:2", 2, 3), ("b:3", 4, 5)]))
    assert (after.workers, after.processes) == (1, 3)
    page = build_report(one_value_trials(0.5, [("a:1", 0, 1), ("a:2", 2, 3), ("b:3", 4, 5)]))
    assert "3 worker processes, at most 1 at once" in page
    side_by_side = [("a:1", 0, 2), ("a:2", 1, 3), ("b:3", 1, 2), ("b:3", 2, 4)]
    assert summarize(one_value_trials(0.5, side_by_side)).workers == 3


def test_best_table_shows_each_trials_precision_when_trials_recorded_it() -> None:
    study = optuna.create_study(direction="maximize")
    distributions = {"dropout": optuna.distributions.FloatDistribution(0, 0.5)}
    for number, (accuracy, precision) in enumerate(((0.9, "bf16"), (0.8, "fp32"))):
        study.add_trial(
            optuna.trial.create_trial(
                value=accuracy,
                params={"dropout": number / 10},
                distributions=distributions,
                user_attrs={attrs.PRECISION: precision},
            )
        )
    table = best_table(study, "val_accuracy")
    column = table.headers.index("precision")
    assert [row[column] for row in table.rows] == ["bf16", "fp32"]

    older = optuna.create_study(direction="maximize")  # trials from before tuner recorded it
    older.add_trial(
        optuna.trial.create_trial(value=0.5, params={"dropout": 0.1}, distributions=distributions)
    )
    assert "precision" not in best_table(older, "val_accuracy").headers


def test_write_report_is_atomic_and_creates_folders(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="quick")  # no plots: fast to build
    out = tmp_path / "reports" / "study.html"
    assert write_report(study, out) == out
    out.write_text("stale", encoding="utf-8")
    write_report(study, out)
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [path.name for path in out.parent.iterdir()] == ["study.html"]  # no temp file left


def test_write_report_to_a_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(TunerError, match="cannot write the report"):
        write_report(optuna.create_study(), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_report_of_a_sqlite_study(tmp_path: Path) -> None:
    make_study(5, name="on-disk", storage=sqlite_url(tmp_path))
    study = optuna.load_study(study_name="on-disk", storage=sqlite_url(tmp_path))
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<h1>on-disk</h1>" in page
    assert len(table_rows(page)) == count_states(study, TrialState.COMPLETE)


def test_multi_objective_studies_get_a_report_naming_their_objectives() -> None:
    # (Issue 11 replaced the refusal: the Pareto section itself is tested in test_pareto.py.)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["val_accuracy", "params"])
    page = build_report(study)
    assert "val_accuracy (maximize), params (minimize)" in page


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, "—"), (42.25, "42.2s"), (725, "12m 05s"), (11000, "3h 03m")]
)
def test_format_seconds(seconds: float | None, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"), [(950, "950"), (45_300, "45.3k"), (1_234_567, "1.23M"), ("x", "—")]
)
def test_format_count(count: object, text: str) -> None:
    assert format_count(count) == text
