"""The [training] table's time keys: `budget` (a duration), `full_trial_share`,
`full_trial_min_epochs`, `first_result_epochs` and `reports_per_epoch`.

`parse_duration` also reads `tuner run --budget`: '90s', '10m', '1h30m', '2h', or plain
seconds ('600', 600, 1.5e3). `format_duration` writes durations the way it reads them, for
every message, progress line and report.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Any

from tuner.checking import Checker, shown
from tuner.spec.schema import TrainingSpec

DURATION_FORMS = "a duration such as '90s', '10m', '1h30m' or plain seconds"
MAX_REPORTS_PER_EPOCH = 64
# Upper bounds that catch a typo (an extra zero, a 64-bit maximum) before a run plans with it.
MAX_EPOCHS = 10_000
MAX_DURATION_SECONDS = 365 * 24 * 3600
MAX_DURATION_TEXT = "365 days"
_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def format_duration(seconds: float) -> str:
    """'0.25s', '42.5s', '3m 05s', '2h 07m': what parse_duration reads back."""
    if seconds < 1:
        return f"{seconds:.2g}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def parse_duration(value: Any) -> float:
    """Seconds in `value`; ValueError with a short reason when it is not a positive duration."""
    if isinstance(value, bool):
        raise ValueError(f"got {shown(value)}: must be {DURATION_FORMS}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            found = _DURATION.fullmatch(text) if text else None
            if found is None or not any(found.groups()):
                raise ValueError(f"got {shown(value)}: must be {DURATION_FORMS}") from None
            seconds = sum(
                float(part) * _UNIT_SECONDS[unit]
                for part, unit in zip(found.groups(), "hms", strict=True)
                if part
            )
    else:
        raise ValueError(f"got {shown(value)}: must be {DURATION_FORMS}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"got {shown(value)}: must be a positive duration ({DURATION_FORMS})")
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError(f"got {shown(value)}: must be at most {MAX_DURATION_TEXT}")
    return seconds


def parse_training(check: Checker, data: dict[str, Any]) -> TrainingSpec:
    """The [training] table, with `budget` read as a duration, `full_trial_share`,
    `full_trial_min_epochs`, `first_result_epochs` and `reports_per_epoch` checked."""
    table = check.table(data, "training")
    budget = None
    if "budget" in table:
        try:
            budget = parse_duration(table["budget"])
        except ValueError as exc:
            raise check.fail("[training].budget", str(exc)) from None
    # The dataclass check types keys by their defaults; budget's is None, so it is read above.
    rest = {key: value for key, value in table.items() if key != "budget"}
    training = check.dataclass_section({"training": rest}, "training", TrainingSpec)
    # max_epochs first: the keys below are checked against it.
    if not 1 <= training.max_epochs <= MAX_EPOCHS:
        raise check.fail(
            "[training].max_epochs",
            f"must be 1 to {MAX_EPOCHS:,}, got {shown(training.max_epochs)}",
        )
    if not 0 <= training.reports_per_epoch <= MAX_REPORTS_PER_EPOCH:
        raise check.fail(
            "[training].reports_per_epoch",
            f"must be 0 (from the dataset size) to {MAX_REPORTS_PER_EPOCH}, "
            f"got {training.reports_per_epoch}",
        )
    if not 0 < training.full_trial_share <= 1:
        raise check.fail(
            "[training].full_trial_share",
            "must be above 0 and at most 1 (the share of the budget one full-length trial "
            f"may take), got {training.full_trial_share}",
        )
    if not 0 <= training.full_trial_min_epochs <= training.max_epochs:
        raise check.fail(
            "[training].full_trial_min_epochs",
            f"must be 0 (the share alone decides) to max_epochs ({training.max_epochs}), "
            f"got {training.full_trial_min_epochs}",
        )
    if not 0 <= training.first_result_epochs <= training.max_epochs:
        raise check.fail(
            "[training].first_result_epochs",
            f"must be 0 (off) to max_epochs ({training.max_epochs}), "
            f"got {training.first_result_epochs}",
        )
    return replace(training, budget=budget)
