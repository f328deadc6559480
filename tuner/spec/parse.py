"""Study files (TOML) -> a validated `StudySpec`, or one TunerError line naming file and key.

Validation happens once, here (with the tables' own checks in `params`, `options` and
`datasets`); later modules trust the spec.
"""

from __future__ import annotations

import copy
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tuner.checking import Checker, check_seed, shown, shown_key, type_name
from tuner.errors import TunerError
from tuner.files import MAX_NAME_BYTES, name_too_long, read_text_file
from tuner.spec.augment import parse_augment
from tuner.spec.budget import parse_training
from tuner.spec.datasets import validate_dataset
from tuner.spec.enqueue import parse_enqueue
from tuner.spec.model import model_params, parse_model
from tuner.spec.objectives import parse_constraints, parse_metrics
from tuner.spec.options import parse_pruner, parse_sampler
from tuner.spec.params import parse_space, validate_grid
from tuner.spec.schema import TOP_LEVEL_KEYS, DatasetSpec, StudySpec, TrainingSpec

NAME_RULE = (
    f"a study name has 1 to {MAX_NAME_BYTES} bytes (UTF-8), without / or \\, '..', a leading '.' "
    "or control characters (it becomes part of file names)"
)

MAX_TRIALS = 1_000_000  # [training].trials and --trials: more is a typo, not a study
MAX_TOML_MESSAGE = 300  # characters of tomllib's message kept in ours
# tomllib takes a second or two per MB, and time quadratic in a dotted key's length (a key of
# 20,000 parts: 15 s). Study files have a few kB and keys of at most 3 parts.
MAX_STUDY_CHARS = 1_000_000
MAX_KEY_DOTS = 100

# What messages name a study given as a dict; model files it names are relative to the
# working directory (its parent).
DICT_STUDY = Path("<dict>")


