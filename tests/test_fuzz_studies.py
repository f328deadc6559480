"""Seeded fuzzing of the shipped study files: a mutant is a StudySpec or one TunerError line.

Mutants drop keys, swap value types, put in random values, delete sections, insert unknown
keys and break the TOML syntax; extreme mutants put in what no editor writes but a file can hold
(200,000 nested arrays, 5,000-digit integers, megabyte strings and keys). `load_spec` must
return a StudySpec (which Optuna can then use) or raise a one-line TunerError naming the file,
never anything else; through `tuner run` the CLI must answer with `error: ...` and exit code 2,
never a traceback. Each failure prints the mutant's text, so it can be reproduced with
`tuner run --study FILE`.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import random
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from tuner import data as data_module
from tuner.cli import app
from tuner.data import load as data_load
from tuner.data.registry import DATASETS
from tuner.engine import loading as engine_loading
from tuner.errors import TunerError
from tuner.search.samplers import PRUNERS, SAMPLERS
from tuner.search.space import suggest
from tuner.search.study import open_study
from tuner.spec import METRICS, PARAMETERS, load_spec

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.toml"))
SPEC_MUTANTS = 300
EXTREME_MUTANTS = 80
MAX_MESSAGE = 600  # characters: one line a person reads, whatever the file holds
CLI_MUTANTS = 40

# ---------------------------------------------------------------- writing TOML


def toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value)  # a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"


def to_toml(data: dict[str, Any]) -> str:
    """Top-level values first, then one [section] per table (nested tables inline)."""
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{toml_key(key)}]")
            lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- mutations


def random_value(rng: random.Random) -> Any:
    """Any TOML value, with the edge cases a typo or a copy-paste produces."""
    kind = rng.choice(["int", "float", "str", "bool", "list", "table", "special"])
    if kind == "int":
        return rng.choice([0, 1, -1, 2, 3, 7, 64, 1000, -(2**31), 2**63 - 1, rng.randint(-50, 500)])
    if kind == "float":
        return rng.choice([0.0, -0.0, 0.5, 1.0, 1e-9, 1e308, -2.5, rng.uniform(-1, 2)])
    if kind == "str":
        return rng.choice(["", "x", "tpe", "grid", "median", "sgd", "mnist", "imagefolder:", "é∂"])
    if kind == "bool":
        return rng.choice([True, False])
    if kind == "list":
        return rng.choice([[], [1, 2], [1, 1], [0.1, 0.2], ["a", "b"], [True], [[1]]])
    if kind == "table":
        return rng.choice([{}, {"type": "float"}, {"type": "int", "low": 1}, {"a": 1}])
    return rng.choice(
        [math.nan, math.inf, -math.inf, 10**30, datetime.date(2024, 1, 2), datetime.time(7, 30)]
    )


def tables(data: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every table in `data`, nested ones included."""
    yield data
    for value in data.values():
        if isinstance(value, dict):
            yield from tables(value)


