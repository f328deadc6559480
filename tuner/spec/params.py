"""The [space] table: each parameter fixed, a range or choices, within its domain.

Grid studies are also checked here for a finite grid of a size the grid sampler can list;
how big the grid is comes from `tuner.search.space`, which builds it.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from tuner.checking import Checker, kind_name, shown
from tuner.families import FAMILIES
from tuner.families.user import is_code_family
from tuner.spec.augment import AUGMENT_PARAMETERS
from tuner.spec.grid import grid_size
from tuner.spec.model import MODEL_PARAMETERS
from tuner.spec.schema import PARAMETERS, ParamDomain, ParamSpec

MAX_GRID_POINTS = 100_000  # GridSampler lists every combination up front


def parse_space(
    check: Checker, table: dict[str, Any], model: dict[str, ParamSpec] | None = None
) -> dict[str, ParamSpec]:
    """Every parameter of PARAMETERS, plus the model parameters and augmentations declared.

    `model` holds the fixed values [model] gives (see `tuner.spec.model`); a model parameter or
    an augmentation is in the space only when declared there, so studies without one keep
    their stored space (and [augment] fixes the augmentations not declared).
    """
    model = model or {}
    known = {*PARAMETERS, *MODEL_PARAMETERS, *AUGMENT_PARAMETERS}
    family = model.get("family")
    _code_family_in_model(check, table.get("family"))
    own: dict[str, ParamDomain] = {}
    if family is not None and family.value not in FAMILIES and is_code_family(family.value):
        # A build function's own parameters: any name, any TOML scalar (its code checks them).
        own = {n: _own_domain(v) for n, v in table.items() if n not in known}
    check.no_unknown(table, known | own.keys(), "[space].")
    space: dict[str, ParamSpec] = {}
    optional = MODEL_PARAMETERS | AUGMENT_PARAMETERS | own
    declared = {**PARAMETERS, **{n: d for n, d in optional.items() if n in table}}
    for name, domain in declared.items():
        key = f"[space].{name}"
        if name in model and name in table:
            raise check.fail(key, f"also set in [model]; give {name} in one place")
        declaration = table.get(name, domain.default)
        if isinstance(declaration, dict):
            if name == "learning_rate" and "scale_with_batch" in declaration:
                declaration = dict(declaration)
                reference = declaration.pop("scale_with_batch")
                space[name] = _parse_param(check, name, domain, declaration, key)
                space[name] = _scaled_to_batch(check, space[name], reference, table, key)
                continue
            space[name] = _parse_param(check, name, domain, declaration, key)
        else:
            value = check.typed(declaration, domain.kind, key)
            if not domain.check(value):
                raise check.fail(key, f"must be {domain.allowed}, got {shown(value)}")
            space[name] = ParamSpec(name=name, type="fixed", value=value)
    for name, param in model.items():
        space.setdefault(name, param)
    if all(param.is_fixed for param in space.values()):
        raise check.fail(
            "[space]",
            "nothing to tune: declare at least one parameter as a range or choices, e.g. "
            'learning_rate = { type = "float", low = 1e-4, high = 1e-1, log = true }',
        )
    return space


def _code_family_in_model(check: Checker, declaration: Any) -> None:
    """A family from code is named in [model].family (its file is relative to the study)."""
    named = declaration.get("choices") if isinstance(declaration, dict) else [declaration]
    for value in named if isinstance(named, list) else []:
        built_in = not isinstance(value, str) or value in FAMILIES
        if not built_in and (value.startswith("timm:") or is_code_family(value)):
            raise check.fail(
                "[space].family",
                f"{shown(value)} is not built in: a family from code is named in "
                "[model].family, one per study",
            )


def _own_domain(declaration: Any) -> ParamDomain:
    """The domain of a build function's own parameter: whatever its declaration's type is."""
    kinds = {"float": float, "int": int}
    if isinstance(declaration, dict):
        kind = kinds.get(declaration.get("type"))
        choices = declaration.get("choices")
        if declaration.get("type") == "categorical" and isinstance(choices, list) and choices:
            kind = type(choices[0])
    else:
        kind = type(declaration)
    if kind not in (bool, int, float, str):
        kind = float  # the declaration's own check then says what is wrong with it
    return ParamDomain(kind, None, lambda value: True, f"{kind_name(kind)} (own parameter)")


def _parse_param(
    check: Checker, name: str, domain: ParamDomain, decl: dict[str, Any], key: str
) -> ParamSpec:
    kind = decl.get("type")
    numeric = {"float": float, "int": int}
    # A parameter's range type follows its domain; str/bool parameters can only be choices.
    allowed_types = [*{float: ["float"], int: ["int"]}.get(domain.kind, []), "categorical"]
    if kind not in allowed_types:
        raise check.fail(
            f"{key}.type",
            f"must be one of {', '.join(map(repr, allowed_types))}, got {shown(kind)}",
        )
    if kind == "categorical":
        check.no_unknown(decl, {"type", "choices"}, f"{key}.")
        choices = decl.get("choices")
        if not isinstance(choices, list) or not choices:
            raise check.fail(f"{key}.choices", "must be a non-empty array")
        checked = []
        for index, choice in enumerate(choices):
            value = check.typed(choice, domain.kind, f"{key}.choices[{index}]")
            if not domain.check(value):
                raise check.fail(
                    f"{key}.choices[{index}]", f"must be {domain.allowed}, got {shown(value)}"
                )
            checked.append(value)
        if len(set(checked)) != len(checked):
            raise check.fail(f"{key}.choices", f"has duplicate values: {shown(checked)}")
        return ParamSpec(name=name, type="categorical", choices=tuple(checked))

    check.no_unknown(decl, {"type", "low", "high", "log", "step"}, f"{key}.")
    value_kind = numeric[kind]
    for bound in ("low", "high"):
        if bound not in decl:
            raise check.fail(f"{key}.{bound}", "is required for a range")
    low = check.typed(decl["low"], value_kind, f"{key}.low")
    high = check.typed(decl["high"], value_kind, f"{key}.high")
    log = check.typed(decl.get("log", False), bool, f"{key}.log")
    step = decl.get("step")
    if step is not None:
        step = check.typed(step, value_kind, f"{key}.step")
        if step <= 0:
            raise check.fail(f"{key}.step", f"must be > 0, got {step}")
        if log:
            raise check.fail(f"{key}.step", "cannot be combined with log = true")
    if low > high:
        raise check.fail(f"{key}.low", f"low ({low}) must be <= high ({high})")
    if log and low <= 0:
        raise check.fail(f"{key}.low", f"must be > 0 when log = true, got {low}")
    for bound, value in (("low", low), ("high", high)):
        if not domain.check(value):
            raise check.fail(f"{key}.{bound}", f"must be {domain.allowed}, got {shown(value)}")
    if name == "kernel_size":
        raise check.fail(
            f"{key}.type", "kernel_size must be categorical (odd sizes), e.g. choices = [3, 5]"
        )
    if step is not None and _last_step(low, high, step) != high:
        # Optuna would quietly lower `high` to the last step; say so instead.
        raise check.fail(
            f"{key}.step",
            f"high - low must be a multiple of step ({step}); "
            f"use e.g. high = {_last_step(low, high, step)}",
        )
    return ParamSpec(name=name, type=kind, low=low, high=high, log=log, step=step)


def _scaled_to_batch(
    check: Checker, param: ParamSpec, reference: Any, table: dict[str, Any], key: str
) -> ParamSpec:
    """`learning_rate = { ..., scale_with_batch = 128 }`: the range is for batch size 128.

    The linear scaling rule (the Tuning Playbook's advice for a fixed batch size): with
    `batch_size = 256` the range is doubled. So the learning rate range travels with the batch
    size the study fixes, and the batch size is not tuned for accuracy.
    """
    reference = check.typed(reference, int, f"{key}.scale_with_batch")
    if reference < 1:
        raise check.fail(f"{key}.scale_with_batch", f"must be a batch size >= 1, got {reference}")
    if param.type != "float" or param.step is not None:
        raise check.fail(f"{key}.scale_with_batch", "needs a float range without step")
    batch = table.get("batch_size", PARAMETERS["batch_size"].default)
    if isinstance(batch, dict):
        raise check.fail(
            f"{key}.scale_with_batch",
            "needs a fixed batch_size (e.g. batch_size = 128): the range is scaled to it",
        )
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        return param  # batch_size's own check says what is wrong with it
    factor = batch / reference
    return ParamSpec(
        name=param.name,
        type="float",
        low=param.low * factor,
        high=param.high * factor,
        log=param.log,
    )


def _last_step(low: float, high: float, step: float) -> float:
    """The largest low + k * step <= high, in decimal arithmetic as Optuna computes it."""
    d_low, d_high, d_step = (Decimal(str(value)) for value in (low, high, step))
    return type(high)((d_high - d_low) // d_step * d_step + d_low)


def validate_grid(check: Checker, space: dict[str, ParamSpec]) -> None:
    """The grid sampler needs finite values, and a grid small enough to list."""
    for param in space.values():
        if param.type == "float" and param.step is None:
            raise check.fail(
                f"[space].{param.name}",
                "the grid sampler needs finite values: use choices or a float range with step",
            )
        if param.type == "int" and param.log:
            raise check.fail(f"[space].{param.name}", "the grid sampler cannot use log ranges")
    points = grid_size(space)
    if points > MAX_GRID_POINTS:
        # Steps of 1e-300 make counts of hundreds of digits; say how many digits instead.
        count = str(points) if points < 10**18 else f"about 10**{int(math.log10(points))}"
        raise check.fail(
            "[space]",
            f"the grid has {count} points, more than the grid sampler's limit of "
            f"{MAX_GRID_POINTS}: use fewer choices or larger steps",
        )
