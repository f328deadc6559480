"""Study files -> StudySpec: every malformed file is one TunerError naming file, key and remedy."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tuner.errors import TunerError
from tuner.spec import PARAMETERS, find_study_file, list_study_files, load_spec
from tuner.spec.budget import parse_duration

STUDIES = Path(__file__).resolve().parent.parent / "studies"

BASE = """\
name = "tiny"
metric = "val_accuracy"

[sampler]
name = "tpe"
seed = 0
options = { n_startup_trials = 2 }

[pruner]
name = "median"
options = { n_startup_trials = 2 }

[dataset]
name = "digits"

[training]
max_epochs = 2

[augment]
horizontal_flip = false

[space]
learning_rate = { type = "float", low = 1e-3, high = 1e-1, log = true }
batch_size = { type = "categorical", choices = [16, 32] }
filters = 4
num_blocks = 1
"""

LR = 'learning_rate = { type = "float", low = 1e-3, high = 1e-1, log = true }'
BATCH = 'batch_size = { type = "categorical", choices = [16, 32] }'


def write(directory: Path, text: str, name: str = "study.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def edited(old: str, new: str) -> str:
    """BASE with `old` replaced by `new` (which must be there, so a case can't go stale)."""
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def load_error(path: Path) -> str:
    """The message of the TunerError that loading `path` raises; it must be one line."""
    with pytest.raises(TunerError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


SAMPLER = 'name = "tpe"\nseed = 0\noptions = { n_startup_trials = 2 }'
PRUNER = 'name = "median"\noptions = { n_startup_trials = 2 }'
BLOCKS = "filters = 4\nnum_blocks = 1"
GRID_BLOCKS = 'filters = { type = "int", low = 1, high = 100 }\nnum_blocks = 6'


def case(case_id: str, old: str, new: str, *fragments: str):
    """A malformed variant of BASE and what its message must contain: the key, what's allowed."""
    return pytest.param(edited(old, new), fragments, id=case_id)


MALFORMED = [
    case("unknown top-level key", "name =", "colour = 1\nname =", "colour", "allowed:", "sampler"),
    case("unknown [sampler] key", "seed = 0", "speed = 1", "[sampler].speed", "unknown", "seed"),
    case("unknown [pruner] key", PRUNER, PRUNER + "\nwarmup = 1", "[pruner].warmup", "options"),
    case(
        "unknown [dataset] key",
        '"digits"',
        '"digits"\nfolder = "x"',
        "[dataset].folder",
        "val_fraction",
    ),
    case("unknown [training] key", "max_epochs", "epochs", "[training].epochs", "max_epochs"),
    case(
        "negative keep_weights",
        "max_epochs = 2",
        "max_epochs = 2\nkeep_weights = -1",
        "[training].keep_weights",
        "must be >= 0",
    ),
    case(
        "negative checkpoint_seconds",
        "max_epochs = 2",
        "max_epochs = 2\ncheckpoint_seconds = -5",
        "[training].checkpoint_seconds",
        "must be >= 0 (0: a checkpoint after every epoch)",
    ),
    case(
        "misspelt key gets a guess",
        "max_epochs",
        "max_epoch",
        "[training].max_epoch",
        "did you mean 'max_epochs'?",
    ),
    case(
        "misspelt [space] key gets a guess",
        "filters = 4",
        "filter = 4",
        "[space].filter",
        "did you mean 'filters'?",
    ),
    case("unknown [augment] key", "horizontal_flip", "flip", "[augment].flip", "horizontal_flip"),
    case(
        "unknown [space] key", "filters = 4", "filters = 4\nlr = 0.1", "[space].lr", "learning_rate"
    ),
    case(
        "unknown key in a param table",
        "log = true",
        "logarithmic = true",
        "[space].learning_rate.logarithmic",
        "high, log, low, step, type",
    ),
    case(
        "string for an int",
        "max_epochs = 2",
        'max_epochs = "2"',
        "[training].max_epochs",
        "must be an integer",
        "string",
    ),
    case(
        "bool for an int",
        "max_epochs = 2",
        "max_epochs = true",
        "[training].max_epochs",
        "must be an integer",
        "boolean",
    ),
    case(
        "float for an int parameter",
        "num_blocks = 1",
        'num_blocks = { type = "int", low = 1.5, high = 3 }',
        "[space].num_blocks.low",
        "must be an integer",
        "1.5",
    ),
    case(
        "float for a fixed int parameter",
        "filters = 4",
        "filters = 4.0",
        "[space].filters",
        "an integer",
    ),
    case(
        "string choice for an int parameter",
        "[16, 32]",
        '[16, "32"]',
        "[space].batch_size.choices[1]",
        "must be an integer",
    ),
    case(
        "low > high",
        "low = 1e-3, high = 1e-1",
        "low = 1e-1, high = 1e-3",
        "[space].learning_rate.low",
        "must be <= high",
    ),
    case(
        "log with low <= 0",
        "low = 1e-3",
        "low = 0.0",
        "[space].learning_rate.low",
        "> 0 when log = true",
    ),
    case(
        "step <= 0",
        BATCH,
        'batch_size = { type = "int", low = 16, high = 32, step = 0 }',
        "[space].batch_size.step",
        "must be > 0",
    ),
    case(
        "step with log",
        "log = true",
        "log = true, step = 0.01",
        "[space].learning_rate.step",
        "cannot be combined with log",
    ),
    case(
        "step not dividing the range",
        BATCH,
        'batch_size = { type = "int", low = 16, high = 60, step = 16 }',
        "[space].batch_size.step",
        "multiple of step",
        "high = 48",
    ),
    case("empty choices", "[16, 32]", "[]", "[space].batch_size.choices", "non-empty"),
    case(
        "duplicate choices", "[16, 32]", "[16, 32, 16]", "[space].batch_size.choices", "duplicate"
    ),
    case(
        "value outside the domain",
        "filters = 4",
        "filters = 0",
        "[space].filters",
        "int from 1 to 1024",
    ),
    case(
        "str parameter as a range",
        "filters = 4",
        'filters = 4\noptimizer = { type = "float", low = 0, high = 1 }',
        "[space].optimizer.type",
        "'categorical'",
    ),
    case("non-finite number", "low = 1e-3", "low = nan", "[space].learning_rate.low", "finite"),
    case(
        "unknown sampler",
        '"tpe"',
        '"bayes"',
        "[sampler].name",
        "unknown sampler 'bayes'",
        "tpe, random, qmc, cmaes, gp, grid",
    ),
    case(
        "unknown pruner",
        '"median"',
        '"asha"',
        "[pruner].name",
        "unknown pruner 'asha'",
        "median, hyperband",
    ),
    case(
        "unknown dataset",
        '"digits"',
        '"svhn"',
        "[dataset].name",
        "'svhn'",
        "mnist",
        "imagefolder:PATH",
    ),
    case(
        "imagefolder without a path", '"digits"', '"imagefolder:"', "[dataset].name", "needs a path"
    ),
    case(
        "unknown metric",
        '"val_accuracy"',
        '"f1"',
        "metric",
        "unknown metric 'f1'",
        "val_accuracy, val_loss",
    ),
    case(
        "direction mismatch",
        '"val_accuracy"',
        '"val_accuracy"\ndirection = "minimize"',
        "direction",
        "val_accuracy",
        "'maximize'",
    ),
    case(
        "val_fraction out of range",
        '"digits"',
        '"digits"\nval_fraction = 1.5',
        "[dataset].val_fraction",
        "(0, 1)",
    ),
    case("negative seed", "seed = 0", "seed = -1", "[sampler].seed", "from 0 to"),
    pytest.param(
        'augment = "flip"\n' + edited("[augment]\nhorizontal_flip = false", ""),
        ("augment", "must be a table"),
        id="section that is not a table",
    ),
    case(
        "unknown sampler option",
        "n_startup_trials = 2 }",
        "n_startup = 2 }",
        "[sampler].options.n_startup",
        "unknown key",
        "n_startup_trials",
    ),
    case(
        "sampler option of the wrong type",
        "n_startup_trials = 2 }",
        'n_startup_trials = "2" }',
        "[sampler].options.n_startup_trials",
        "must be an integer",
    ),
    case(
        "sampler option that takes a Python object",
        "n_startup_trials = 2 }",
        "gamma = 1 }",
        "[sampler].options.gamma",
        "cannot be set in a study file",
    ),
    case(
        "seed given as a sampler option",
        "n_startup_trials = 2 }",
        "seed = 1 }",
        "[sampler].options.seed",
        "[sampler].seed",
    ),
    case(
        "sampler option rejected by the constructor",
        SAMPLER,
        'name = "qmc"\noptions = { qmc_type = "x" }',
        "[sampler].options",
        "rejected by QMCSampler",
        "qmc_type='x'",
    ),
    case(
        "sampler option that fails once used",
        "n_startup_trials = 2 }",
        "n_startup_trials = 2, n_ei_candidates = 0 }",
        "[sampler].options",
        "rejected by TPESampler",
    ),
    case(
        "pruner option rejected by the constructor",
        PRUNER,
        'name = "median"\noptions = { n_warmup_steps = -1 }',
        "[pruner].options",
        "rejected by MedianPruner",
        "n_warmup_steps",
    ),
    case(
        "pruner option that fails once used",
        PRUNER,
        'name = "hyperband"\noptions = { reduction_factor = 1 }',
        "[pruner].options",
        "rejected by HyperbandPruner",
    ),
    case(
        "options of a pruner that has none",
        PRUNER,
        'name = "none"\noptions = { patience = 1 }',
        "[pruner].options.patience",
        "allowed: (none)",
    ),
    case(
        "empty space: everything fixed",
        f"{LR}\n{BATCH}",
        "learning_rate = 0.01\nbatch_size = 32",
        "[space]",
        "nothing to tune",
        "low =",
    ),
    case(
        "grid sampler with a continuous float range",
        SAMPLER,
        'name = "grid"',
        "[space].learning_rate",
        "grid sampler",
        "step",
    ),
    pytest.param(
        edited(SAMPLER, 'name = "grid"').replace(LR, "").replace(BLOCKS, GRID_BLOCKS),
        ("[space]", "the grid has 2000000000000 points", "limit of 100000"),
        id="grid too large",
    ),
]


@pytest.mark.parametrize(("text", "fragments"), MALFORMED)
def test_malformed_study_names_file_key_and_what_is_allowed(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    message = load_error(write(tmp_path, text))
    for fragment in fragments:
        assert fragment in message


def test_toml_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, edited("max_epochs = 2", "max_epochs = = 2"))
    message = load_error(path)
    line = BASE.splitlines().index("max_epochs = 2") + 1
    assert "TOML syntax error" in message
    assert f"line {line}," in message


@pytest.mark.parametrize(
    "text",
    [
        edited("filters = 4", "filters = 4\nlearning_rate = 0.01"),  # also the last line
        edited("num_blocks = 1", "num_blocks = 1\nnum_blocks = 2") + "# the end\n",
    ],
    ids=["at the end", "in the middle"],
)
def test_duplicate_parameter_is_reported_with_its_name_and_line(tmp_path: Path, text: str) -> None:
    message = load_error(write(tmp_path, text))
    assert "a key is given twice" in message
    assert re.search(r"at line \d+", message)
    assert "learning_rate" in message or "num_blocks" in message


def test_table_given_twice(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, BASE + "\n[training]\npatience = 1\n"))
    assert "training" in message and "given twice" in message


def test_int_accepted_where_a_float_is_expected(tmp_path: Path) -> None:
    text = edited("low = 1e-3, high = 1e-1", "low = 1, high = 2").replace(
        "filters = 4", "filters = 4\ndropout = 0\nmomentum = 0"
    )
    spec = load_spec(write(tmp_path, text))
    lr = spec.space["learning_rate"]
    assert (lr.low, lr.high) == (1.0, 2.0) and isinstance(lr.low, float)
    assert spec.space["dropout"].value == 0.0 and isinstance(spec.space["dropout"].value, float)


def test_valid_study_and_defaults(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    assert spec.name == "tiny" and spec.direction == "maximize"
    assert spec.sampler.options == {"n_startup_trials": 2}
    assert set(spec.space) == set(PARAMETERS)
    assert spec.space["learning_rate"].type == "float" and spec.space["learning_rate"].log
    assert spec.space["batch_size"].choices == (16, 32)
    assert spec.space["filters"].is_fixed and spec.space["filters"].value == 4
    assert spec.space["dropout"].value == PARAMETERS["dropout"].default


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_spec(path).name == "tiny"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d / "missing.toml", "no such study file"),
        (lambda d: d, "is a directory"),
        (
            lambda d: (d / "latin1.toml", (d / "latin1.toml").write_bytes(b'name = "\xe9"'))[0],
            "UTF-8",
        ),
    ],
    ids=["missing", "directory", "not utf-8"],
)
def test_unreadable_study_file(tmp_path: Path, make, fragment: str) -> None:
    path = make(tmp_path)
    with pytest.raises(TunerError, match=re.escape(fragment)) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_study_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem  # `--study NAME` finds the file, storage knows the name
    assert not all(param.is_fixed for param in spec.space.values())


