"""The zero-shot portfolio: configurations learned across datasets, tried first by a new study.

`portfolio.toml` beside this module lists a few seed-CNN configurations chosen together so that
at least one of them does well on each of several development datasets (bench/build_portfolio.py
rebuilds it; its [provenance] table says from what). A study file without [[enqueue]] queues
them as its first trials, unless it says `portfolio = false`.

Each configuration is projected into the study's [space] before it is queued: a value outside a
range becomes the nearest allowed one (in log space for log ranges; on the step grid; ints
rounded), a categorical value not among the choices becomes the nearest numeric choice, a
fixed parameter keeps its fixed value, and a parameter the space lacks is dropped (what the
space has and the configuration lacks is sampled as usual). A configuration that cannot be
placed is skipped and logged: the study's family is not the seed CNN, or the trial would train
with another optimizer than the configuration's (not a choice, fixed to another, or absent
from the space and another by default), as its learning rate does not carry over.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.families import SEED_CNN
from tuner.spec.schema import PARAMETERS, ParamSpec

log = logging.getLogger(__name__)

PORTFOLIO_FILE = Path(__file__).with_name("portfolio.toml")
SOURCE_PREFIX = "portfolio:"  # the `source` user attribute of a portfolio trial: "portfolio:3"


@dataclass(frozen=True)
class Placed:
    """One portfolio configuration placed in a study's space."""

    number: int  # 1-based position in the portfolio
    values: dict[str, Any]  # by [space] names, as an [[enqueue]] table holds them

    @property
    def source(self) -> str:
        return f"{SOURCE_PREFIX}{self.number}"


class CannotPlace(Exception):
    """A configuration has no counterpart in the space; the message says why."""


def load_portfolio(path: Path = PORTFOLIO_FILE) -> tuple[dict[str, Any], ...]:
    """The configurations of a portfolio file, in order."""
    with path.open("rb") as file:
        return tuple(tomllib.load(file).get("configuration", ()))


def place_portfolio(
    space: Mapping[str, ParamSpec],
    configurations: tuple[dict[str, Any], ...],
    *,
    log_skipped: bool = True,
) -> list[Placed]:
    """Each configuration projected into `space`; those that cannot be placed are logged
    (one line for all when the study's family is not the seed CNN), unless `log_skipped` is
    False (a caller that only looks, such as the budget's probe)."""
    placed, skipped = [], []
    for number, configuration in enumerate(configurations, 1):
        try:
            placed.append(Placed(number, project(configuration, space)))
        except CannotPlace as exc:
            skipped.append((number, str(exc)))
    if log_skipped and skipped:
        if len({reason for _, reason in skipped}) == 1 and not placed:
            log.info("portfolio not used: %s", skipped[0][1])
        else:
            for number, reason in skipped:
                log.info("portfolio configuration %d skipped: %s", number, reason)
    return placed


def project(configuration: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> dict[str, Any]:
    """`configuration` as values `space` can sample (fixed parameters left out: they win).

    Raises CannotPlace when the space has no room for it at all.
    """
    family = space.get("family")
    if family is not None:
        allowed = [family.value] if family.is_fixed else list(family.choices)
        if SEED_CNN not in allowed:
            families = ", ".join(map(repr, allowed))
            raise CannotPlace(f"the study's family is {families}, not {SEED_CNN}")
    _check_optimizer(configuration, space)
    values: dict[str, Any] = {}
    if family is not None and not family.is_fixed:
        values["family"] = SEED_CNN
    batch = _batch_size(configuration, space)
    for name, value in configuration.items():
        param = space.get(name)
        if param is None or param.is_fixed or name in ("num_blocks", "filters"):
            continue
        if name == "learning_rate" and batch is not None:
            # The linear scaling rule, as [space]'s scale_with_batch applies it: the rate was
            # chosen for the configuration's batch size, the trial trains with another.
            value = value * batch / configuration["batch_size"]
        values[name] = _nearest(param, value, name)
    values.update(_conv_stack(configuration, space))
    return values


def _check_optimizer(configuration: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> None:
    """Raise CannotPlace when the trial would train with another optimizer than the
    configuration's: dropping or overriding it would keep a learning rate (and weight decay)
    chosen for the other one, e.g. an SGD rate under AdamW."""
    own = configuration.get("optimizer")
    param = space.get("optimizer")
    if own is None or (param is not None and not param.is_fixed):
        return  # a choice: _nearest places it, or says it is not one of them
    # A space that does not list the optimizer holds it fixed at the default.
    trains = PARAMETERS["optimizer"].default if param is None else param.value
    if trains != own:
        raise CannotPlace(f"its optimizer is {own!r}, the study trains {trains!r}")


def _batch_size(configuration: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> int | None:
    """The batch size the trial will train with when it differs from the configuration's."""
    if "batch_size" not in configuration or "batch_size" not in space:
        return None
    param = space["batch_size"]
    own = configuration["batch_size"]
    batch = param.value if param.is_fixed else _nearest(param, own, "batch_size")
    return batch if batch != own else None


def _conv_stack(configuration: Mapping[str, Any], space: Mapping[str, ParamSpec]) -> dict:
    """`num_blocks` and `filters` placed together: the nearest allowed depth, the stack cut
    or extended (by its last block) to it, each block's filter count projected."""
    filters = configuration.get("filters")
    if filters is None or "num_blocks" not in space or "filters" not in space:
        return {}
    blocks_param = space["num_blocks"]
    blocks = (
        blocks_param.value
        if blocks_param.is_fixed
        else _nearest(blocks_param, len(filters), "num_blocks")
    )
    values: dict[str, Any] = {} if blocks_param.is_fixed else {"num_blocks": blocks}
    if not space["filters"].is_fixed:
        stack = list(filters[:blocks]) + [filters[-1]] * (blocks - len(filters))
        values["filters"] = [_nearest(space["filters"], f, "filters") for f in stack]
    return values


def _nearest(param: ParamSpec, value: Any, name: str) -> Any:
    """The value of `param`'s declaration nearest to `value`."""
    if param.type == "categorical":
        # True == 1 in Python: a choice counts as the value only with its type too.
        if any(choice == value and type(choice) is type(value) for choice in param.choices):
            return value
        numeric = [c for c in param.choices if _is_number(c)]
        if _is_number(value) and numeric:
            return min(numeric, key=lambda choice: (abs(choice - value), choice))
        raise CannotPlace(f"{name} = {value!r} is not one of the choices {list(param.choices)}")
    if param.log and value > 0:
        clipped = math.exp(min(max(math.log(value), math.log(param.low)), math.log(param.high)))
    else:
        clipped = min(max(value, param.low), param.high)
    if param.step is not None:
        last = math.floor((param.high - param.low) / param.step + 1e-9)
        steps = min(round((clipped - param.low) / param.step), last)
        clipped = param.low + steps * param.step
    if param.type == "int":
        return min(max(round(clipped), param.low), param.high)
    # 12 digits: 0.1 + 3 * 0.05 is stored as 0.25, not 0.25000000000000006
    return float(f"{min(max(clipped, param.low), param.high):.12g}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