def read_spec(path: Path, data: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and parse a study file (no pre-flight: see `tuner.search.preflight.load_spec`).

    With `data` (a study in the TOML's structure, e.g. a dict written in Python) nothing is
    read: `data` passes the same checks, and `path` (usually DICT_STUDY) names it in messages.
    Raises TunerError naming the file and the key.
    """
    path = Path(path)
    if data is not None:
        return parse_spec(_study_dict(data, path), path)
    text = read_text_file(path, "study file")
    _check_size(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TunerError(f"{path}: TOML syntax error: {_toml_error(exc, text)}") from None
    except RecursionError:
        raise TunerError(
            f"{path}: TOML syntax error: arrays or inline tables nested too deeply "
            "(a study file needs a few levels)"
        ) from None
    except ValueError as exc:  # Python refuses to read integers of more than 4300 digits
        reason = str(exc).split(";")[0]
        raise TunerError(
            f"{path}: TOML syntax error: a number is too long ({reason}); TOML integers are 64-bit"
        ) from None
    return parse_spec(data, path)


def _study_dict(data: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """A copy of a study given as a dict (later edits of the caller's dict change nothing)."""
    if not isinstance(data, dict):
        raise TunerError(f"{path}: a study is a dict of its tables, got {type_name(data)}")
    if "name" not in data:
        raise TunerError(
            f'{path}: name: required in a study given as a dict (e.g. "name": "digits-quick"); '
            "it names the study in storage"
        )
    return copy.deepcopy(data)


def _check_size(path: Path, text: str) -> None:
    """Refuse what would keep tomllib busy for minutes: huge files, keys of many parts."""
    if len(text) > MAX_STUDY_CHARS:
        raise TunerError(
            f"{path}: {len(text)} characters, more than a study file may have "
            f"({MAX_STUDY_CHARS}); a study file needs a few thousand"
        )
    for number, line in enumerate(text.splitlines(), 1):
        # The key of `key = value`, or a [table] header; other lines hold no keys.
        key = line.partition("=")[0] if "=" in line else line
        if key.count(".") > MAX_KEY_DOTS and ("=" in line or line.lstrip().startswith("[")):
            raise TunerError(
                f"{path}: line {number}: a key or table name with more than {MAX_KEY_DOTS} "
                "dots; study files need at most 3 parts, e.g. [space.learning_rate]"
            )


def _toml_error(exc: tomllib.TOMLDecodeError, text: str) -> str:
    """tomllib's message, always with a line number, and saying which key is given twice."""
    message = str(exc)
    if len(message) > MAX_TOML_MESSAGE:  # it quotes the whole key, however deep the table
        where = message.rfind(" (at ")
        head = message[: MAX_TOML_MESSAGE // 2]
        message = f"{head}...{message[where:] if where > len(head) else ''}"
    lines = text.splitlines()
    message = message.replace("(at end of document)", f"(at line {len(lines)}, end of file)")
    if message.startswith("Cannot overwrite a value"):
        # tomllib doesn't say which key; it is the one assigned on the reported line.
        found = re.search(r"\(at line (\d+)", message)
        line = lines[int(found.group(1)) - 1] if found and lines else ""
        # (its first 200 characters: the pattern backtracks through long runs of spaces)
        assigned = re.match(r"\s*([\w.\-\"' ]+?)\s*=", line[:200])
        key = f": {shown_key(assigned.group(1))}" if assigned else ""
        message += f" (a key is given twice{key})"
    elif message.startswith(("Cannot declare", "Duplicate")):
        message += " (a table or key is given twice)"
    return message


def parse_spec(data: dict[str, Any], path: Path) -> StudySpec:
    """Validate already-parsed TOML data; `path` is used for messages and the default name."""
    check = Checker(path)
    check.no_unknown(data, TOP_LEVEL_KEYS, "")

    name = _study_name(check, data, path)
    description = check.typed(data.get("description", ""), str, "description")

    metrics, direction = parse_metrics(check, data)
    sampler = parse_sampler(check, data)
    pruner = parse_pruner(check, data)
    dataset = check.dataclass_section(data, "dataset", DatasetSpec)
    dataset = validate_dataset(check, dataset)
    training = parse_training(check, data)
    _validate_training(check, training)
    augment = parse_augment(check, data)
    model_table = check.table(data, "model")
    space = parse_space(check, check.table(data, "space"), model_params(check, model_table))
    model = parse_model(check, model_table, space, sampler.name)
    if sampler.name == "grid":
        validate_grid(check, space)
    enqueue = parse_enqueue(check, data, space, sampler.name)
    if training.first_result_epochs and not enqueue:
        raise check.fail(
            "[training].first_result_epochs",
            "needs an [[enqueue]] table: the configuration the first result trains",
        )
    constraints = parse_constraints(check, data)
    portfolio = check.typed(data.get("portfolio", True), bool, "portfolio")

    return StudySpec(
        name=name,
        path=path,
        description=description,
        metric=metrics[0],
        direction=direction,
        metrics=metrics,
        constraints=constraints,
        sampler=sampler,
        pruner=pruner,
        dataset=dataset,
        training=training,
        augment=augment,
        space=space,
        model=model,
        enqueue=enqueue,
        portfolio=portfolio,
    )


def _study_name(check: Checker, data: dict[str, Any], path: Path) -> str:
    """The study's name: it names the study in storage and becomes part of file names.

    So it must not be able to point anywhere else: no path separators, no `..`, no leading
    dot (hidden files, `.` and `..`), no control characters, and a length filesystems take.
    """
    name = check.typed(data.get("name", path.stem), str, "name")
    key = "name" if "name" in data else 'name (from the file name; set name = "...")'
    if not name.strip():
        raise check.fail(key, "must not be empty")
    problem = None
    if name_too_long(name):
        problem = f"has {len(name.encode('utf-8', 'surrogatepass'))} bytes"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif ".." in name:
        problem = "contains '..'"
    elif name.startswith("."):
        problem = "starts with '.'"
    elif any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in name):
        problem = "contains a control character"
    if problem:
        raise check.fail(key, f"{shown(name)} {problem}; {NAME_RULE}")
    return name


def _validate_training(check: Checker, training: TrainingSpec) -> None:
    if training.patience < 0:
        raise check.fail("[training].patience", "must be >= 0 (0 disables early stopping)")
    if training.trials is not None and not 1 <= training.trials <= MAX_TRIALS:
        raise check.fail(
            "[training].trials", f"must be 1 to {MAX_TRIALS:,}, got {shown(training.trials)}"
        )
    check_seed(check, training.seed, "[training].seed")
    if training.keep_weights < 0:
        raise check.fail(
            "[training].keep_weights",
            f"must be >= 0 (finished trials whose weights are kept), got {training.keep_weights}",
        )
    if not training.checkpoint_seconds >= 0:
        raise check.fail(
            "[training].checkpoint_seconds",
            f"must be >= 0 (0: a checkpoint after every epoch), got {training.checkpoint_seconds}",
        )
