"""The [[enqueue]] tables: known configurations to try first, checked against [space].

Each table is a partial or full parameter set by the names of [space] (`filters` as one int
for every block or a list with one value per block). What is missing is sampled as usual.
`trial_params` turns a table into the parameters Optuna stores (`filters_1`, ...), so the
search enqueues exactly what `suggest` would have sampled.
"""

from __future__ import annotations

from typing import Any

from tuner.checking import Checker, shown
from tuner.spec.augment import AUGMENT_PARAMETERS
from tuner.spec.grid import filter_param_name
from tuner.spec.schema import PARAMETERS, ParamSpec

MAX_ENQUEUED = 1_000  # a study file lists a few known configurations, not a grid


def parse_enqueue(
    check: Checker, data: dict[str, Any], space: dict[str, ParamSpec], sampler: str
) -> tuple[dict[str, Any], ...]:
    """The validated [[enqueue]] tables of a study file (empty when it has none)."""
    tables = data.get("enqueue", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise check.fail("[[enqueue]]", "must be an array of tables: [[enqueue]] then key = value")
    if tables and sampler == "grid":
        raise check.fail("[[enqueue]]", "the grid sampler runs every point already; remove it")
    if len(tables) > MAX_ENQUEUED:
        raise check.fail("[[enqueue]]", f"{len(tables)} tables, at most {MAX_ENQUEUED}")
    return tuple(
        check_values(check, table, space, f"[[enqueue]][{index}]")
        for index, table in enumerate(tables)
    )


def check_values(
    check: Checker, values: dict[str, Any], space: dict[str, ParamSpec], where: str
) -> dict[str, Any]:
    """One parameter set checked against `space`: known names, values the space can sample."""
    unknown = sorted(set(values) - set(space))
    if unknown:
        raise check.fail(
            f"{where}.{unknown[0]}",
            f"unknown parameter {shown(unknown[0])}; [space] has: {', '.join(space)}",
        )
    checked: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{where}.{name}"
        if name == "filters" and isinstance(value, list):
            if not value:
                raise check.fail(key, "must be an int or a non-empty array of ints")
            checked[name] = [
                _checked_value(check, space[name], item, f"{key}[{index}]")
                for index, item in enumerate(value)
            ]
        else:
            checked[name] = _checked_value(check, space[name], value, key)
    filters, blocks = checked.get("filters"), checked.get("num_blocks")
    if isinstance(filters, list):
        fixed_blocks = space["num_blocks"].value if space["num_blocks"].is_fixed else None
        wanted = blocks if blocks is not None else fixed_blocks
        if wanted is None:
            checked["num_blocks"] = _checked_value(
                check, space["num_blocks"], len(filters), f"{where}.filters (its length)"
            )
        elif wanted != len(filters):
            raise check.fail(
                f"{where}.filters", f"has {len(filters)} values for num_blocks = {wanted}"
            )
    return checked


def _checked_value(check: Checker, param: ParamSpec, value: Any, key: str) -> Any:
    """`value` as the parameter's type, if the declaration could produce it."""
    domain = PARAMETERS.get(param.name) or AUGMENT_PARAMETERS[param.name]
    value = check.typed(value, domain.kind, key)
    if param.is_fixed:
        if value != param.value:
            raise check.fail(
                key, f"is fixed to {shown(param.value)} in [space], got {shown(value)}"
            )
    elif param.type == "categorical":
        if value not in param.choices:
            allowed = ", ".join(shown(choice) for choice in param.choices)
            raise check.fail(key, f"{shown(value)} is not one of the choices: {allowed}")
    elif not param.low <= value <= param.high:
        raise check.fail(
            key, f"{shown(value)} is outside the range [{shown(param.low)}, {shown(param.high)}]"
        )
    elif param.step is not None and not _on_step(value, param):
        raise check.fail(
            key, f"{shown(value)} is not on the steps of {param.step} from {param.low}"
        )
    return value


def _on_step(value: float, param: ParamSpec) -> bool:
    ratio = (value - param.low) / param.step
    return abs(ratio - round(ratio)) < 1e-9


def trial_params(values: dict[str, Any], space: dict[str, ParamSpec]) -> dict[str, Any]:
    """A checked parameter set as Optuna's trial parameters (fixed ones are not sampled)."""
    params = {
        name: value
        for name, value in values.items()
        if name != "filters" and not space[name].is_fixed
    }
    filters = values.get("filters")
    if filters is not None and not space["filters"].is_fixed:
        blocks = values.get("num_blocks")
        if blocks is None and space["num_blocks"].is_fixed:
            blocks = space["num_blocks"].value
        if isinstance(filters, list):
            params.update({filter_param_name(i): f for i, f in enumerate(filters, 1)})
        elif blocks is not None:
            params.update({filter_param_name(i): filters for i in range(1, blocks + 1)})
        else:  # the depth is sampled: give every block it may have this filter count
            deepest = space["num_blocks"].high or max(space["num_blocks"].choices)
            params.update({filter_param_name(i): filters for i in range(1, deepest + 1)})
    return params
