"""The space's points counted without Optuna: the grid values of a parameter, the grid's size,
and the names the conv stack is sampled under (`filters_k`, or `filters_per_block` in grids).

`tuner.search.space` samples and lists the grid by these same rules; the spec uses them to
check a study file (grid size, [[enqueue]] values) without importing the search layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuner.spec.schema import ParamSpec

# Grid studies sample the whole conv stack as this one parameter; see `search.grid_search_space`.
FILTERS_PER_BLOCK = "filters_per_block"


def filter_param_name(block: int) -> str:
    """The trial parameter holding the filter count of conv block `block` (1-based)."""
    return f"filters_{block}"


def grid_size(params: Mapping[str, ParamSpec]) -> int:
    """How many points `grid_search_space` gives a grid study of `params`, without listing them.

    A depth of b blocks adds (filter values)**b conv stacks, whatever the other depths use.
    Every sampled float needs a step (the grid is finite); the caller checks that first.
    """
    points = 1
    for name, param in params.items():
        if name not in ("num_blocks", "filters"):
            points *= grid_count(param)
    blocks = params["num_blocks"]
    depths = [blocks.value] if blocks.is_fixed else grid_values(blocks)
    return points * sum(grid_count(params["filters"]) ** depth for depth in depths)


def grid_values(param: ParamSpec) -> list[Any]:
    """The grid values of a sampled parameter."""
    if param.type == "categorical":
        return list(param.choices)
    if param.type == "int":
        return list(range(param.low, param.high + 1, param.step or 1))
    # Decimal steps give 0.3, not 0.30000000000000004, and never step past `high`.
    low, step = Decimal(str(param.low)), Decimal(str(param.step))
    return [float(low + i * step) for i in range(grid_count(param))]


def grid_count(param: ParamSpec) -> int:
    """len(grid_values(param)) without building the list; 1 for a fixed parameter."""
    if param.is_fixed:
        return 1
    if param.type == "categorical":
        return len(param.choices)
    if param.type == "int":
        return len(range(param.low, param.high + 1, param.step or 1))
    low, high, step = (Decimal(str(value)) for value in (param.low, param.high, param.step))
    return int((high - low) / step) + 1
