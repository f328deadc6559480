"""`tuner run / studies / status` through Typer's CliRunner, on a tiny study and SQLite in tmp.

User errors must come out as ONE line `error: ...` with exit code 2, no traceback, and a run
that fails before training must leave storage untouched.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from studies import SMALL_SPACE, tiny_data, tiny_study_toml
from tuner.cli import app
from tuner.data import load as data_load
from tuner.engine.train import evaluate
from tuner.spec import load_spec
from tuner.trained import load_model

TINY = tiny_study_toml(
    description="one-epoch digits study for the CLI tests",
    train_subset=200,
    training="max_epochs = 1\ntrials = 2",
    space=SMALL_SPACE.replace("high = 3e-2", "high = 1e-2"),
)


@dataclass(frozen=True)
class Workspace:
    studies: Path  # --studies-dir, holding tiny.toml
    storage: str  # --storage of a study that `tuner run` completed (2 trials)
    run_output: str


@pytest.fixture(scope="module")
def cli_state() -> Iterator[None]:
    """Undo what the CLI sets process-wide (logging handlers, Optuna verbosity, threads)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    verbosity = optuna.logging.get_verbosity()
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # tiny models train fastest on one thread
        torch.set_num_threads(1)
        yield
    root.handlers[:], root.level = handlers, level
    optuna.logging.set_verbosity(verbosity)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cli_state) -> Workspace:
    folder = tmp_path_factory.mktemp("cli")
    studies = folder / "studies"
    studies.mkdir()
    (studies / "tiny.toml").write_text(TINY)
    storage = f"sqlite:///{folder / 'tuner.db'}"
    result = invoke("run", "--study", "tiny", "--studies-dir", studies, "--storage", storage)
    assert result.exit_code == 0, result.output
    return Workspace(studies, storage, result.stdout)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch, cli_state) -> Path:
    """A working directory with no study files, storage or dataset files; no downloads."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    monkeypatch.setattr(data_load, "_download", lambda *args: None)
    return tmp_path


def invoke(*args: object):
    return CliRunner().invoke(app, [str(arg) for arg in args], prog_name="tuner")


def assert_user_error(result, *fragments: str) -> str:
    """Exit code 2 and exactly one line on stderr, `error: ...`; nothing else, no traceback."""
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def stored_studies(db: Path) -> list[str]:
    if not db.exists():
        return []
    with closing(sqlite3.connect(db)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "studies" not in tables:
            return []
        return [row[0] for row in connection.execute("SELECT study_name FROM studies")]


def started(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that began (a new study also holds the portfolio's, queued: WAITING)."""
    return [trial for trial in study.trials if trial.state != optuna.trial.TrialState.WAITING]


# ---------------------------------------------------------------- the verbs


def test_run_completes_and_prints_the_best_configuration(workspace: Workspace) -> None:
    assert "study tiny: digits (1, 8, 8) on cpu, 2 trials in total" in workspace.run_output
    assert "best trial" in workspace.run_output and "val_accuracy" in workspace.run_output
    assert "learning_rate" in workspace.run_output  # the one sampled parameter
    study = optuna.load_study(study_name="tiny", storage=workspace.storage)
    # The shipped portfolio's configurations run first; the one left waits for the next run.
    assert [t.state.name for t in started(study)] == ["COMPLETE", "COMPLETE"]
    assert [t.user_attrs["source"] for t in study.trials[:2]] == ["portfolio:1", "portfolio:2"]


def test_run_again_resumes_without_new_trials(workspace: Workspace) -> None:
    args = ["--study", "tiny", "--studies-dir", workspace.studies, "--storage", workspace.storage]
    result = invoke("run", *args)
    assert result.exit_code == 0, result.output
    assert "already has 2 finished trials" in result.stdout
    assert len(started(optuna.load_study(study_name="tiny", storage=workspace.storage))) == 2