def pick(rng: random.Random, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A table, then one of its keys: small tables ([sampler].options) get their share."""
    table = rng.choice([table for table in tables(data) if table])
    return table, rng.choice(list(table))


def drop_key(rng: random.Random, data: dict[str, Any]) -> None:
    table, key = pick(rng, data)
    del table[key]


def swap_type(rng: random.Random, data: dict[str, Any]) -> None:
    table, key = pick(rng, data)
    value = table[key]
    if isinstance(value, bool):
        table[key] = rng.choice([int(value), str(value).lower()])
    elif isinstance(value, int):
        table[key] = rng.choice([float(value), str(value), value > 0, [value]])
    elif isinstance(value, float) and math.isfinite(value):
        table[key] = rng.choice([int(value), str(value), round(value, 1) + 0.5])
    elif isinstance(value, str):
        table[key] = rng.choice([1, [value], {"name": value}, value.upper()])
    else:
        table[key] = random_value(rng)


def random_value_for_key(rng: random.Random, data: dict[str, Any]) -> None:
    table, key = pick(rng, data)
    table[key] = random_value(rng)


def delete_section(rng: random.Random, data: dict[str, Any]) -> None:
    del data[rng.choice(list(data))]


def unknown_key(rng: random.Random, data: dict[str, Any]) -> None:
    table = rng.choice(list(tables(data)))
    table[rng.choice(["colour", "lr", "seed", "options", "type", "n_trials", "x-y"])] = 1


def known_name(rng: random.Random, data: dict[str, Any]) -> None:
    """A valid but different sampler, pruner, dataset, metric or direction."""
    section, key, names = rng.choice(
        [
            ("sampler", "name", list(SAMPLERS)),
            ("pruner", "name", list(PRUNERS)),
            ("dataset", "name", [*DATASETS, "imagefolder:./photos"]),
            ("", "metric", list(METRICS)),
            ("", "direction", ["maximize", "minimize"]),
        ]
    )
    table = data.setdefault(section, {}) if section else data
    if isinstance(table, dict):
        table[key] = rng.choice(names)


def reshape_param(rng: random.Random, data: dict[str, Any]) -> None:
    """Turn a parameter into another kind of declaration, with random bounds."""
    space = data.get("space")
    if not isinstance(space, dict):
        return
    name = rng.choice(list(PARAMETERS))
    low, high = sorted(rng.choice([0, 1, 2, 3, 8, 0.5, 1e-4, -1]) for _ in range(2))
    space[name] = rng.choice(
        [
            {"type": "int", "low": int(low), "high": int(high) + 1},
            {"type": "float", "low": low, "high": high, "log": rng.random() < 0.5},
            {"type": "float", "low": low, "high": high + 1, "step": rng.choice([0.5, 1, 0])},
            {"type": "categorical", "choices": [low, high]},
            {"type": rng.choice(["uniform", "int", "float"]), "choices": [1, 3]},
            PARAMETERS[name].default,
        ]
    )


DATA_MUTATIONS: list[Callable[[random.Random, dict[str, Any]], None]] = [
    drop_key,
    swap_type,
    random_value_for_key,
    delete_section,
    unknown_key,
    known_name,
    reshape_param,
]


def break_syntax(rng: random.Random, text: str) -> str:
    lines = text.splitlines()
    index = rng.randrange(len(lines))
    position = rng.randrange(len(text))
    return rng.choice(
        [
            text[:position],  # truncated file
            text[:position] + rng.choice("[]{}=\"',#=\n") + text[position:],
            text[:position] + text[position + 1 :],
            "\n".join([*lines[: index + 1], lines[index], *lines[index + 1 :]]),  # line twice
            text.replace("=", ":", 1),
            text + "\n[space]\n",
        ]
    )


def mutants(count: int, seed: int) -> Iterator[tuple[str, str]]:
    """(id, TOML text) of `count` mutants of the shipped studies."""
    rng = random.Random(seed)
    for number in range(count):
        source = rng.choice(STUDIES)
        text = source.read_text()
        if rng.random() < 0.2:
            text = break_syntax(rng, text)
        else:
            data = tomllib.loads(text)
            for _ in range(rng.randint(1, 3)):
                if data:
                    rng.choice(DATA_MUTATIONS)(rng, data)
            text = to_toml(data)
        yield f"{number}-{source.stem}", text


DEEP = 200_000  # far beyond Python's recursion limit, as in the report that found it


def extreme_value(rng: random.Random) -> str:
    """TOML text of a value that is legal, or nearly, and absurd."""
    depth = rng.choice([50, 2_000, DEEP])
    return rng.choice(
        [
            "[" * depth,  # never closed
            "[" * depth + "1" + "]" * depth,
            "{ a = " * (depth // 10) + "1" + " }" * (depth // 10),
            "0x" + "f" * rng.choice([17, 5_000]),  # beyond 64 bits; hex is read at any length
            "9" * rng.choice([20, 5_000]),  # Python refuses to read over 4,300 digits
            json.dumps("x" * 1_000_000),
            json.dumps("a/../b\u0000\n\u202e"),
            rng.choice(["1e999999", "-1e999999", "5e-324", "1.7976931348623157e308"]),
        ]
    )


def extreme_mutant(rng: random.Random, text: str) -> str:
    """`text` with one value, key or table header made extreme."""
    lines = text.splitlines()
    index = rng.choice([i for i, line in enumerate(lines) if " = " in line])
    key, _, value = lines[index].partition(" = ")
    kind = rng.random()
    if kind < 0.7:
        lines[index] = f"{key} = {extreme_value(rng)}"
    elif kind < 0.8:
        lines[index] = f"{'k' * rng.choice([100, 100_000])} = {value}"
    elif kind < 0.9:
        lines[index] = f"[{key}{'.a' * rng.choice([50, DEEP])}]"
    else:
        lines[index] = f"[space.learning_rate{'.a' * rng.choice([50, DEEP])}]"  # declared twice
    return "\n".join(lines) + "\n"


def extreme_mutants(count: int, seed: int) -> Iterator[tuple[str, str]]:
    rng = random.Random(seed)
    for number in range(count):
        source = rng.choice(STUDIES)
        yield f"extreme-{number}-{source.stem}", extreme_mutant(rng, source.read_text())


# ---------------------------------------------------------------- the checks


def test_writer_round_trips_the_shipped_studies() -> None:
    for path in STUDIES:
        data = tomllib.loads(path.read_text())
        assert tomllib.loads(to_toml(data)) == data


@pytest.fixture
def quiet_optuna() -> Iterator[None]:
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # no "A new study created" per mutant
    yield
    optuna.logging.set_verbosity(verbosity)


@pytest.mark.usefixtures("quiet_optuna")
def test_mutated_studies_load_or_fail_with_one_tuner_error_line(tmp_path: Path) -> None:
    outcomes = {"valid": 0, "rejected": 0}
    for mutant_id, text in mutants(SPEC_MUTANTS, seed=20240611):
        path = tmp_path / f"{mutant_id}.toml"
        path.write_text(text, encoding="utf-8")
        try:
            spec = load_spec(path)
        except TunerError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(f"{path}: "), (message, text)
            outcomes["rejected"] += 1
            continue
        except Exception as exc:  # the bug this test exists to find
            pytest.fail(f"{type(exc).__name__}: {exc}\n--- mutant {mutant_id} ---\n{text}")
        # A valid spec must also be usable: Optuna builds the sampler and pruner, and the
        # space samples a complete config.
        try:
            study = open_study(spec, optuna.storages.InMemoryStorage())
            suggest(study.ask(), spec)
        except Exception as exc:
            pytest.fail(f"{type(exc).__name__}: {exc}\n--- valid mutant {mutant_id} ---\n{text}")
        outcomes["valid"] += 1
    # The mutations must exercise both paths, or this test tests little.
    assert outcomes["valid"] > SPEC_MUTANTS // 10 and outcomes["rejected"] > SPEC_MUTANTS // 2


@pytest.fixture
def cli_stops_before_training(tmp_path: Path, monkeypatch) -> Iterator[Path]:
    """Valid mutants stop at the dataset step: non-digits datasets are missing from an empty
    --data-dir (and never downloaded), digits stops there by a stand-in loader."""
    real_load_dataset = data_module.load_dataset

    def load_dataset(name: str, *args, **kwargs):
        if name == "digits":
            raise TunerError("digits: the test stops the run before training")
        return real_load_dataset(name, *args, **kwargs)

    monkeypatch.setattr(data_module, "load_dataset", load_dataset)
    # tuner.engine.loading binds load_dataset when imported: the workers load through it.
    monkeypatch.setattr(engine_loading, "load_dataset", load_dataset)
    monkeypatch.setattr(data_load, "_download", lambda *args: None)
    monkeypatch.setenv("TUNER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # relative imagefolder paths resolve (to nothing) here
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    verbosity = optuna.logging.get_verbosity()
    yield tmp_path
    root.handlers[:], root.level = handlers, level
    optuna.logging.set_verbosity(verbosity)


def test_cli_never_shows_a_traceback_for_a_mutated_study(cli_stops_before_training: Path) -> None:
    folder = cli_stops_before_training
    (folder / "data").mkdir()
    db = folder / "tuner.db"
    runner = CliRunner()
    for mutant_id, text in mutants(CLI_MUTANTS, seed=7):
        path = folder / f"{mutant_id}.toml"
        path.write_text(text, encoding="utf-8")
        args = ["run", "--study", str(path), "--storage", f"sqlite:///{db}"]
        result = runner.invoke(app, [*args, "--data-dir", str(folder / "data")])
        where = f"--- mutant {mutant_id} ---\n{text}\n--- output ---\n{result.output}"
        assert result.exit_code in (0, 2), where
        assert result.exception is None or isinstance(result.exception, SystemExit), where
        assert "Traceback" not in result.output, where
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, where
    assert not db.exists()  # every run stopped before opening the storage


def load_or_one_line(path: Path, text: str) -> str | None:
    """Load `path`; None if valid, else the TunerError's message, checked to be one short line."""
    try:
        load_spec(path)
    except TunerError as exc:
        message = str(exc)
        shown = f"{message[:2000]}\n--- mutant ---\n{text[:2000]}"
        assert "\n" not in message and message.startswith(f"{path}: "), shown
        assert len(message) <= MAX_MESSAGE, shown
        return message
    except Exception as exc:  # RecursionError, ValueError: the bugs this test exists to find
        pytest.fail(f"{type(exc).__name__}: {str(exc)[:500]}\n--- mutant ---\n{text[:2000]}")
    return None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x = " + "[" * DEEP, "nested too deeply"),
        ("x = " + "[" * DEEP + "]" * DEEP, "nested too deeply"),
        ("x = " + "{ a = " * 20_000 + "1" + " }" * 20_000, "nested too deeply"),
        ("[" * DEEP, "TOML syntax error"),
        ("x = " + "9" * 5_000, "a number is too long"),
        ("[sampler]\nseed = 0x" + "f" * 5_000, "[sampler].seed: must be an integer from -2**63"),
        ('metric = "' + "m" * 100_000 + '"', "metric: unknown metric 'mmm"),
        ("[name" + ".a" * 50 + "]", "name: must be a string, got a table {'a': {'a': {"),
        # tomllib's time grows with the square of a dotted key's length: minutes for these
        ("[name" + ".a" * DEEP + "]", "line 1: a key or table name with more than 100 dots"),
        ("[space]\nx" + ".a" * DEEP + " = 1", "line 2: a key or table name"),
        ("[space]\n" + "k = 1\n" * 200_000, "more than a study file may have (1000000)"),
        (("a ." + " " * 300_000 + "b = 1\n") * 2, "(a key is given twice)"),  # was quadratic
    ],
    ids=[
        "arrays",
        "closed arrays",
        "inline tables",
        "table header",
        "long int",
        "wide int",
        "long string",
        "nested table",
        "deep table header",
        "deep dotted key",
        "huge file",
        "spaced key given twice",
    ],
)
def test_pathological_toml_is_one_short_tuner_error_line(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "study.toml"
    path.write_text(text, encoding="utf-8")
    message = load_or_one_line(path, text)
    assert message is not None and fragment in message


@pytest.mark.usefixtures("quiet_optuna")
def test_extreme_mutants_load_or_fail_with_one_short_tuner_error_line(tmp_path: Path) -> None:
    rejected = 0
    for mutant_id, text in extreme_mutants(EXTREME_MUTANTS, seed=12):
        path = tmp_path / f"{mutant_id}.toml"
        path.write_text(text, encoding="utf-8")
        rejected += load_or_one_line(path, text) is not None
    assert rejected > EXTREME_MUTANTS // 2


def test_cli_answers_200000_nested_arrays_with_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * DEEP, encoding="utf-8")
    db = tmp_path / "tuner.db"
    result = CliRunner().invoke(app, ["run", "--study", str(path), "--storage", f"sqlite:///{db}"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: TOML syntax error: arrays or inline tables nested too deeply "
        "(a study file needs a few levels)"
    ]
    assert not db.exists()