def test_the_default_study_leaves_its_configurations_room_to_differ() -> None:
    """On all of digits most configurations scored over 99.6% of 288 validation images: one
    image apart, nothing to rank. Few training images and many validation images spread them."""
    from tuner.data import load_dataset, split

    spec = load_spec(STUDIES / "digits-quick.toml")
    data = spec.dataset
    splits = split(
        load_dataset(data.name),
        val_fraction=data.val_fraction,
        split_seed=data.split_seed,
        train_subset=data.train_subset,
    )
    assert len(splits.val) >= 500  # one image is at most 0.2% of accuracy
    assert len(splits.train) <= len(splits.val) // 2  # a hard task: few images to learn from


def test_grid_study_with_steps_loads(tmp_path: Path) -> None:
    text = edited('name = "tpe"\nseed = 0\noptions = { n_startup_trials = 2 }', 'name = "grid"')
    text = text.replace(
        LR, 'learning_rate = { type = "float", low = 0.01, high = 0.03, step = 0.01 }'
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.sampler.name == "grid" and spec.space["learning_rate"].step == 0.01


def test_find_study_file_by_name_and_by_path(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "studies"
    folder.mkdir()
    named = write(folder, BASE, "alpha.toml")
    write(folder, BASE, "beta.toml")
    assert find_study_file("alpha", folder) == named
    assert find_study_file(str(named), folder) == named
    assert find_study_file("alpha.toml", folder) == named  # a file name, found in the folder
    monkeypatch.chdir(tmp_path)
    assert find_study_file("studies/beta.toml", tmp_path / "elsewhere").is_file()
    (tmp_path / "alpha").mkdir()  # e.g. a data folder named like the study
    assert find_study_file("alpha", folder) == named
    assert list_study_files(folder) == [named, folder / "beta.toml"]


def test_find_study_file_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    with pytest.raises(TunerError, match="is a directory"):
        find_study_file(str(tmp_path / "runs"), tmp_path)


def test_find_study_file_missing_name_lists_the_available_studies(tmp_path: Path) -> None:
    write(tmp_path, BASE, "alpha.toml")
    write(tmp_path, BASE, "beta.toml")
    with pytest.raises(TunerError) as caught:
        find_study_file("gamma", tmp_path)
    message = str(caught.value)
    assert "'gamma'" in message and "alpha, beta" in message and str(tmp_path) in message
    with pytest.raises(TunerError, match=r"available in .*: \(none\)"):
        find_study_file("gamma", tmp_path / "no-such-folder")
    with pytest.raises(TunerError, match="no such study file"):
        find_study_file(str(tmp_path / "gamma.toml"), tmp_path)


@pytest.mark.parametrize(
    ("toml_name", "problem"),
    [
        ('"../../etc/x"', "path separator"),
        ('"/tmp/x"', "path separator"),
        ('"runs\\\\x"', "path separator"),  # TOML "runs\\x": one backslash
        ('".."', "'..'"),
        ('"a..b"', "'..'"),
        ('".hidden"', "starts with '.'"),
        ('"tab\\there"', "control character"),
        ('"line\\u2028break"', "control character"),
        ('"right\\u202eleft"', "control character"),  # shows text reversed in a file list
        ('"' + "x" * 129 + '"', "has 129 bytes"),
        ('"' + "é" * 65 + '"', "has 130 bytes"),  # 65 characters, 2 bytes each in UTF-8
    ],
    ids=[
        "relative",
        "absolute",
        "backslash",
        "dotdot",
        "dotdot inside",
        "leading dot",
        "tab",
        "line separator",
        "bidi override",
        "too long",
        "too many bytes",
    ],
)
def test_study_name_that_could_leave_its_folder_is_refused(
    tmp_path: Path, toml_name: str, problem: str
) -> None:
    message = load_error(write(tmp_path, edited('name = "tiny"', f"name = {toml_name}")))
    assert message.startswith(f"{tmp_path / 'study.toml'}: name: ")
    assert problem in message
    assert "without / or \\" in message and "128 bytes (UTF-8)" in message  # what is allowed


def test_a_budget_over_a_year_is_refused_for_the_file_and_the_flag() -> None:
    with pytest.raises(ValueError, match="must be at most 365 days"):
        parse_duration("99999999999999999999h")
    assert parse_duration("8760h") == 365 * 24 * 3600


@pytest.mark.parametrize(
    ("training", "fragments"),
    [
        ("max_epochs = -5", ("[training].max_epochs: must be 1 to 10,000, got -5",)),
        ("max_epochs = 9223372036854775807", ("[training].max_epochs", "1 to 10,000")),
        ("max_epochs = 2\ntrials = 9223372036854775807", ("[training].trials", "1 to 1,000,000")),
        ('max_epochs = 2\nbudget = "99999999999999999999h"', ("[training].budget", "365 days")),
        ("max_epochs = 2\nbudget = 1e300", ("[training].budget", "at most 365 days")),
    ],
    ids=["negative epochs", "64-bit epochs", "64-bit trials", "huge budget", "1e300 s budget"],
)
def test_training_values_out_of_range_name_the_key_the_file_has_and_the_limit(
    tmp_path: Path, training: str, fragments: tuple[str, ...]
) -> None:
    message = load_error(write(tmp_path, edited("max_epochs = 2", training)))
    assert "full_trial_min_epochs" not in message  # a key the file does not have
    for fragment in fragments:
        assert fragment in message, message


def test_study_name_from_a_hidden_file_name_says_where_it_came_from(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, edited('name = "tiny"\n', ""), ".tiny.toml"))
    assert 'name (from the file name; set name = "...")' in message
    assert "starts with '.'" in message


@pytest.mark.parametrize("name", ["fashion mnist v2", "mnist_2024-06.b", "é∂", "x" * 128, "é" * 64])
def test_study_names_that_stay_in_their_folder_are_accepted(tmp_path: Path, name: str) -> None:
    assert load_spec(write(tmp_path, edited('name = "tiny"', f'name = "{name}"'))).name == name


def test_an_image_folder_is_found_next_to_the_study_file_from_any_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    (tmp_path / "project" / "shapes" / "circle").mkdir(parents=True)
    path = write(tmp_path / "project", edited('"digits"', '"imagefolder:shapes"'))
    monkeypatch.chdir(tmp_path)  # not the study file's folder
    spec = load_spec(path)
    assert spec.dataset.name == f"imagefolder:{(tmp_path / 'project' / 'shapes').resolve()}"


def test_a_missing_image_folder_names_the_study_file_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, edited('"digits"', '"imagefolder:myshapes"'))
    message = load_error(path)
    assert message.startswith(f"{path}: [dataset].name: imagefolder ")
    assert str(tmp_path / "myshapes") in message and "study file's folder" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("n_startup_trials = 2 }", "n_startup_trials = 2, n_ei_candidates = 0 }", "[sampler]"),
        ('name = "tpe"', 'name = "tpee"', "[sampler].name"),
        ('name = "median"', 'name = "median"\nfoo = 1', "[pruner].foo"),
    ],
)
def test_optuna_checks_run_in_the_preflight_step_after_parsing(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    """Parsing checks names and ranges against registries; what needs Optuna (the sampler's
    registry and options tried on a throwaway study) is the pre-flight step `load_spec` runs."""
    from tuner.search.preflight import preflight
    from tuner.spec import read_spec

    path = write(tmp_path, edited(old, new))
    message = load_error(path)
    assert message.startswith(f"{path}: {key}")
    if key == "[pruner].foo":  # the shape of a table is the parser's
        with pytest.raises(TunerError, match=re.escape(message)):
            read_spec(path)
        return
    spec = read_spec(path)
    with pytest.raises(TunerError) as caught:
        preflight(spec)
    assert str(caught.value) == message