def test_run_ends_with_a_summary(workspace: Workspace) -> None:
    lines = workspace.run_output.splitlines()
    summary = lines[lines.index("done: study tiny reached 2 finished trials") :]
    assert summary[1].startswith("this run: 2 trials in ")
    assert summary[1].endswith(" (2 complete, 0 pruned, 0 failed)")
    assert summary[2].startswith("study tiny: 2/2 finished trials, best val_accuracy ")
    assert summary[3] == f"report: tuner report --study tiny --storage {workspace.storage}"
    assert len(summary) == 4  # nothing left: no "run the same command"


def test_output_to_a_file_is_not_wrapped(workspace: Workspace) -> None:
    # The tmp path makes the line far longer than the 80 columns rich assumes off a terminal.
    header = next(line for line in workspace.run_output.splitlines() if line.startswith("study"))
    assert header.endswith(f"2 trials in total, storage {workspace.storage}")


def test_a_run_that_lost_its_storage_sums_up_what_it_saw(isolated: Path, monkeypatch) -> None:
    """The database file gone after 3 complete trials: the summary still counts them and
    names the best one, from what this process saw last."""
    from tuner.runner import worker

    real_run_trials = worker.run_trials

    def lose_storage_after_three(study, objective, total, **options):
        real_run_trials(study, objective, 3, **options)
        study._storage.rdb.engine.dispose()  # close the connections to the file, then move it
        database = Path(study._storage.rdb.engine.url.database)
        database.rename(database.with_name("moved.db"))
        for extra in ("-wal", "-shm"):
            Path(f"{database}{extra}").unlink(missing_ok=True)
        database.mkdir()  # where the file was: SQLite cannot open it, as on a lost mount
        return real_run_trials(study, objective, total, **options)

    monkeypatch.setattr(worker, "run_trials", lose_storage_after_three)
    (isolated / "tiny.toml").write_text(TINY)
    result = invoke(
        "run", "--study", "tiny.toml", "--trials", "6", "--storage-retry-seconds", "0.3"
    )
    assert result.exit_code == 2, result.output
    assert "no trial has completed yet" not in result.stdout
    assert "this run: 3 trials" in result.stdout and "(3 complete, 0 pruned" in result.stdout
    assert re.search(r"study tiny: 3/6 finished trials, best val_accuracy 0\.\d{4} \(trial \d\)",
                     result.stdout), result.stdout  # fmt: skip


