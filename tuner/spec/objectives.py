"""The study file's objectives (`metric`, `direction`) and its [constraints] table.

`metric` is one measure name or a list of them (a multi-objective study); each measure has a
fixed direction in `tuner.measures.MEASURES`. [constraints] holds `max_<measure>` limits on
the measures known before training; they reach Optuna as the sampler's `constraints_func`,
which only some samplers take (checked in `tuner.search.preflight`).
"""

from __future__ import annotations

from typing import Any

from tuner.checking import Checker, shown, shown_key
from tuner.measures import MEASURES

# Limits apply to what is measured before training: a broken one means the trial is not trained.
CONSTRAINT_KEYS = {f"max_{name}": name for name, m in MEASURES.items() if not m.from_training}


def unknown_measure(name: Any, what: str = "metric") -> str:
    return f"unknown {what} {shown(name)} (not a measure); allowed: {', '.join(MEASURES)}"


def parse_metrics(check: Checker, data: dict[str, Any]) -> tuple[tuple[str, ...], str]:
    """The objectives (measure names, in order) and the first one's direction."""
    raw = data.get("metric", "val_accuracy")
    names = raw if isinstance(raw, list) else [raw]
    if not names:
        raise check.fail("metric", "an empty list; give one measure or several")
    for index, name in enumerate(names):
        key = "metric" if not isinstance(raw, list) else f"metric[{index}]"
        check.typed(name, str, key)
        if name not in MEASURES:
            raise check.fail(key, unknown_measure(name))
    if len(set(names)) != len(names):
        raise check.fail("metric", f"a measure is listed twice in {shown(names)}")
    if not any(MEASURES[name].from_training for name in names):
        raise check.fail(
            "metric",
            "needs val_accuracy or val_loss (measures of the built model alone "
            "would make training pointless); use [constraints] to bound them",
        )
    first = MEASURES[names[0]].direction
    if "direction" in data:
        direction = check.typed(data["direction"], str, "direction")
        if len(names) > 1:
            raise check.fail(
                "direction", "drop it: with several metrics each measure has its fixed direction"
            )
        if direction != first:
            raise check.fail("direction", f"{names[0]} is optimised with direction = {first!r}")
    return tuple(names), first


def parse_constraints(check: Checker, data: dict[str, Any]) -> dict[str, float]:
    """[constraints]: measure name -> upper limit."""
    table = check.table(data, "constraints")
    limits: dict[str, float] = {}
    for key, value in table.items():
        where = f"[constraints].{shown_key(key)}"
        if key not in CONSTRAINT_KEYS:
            raise check.fail(
                where,
                f"unknown constraint; allowed: {', '.join(CONSTRAINT_KEYS)} (limits on "
                f"measures known before training; measures: {', '.join(MEASURES)})",
            )
        limit = check.typed(value, float, where)
        if limit <= 0:
            raise check.fail(where, f"must be > 0, got {shown(value)}")
        limits[CONSTRAINT_KEYS[key]] = limit
    return limits
