"""The [sampler] and [pruner] tables: a name, a seed, and an options table.

Only their shape is checked here. The names and options are checked against the registry
(`tuner.search.samplers`) and tried on a throwaway study in the pre-flight step,
`tuner.search.preflight`, which needs Optuna's classes.
"""

from __future__ import annotations

from typing import Any

from tuner.checking import Checker, check_seed, type_name
from tuner.spec.schema import PrunerSpec, SamplerSpec


def parse_sampler(check: Checker, data: dict[str, Any]) -> SamplerSpec:
    table = check.table(data, "sampler")
    check.no_unknown(table, {"name", "seed", "options"}, "[sampler].")
    name = check.typed(table.get("name", "tpe"), str, "[sampler].name")
    seed = check.typed(table.get("seed", 0), int, "[sampler].seed")
    check_seed(check, seed, "[sampler].seed")
    options = option_table(check, table, "[sampler].options")
    # A table that only sets the seed chooses no sampler: the run's default keeps that seed.
    chosen = "name" in table or "options" in table
    return SamplerSpec(name=name, seed=seed, options=options, default=not chosen)


def parse_pruner(check: Checker, data: dict[str, Any]) -> PrunerSpec:
    table = check.table(data, "pruner")
    check.no_unknown(table, {"name", "options"}, "[pruner].")
    name = check.typed(table.get("name", "median"), str, "[pruner].name")
    options = option_table(check, table, "[pruner].options")
    return PrunerSpec(name=name, options=options, default=not table)


def option_table(check: Checker, table: dict[str, Any], key: str) -> dict[str, Any]:
    """The options table, its integers in TOML's range; names and types are checked later."""
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise check.fail(key, f"must be a table, got {type_name(options)}")
    if "seed" in options and key.startswith("[sampler]"):
        raise check.fail(f"{key}.seed", "give the seed as [sampler].seed, not as an option")
    for option, value in options.items():
        if isinstance(value, int) and not isinstance(value, bool):
            check.toml_int(value, f"{key}.{option}")
    return dict(options)