def test_a_run_stopped_by_its_timeout_says_so_and_the_same_command_continues(
    isolated: Path,
) -> None:
    (isolated / "tiny.toml").write_text(TINY)
    db = isolated / "tuner.db"
    # Optuna checks the timeout before each trial: the first one always runs.
    args = ["run", "--study", isolated / "tiny.toml", "--trials", "5", "--timeout", "0.01"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert "stopped: the --timeout of 0.01s ran out, so no new trial was started" in first.stdout
    assert "this run: 1 trial in " in first.stdout and " (1 complete, 0 pruned, 0 failed)" in (
        first.stdout
    )
    assert "study tiny: 1/5 finished trials, best val_accuracy " in first.stdout
    assert "left: 4 trials; run the same command to continue" in first.stdout
    assert "report: tuner report --study tiny\n" in first.stdout
    assert "1 trials" not in first.output

    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert "study tiny: 2/5 finished trials" in again.stdout
    assert "left: 3 trials; run the same command to continue" in again.stdout
    assert len(started(optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}"))) == 2


PROGRESS_STUDY = TINY.replace("max_epochs = 1", "max_epochs = 2")


def test_progress_off_a_terminal_is_one_log_line_per_epoch(isolated: Path) -> None:
    (isolated / "tiny.toml").write_text(PROGRESS_STUDY)
    result = invoke("run", "--study", isolated / "tiny.toml", "--trials", "1")
    assert result.exit_code == 0, result.output
    epochs = [line for line in result.stderr.splitlines() if " epoch " in line]
    assert len(epochs) == 2, result.stderr
    first, second = epochs
    assert "trial 0 epoch 1/2: val_accuracy " in first
    assert "trial 0 epoch 2/2: val_accuracy " in second
    for fact in ("epoch ~", "trial ~", "elapsed ", "finished 0/1", "best -"):
        assert fact in first, fact
    assert "study ~" not in first  # no guess at the study's time before any trial finished
    assert "\x1b[" not in result.output  # no terminal codes in a log


def test_progress_on_a_terminal_is_a_live_view(isolated: Path) -> None:
    (isolated / "tiny.toml").write_text(PROGRESS_STUDY)
    result = CliRunner().invoke(
        app,
        ["run", "--study", str(isolated / "tiny.toml"), "--trials", "1"],
        env={"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"},  # rich: this is a terminal
    )
    assert result.exit_code == 0, result.output
    # Every epoch is drawn at its first batch: the second one knows how long an epoch takes.
    assert re.search(r"trial 0  epoch 2/2  batch 1/\d+  epoch ~\S+  trial ~\S+ left", result.stdout)
    assert re.search(r"tiny\S*  elapsed \S+  finished 0/1  best -", result.stdout)
    assert "finished 1/1" in result.stdout  # the last view, once the trial ended
    assert "this run: 1 trial in " in result.stdout
    assert " epoch 1/2: val_accuracy" not in result.stderr  # no log lines under a live view


def test_the_summary_of_several_workers_names_the_most_serious_stop() -> None:
    from tuner.runner.summary import (
        RunSummary,
        StopReason,
        TrialCounts,
        most_serious,
        summary_lines,
    )

    reasons = [StopReason.TRIALS, StopReason.INTERRUPTED, StopReason.TIMEOUT]
    assert most_serious(reasons) == StopReason.INTERRUPTED
    assert most_serious([*reasons, StopReason.ERROR]) == StopReason.ERROR
    summary = RunSummary(
        study="s",
        reason=StopReason.INTERRUPTED,
        ran=TrialCounts(complete=1) + TrialCounts(failed=2),
        finished=1,
        target=5,
        seconds=75,
        report_command="tuner report --study s",
        retried=(3, 4),
    )
    assert summary_lines(summary) == [
        "interrupted: the running trials 3, 4 were marked failed and run again first; "
        "run the same command to resume study s",
        "this run: 3 trials in 1m 15s (1 complete, 0 pruned, 2 failed)",
        "study s: 1/5 finished trials, no complete trial yet",
        "left: 4 trials; run the same command to continue",
        "report: tuner report --study s",
    ]
    assert summary.exit_code == 130


def test_report_says_where_it_wrote_once(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    args = ["--studies-dir", workspace.studies, "--storage", workspace.storage, "--out", out]
    result = invoke("report", "--study", "tiny", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"report written to {out}\n"
    assert result.stderr == ""  # no log line saying the same


def table_rows(output: str) -> list[list[str]]:
    """The cells of every row of the rich tables in `output`."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.strip().startswith("│")
    ]


def test_studies_lists_study_files_and_stored_studies(workspace: Workspace) -> None:
    result = invoke("studies", "--studies-dir", workspace.studies, "--storage", workspace.storage)
    assert result.exit_code == 0, result.output
    assert str(workspace.studies) in result.stdout and workspace.storage in result.stdout
    file_row, stored_row = (row for row in table_rows(result.stdout) if row[0] == "tiny")
    assert file_row[1:4] == ["digits", "random", "none"]
    assert stored_row[1:5] == ["2", "0", "0", "0"]  # complete, pruned, failed, running
    assert float(stored_row[5]) > 0  # best value


def test_status_shows_trials_by_state_and_best_params(workspace: Workspace) -> None:
    args = ["--studies-dir", workspace.studies, "--storage", workspace.storage]
    result = invoke("status", "--study", "tiny", *args)
    assert result.exit_code == 0, result.output
    assert "study tiny (digits): 2 complete" in result.stdout
    assert "best trial" in result.stdout and "learning_rate" in result.stdout
    # A stored study is found by name even without its study file.
    elsewhere = ["--studies-dir", "/nonexistent", "--storage", workspace.storage]
    assert "2 complete" in invoke("status", "--study", "tiny", *elsewhere).stdout


def test_status_of_a_study_not_in_storage(workspace: Workspace) -> None:
    result = invoke("status", "--study", "other", "--storage", workspace.storage)
    assert_user_error(result, "no study 'other'", "studies there: tiny")


# ---------------------------------------------------------------- user errors


MALFORMED = {
    "syntax error": TINY.replace("max_epochs = 1", "max_epochs = = 1"),
    "unknown key": TINY.replace("max_epochs = 1", "max_epoch = 1"),
    "wrong type": TINY.replace("filters = 4", 'filters = "4"'),
    "bad sampler option": TINY.replace(
        'name = "random"', 'name = "tpe"\noptions = { n_startup = 1 }'
    ),
    "everything fixed": TINY.replace("{ type", "0.01 # {"),
}


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED)
def test_malformed_study_is_one_line_exit_2_and_nothing_stored(isolated: Path, text: str) -> None:
    path = isolated / "bad.toml"
    path.write_text(text)
    db = isolated / "tuner.db"
    result = invoke("run", "--study", path, "--storage", f"sqlite:///{db}")
    assert_user_error(result, str(path))
    assert stored_studies(db) == []


def test_unknown_study_name_lists_the_available_ones(isolated: Path) -> None:
    studies = isolated / "studies"
    studies.mkdir()
    for name in ("alpha", "beta"):
        (studies / f"{name}.toml").write_text(TINY.replace('"tiny"', f'"{name}"'))
    result = invoke("run", "--study", "nope", "--studies-dir", studies)
    assert_user_error(result, "'nope'", "alpha, beta")
    result = invoke("run", "--study", "nope")  # ./studies is the default folder
    assert_user_error(result, "alpha, beta")
    assert not (isolated / "tuner.db").exists()


def test_run_by_the_name_of_a_stored_study_resumes_with_its_recorded_file(isolated: Path) -> None:
    (isolated / "work").mkdir()
    path = isolated / "work" / "my.toml"
    path.write_text(TINY.replace('name = "tiny"', 'name = "my-shapes"'))
    storage = f"sqlite:///{isolated / 'tuner.db'}"
    first = invoke("run", "--study", path, "--storage", storage, "--trials", "1")
    assert first.exit_code == 0, first.output
    again = invoke("run", "--study", "my-shapes", "--storage", storage, "--trials", "2")
    assert again.exit_code == 0, again.output
    assert f"resuming with its study file {path}" in again.stdout
    assert len(started(optuna.load_study(study_name="my-shapes", storage=storage))) == 2

    path.rename(isolated / "moved.toml")  # the recorded file is gone: say what to pass
    gone = invoke("run", "--study", "my-shapes", "--storage", storage)
    assert_user_error(gone, "'my-shapes' is in", str(path), "no longer there", "--study PATH.toml")
    path.write_text(TINY.replace('name = "tiny"', 'name = "other"'))  # the file was reused
    renamed = invoke("run", "--study", "my-shapes", "--storage", storage)
    assert_user_error(renamed, "now names study 'other'", "--study PATH.toml")


@pytest.mark.parametrize("name", ["a" * 300, "é" * 128], ids=["300 a", "128 é"])
@pytest.mark.parametrize("verb", ["run", "status", "report", "best", "retrain", "confirm"])
def test_a_study_name_too_long_for_a_file_name_is_one_line(
    isolated: Path, verb: str, name: str
) -> None:
    """300 bytes are more than a file name may have; 128 'é' were accepted, then broke report."""
    size = len(name.encode())
    assert_user_error(invoke(verb, "--study", name), f"has {size} bytes", "128")


def test_missing_dataset_says_how_to_provide_it_and_stores_nothing(isolated: Path) -> None:
    path = isolated / "mnist.toml"
    path.write_text(TINY.replace('name = "digits"', 'name = "mnist"'))
    empty = isolated / "empty"
    empty.mkdir()
    db = isolated / "tuner.db"
    result = invoke("run", "--study", path, "--data-dir", empty, "--storage", f"sqlite:///{db}")
    assert_user_error(result, f"dataset 'mnist' not found in {empty}", "--data-dir")
    assert stored_studies(db) == []


@pytest.mark.parametrize(
    ("storage", "fragments"),
    [
        ("sqlite:////nonexistent-dir/tuner.db", ["/nonexistent-dir", "does not exist"]),
        ("tuner.db", ["not a storage URL", "sqlite:///"]),
        ("mysql://user:secret@localhost/tuner", ["unsupported", "sqlite:///"]),
    ],
    ids=["missing directory", "not a URL", "unsupported scheme"],
)
def test_unusable_storage_is_one_line(isolated: Path, storage: str, fragments: list[str]) -> None:
    (isolated / "tiny.toml").write_text(TINY)
    result = invoke("run", "--study", isolated / "tiny.toml", "--storage", storage)
    line = assert_user_error(result, *fragments)
    assert "secret" not in line


# ---------------------------------------------------------------- command-line usage errors

BAD_COMMAND_LINES = {
    "count of zero": (["run", "--trials", "0"], ["'--trials'", "greater than or equal to 1"]),
    "not a number": (["run", "--trials", "abc"], ["'--trials'", "valid integer"]),
    "unknown choice": (
        ["run", "--precision", "fp64"],
        ["'--precision'", "'fp64'", "'auto', 'fp32', 'bf16'"],
    ),
    "no timeout": (["run", "--timeout", "0"], ["'--timeout'", "0 is not a positive number"]),
    "no workers": (["run", "--workers", "0"], ["'--workers'", "greater than or equal to 1"]),
    "no jobs": (["run", "--jobs-per-device", "0"], ["'--jobs-per-device'", "than or equal to 1"]),
    "no epochs": (["retrain", "--epochs", "0"], ["'--epochs'", "greater than or equal to 1"]),
    "no classes": (
        ["predict", "-m", "model", "x.png", "--top-k", "0"],
        ["'--top-k'", "greater than or equal to 1"],
    ),
    "negative index": (["visualize", "-m", "m", "--index", "-1"], ["'--index'", "equal to 0"]),
    "port too high": (
        ["dashboard", "--port", "70000"],
        ["'--port'", "less than or equal to 65535"],
    ),
    "unknown option": (["run", "--bogus"], ["no such option: --bogus"]),
    "misspelt option": (["run", "--trails", "3"], ["--trails", "--trials"]),
    "missing value": (["run", "--study"], ["'--study' requires an argument"]),
    "missing option": (["predict", "x.png"], ["missing option '--model'"]),
    "unknown verb": (["frobnicate"], ["no such command 'frobnicate'"]),
    "misspelt verb": (["stauts"], ["no such command 'stauts'", "Did you mean 'status'"]),
    "unknown global option": (["--bogus"], ["no such option: --bogus"]),
}


@pytest.mark.parametrize(("args", "fragments"), BAD_COMMAND_LINES.values(), ids=BAD_COMMAND_LINES)
def test_bad_command_line_is_one_plain_line_and_a_help_hint(
    isolated: Path, args: list[str], fragments: list[str]
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "╭" not in result.output and "│" not in result.output  # no rich error panel
    assert result.stdout == ""
    error, hint = result.stderr.splitlines()
    assert error.startswith("error: ")
    for fragment in fragments:
        assert fragment in error
    verb = [] if args[0] in ("frobnicate", "stauts", "--bogus") else [args[0]]
    assert hint == f"(run '{' '.join(['tuner', *verb])} --help' for usage)"
    assert not (isolated / "tuner.db").exists()


@pytest.mark.parametrize(
    "option",
    [["--trials", "2000000"], ["--timeout", "1e12"], ["--timeout", "nan"]],
    ids=["2M trials", "1e12 s timeout", "nan timeout"],
)
def test_run_options_beyond_sane_limits_are_one_line(isolated: Path, option: list[str]) -> None:
    """Refused before the study is looked for (the one named here does not exist)."""
    result = invoke("run", "--study", "nope.toml", *option)
    assert result.exit_code == 2, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: ") and f"'{option[0]}'" in first, result.stderr
    assert "1000000" in first or "365 days" in first, result.stderr


def test_precision_choices_are_the_engines() -> None:
    from tuner.cli import Precision
    from tuner.engine import PRECISIONS

    assert tuple(Precision) == PRECISIONS


def test_help_is_still_rich_help(cli_state) -> None:
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    assert "Usage: tuner" in result.stdout and "╭─ Commands" in result.stdout
    result = invoke("run", "--help")
    assert result.exit_code == 0, result.output
    assert "--trials" in result.stdout and "auto|fp32|bf16" in result.stdout
    result = invoke()  # no arguments: the help, not an error
    assert "Usage: tuner" in result.stdout and "╭─ Commands" in result.stdout
    assert "error" not in result.stderr


def test_status_shows_what_checkpoints_take_on_disk(workspace: Workspace) -> None:
    args = ["--studies-dir", workspace.studies, "--storage", workspace.storage]
    result = invoke("status", "--study", "tiny", *args)
    assert result.exit_code == 0, result.output
    folder = workspace.storage.removeprefix("sqlite:///") + ".artifacts"
    line = next(x for x in result.stdout.splitlines() if x.startswith("checkpoints and kept"))
    kept = sum(path.stat().st_size for path in Path(folder).iterdir())
    assert kept > 0  # the two finished trials' best weights
    assert line == f"checkpoints and kept weights: {kept / 1e3:.1f} kB in {folder}"


def test_best_model_saves_the_trials_own_weights_ready_for_predict(
    workspace: Workspace, tmp_path: Path
) -> None:
    """No retraining: the saved weights score the trial's own value on its validation split."""
    args = ["--studies-dir", workspace.studies, "--storage", workspace.storage]
    out = tmp_path / "kept"
    result = invoke("best", "--study", "tiny", *args, "--model", out)
    assert result.exit_code == 0, result.output
    assert "trained on the training split only" in result.stdout
    model, card = load_model(out)
    study = optuna.load_study(study_name="tiny", storage=workspace.storage)
    assert card.trial == study.best_trial.number and card.trained_on == "train"
    assert card.kept_epoch == study.best_trial.user_attrs["best_epoch"]
    data = tiny_data(load_spec(workspace.studies / "tiny.toml"))
    _, accuracy = evaluate(model, data, data.val_images, data.val_labels)
    assert accuracy == study.best_value

    image = tmp_path / "digit.png"
    Image.new("L", (8, 8), 128).save(image)
    assert invoke("predict", "--model", out, image).exit_code == 0
    elsewhere = invoke("best", "--study", "tiny", *args, "--model", tmp_path / "x",
                       "--artifacts", tmp_path / "empty")  # fmt: skip
    assert_user_error(elsewhere, "its weights are no longer in", "use `tuner retrain`")


@pytest.mark.parametrize(
    "verb",
    [
        "run",
        "studies",
        "status",
        "report",
        "best",
        "retrain",
        "visualize",
        "predict",
        "export",
        "dashboard",
    ],
)
def test_help_at_80_columns_shows_every_option_text_whole(verb: str) -> None:
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "80"}, prog_name="tuner")
    assert result.exit_code == 0
    assert "…" not in result.output  # rich cuts a word too long for its column with an ellipsis
    if verb == "run":
        assert "~/.cache/tuner/data" in result.output
        assert "TUNER_STORAGE_RETRY_SECONDS" in result.output
        assert "[training]" in result.output  # not eaten as rich markup
