"""The [model] table: the network family, pretrained weights, freezing, the backbone's rate.

`family`, `freeze` and `backbone_learning_rate` are fixed here or sampled in [space] (one place,
not both); `pretrained` is a local weights file (its tensors are checked against the families'
shapes in `tuner.search.preflight`), loaded by trials of the families that take weights.
Parameters only some families have (`tuner.families`: the seed CNN's `filters`...) are refused
as sampled when no family choice has them, since they would change nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.checking import Checker, shown
from tuner.families import (
    FAMILIES,
    FREEZE_RULE,
    SEED_CNN,
    family_names,
    family_parameters,
    is_freeze,
)
from tuner.spec.schema import ModelSpec, ParamDomain, ParamSpec

MODEL_PARAMETERS: dict[str, ParamDomain] = {
    "family": ParamDomain(str, SEED_CNN, lambda v: v in FAMILIES, "one of " + family_names()),
    "freeze": ParamDomain(str, "none", is_freeze, FREEZE_RULE),
    "backbone_learning_rate": ParamDomain(
        float, 0.0, lambda v: v >= 0, "a float >= 0 (0 = the head's learning_rate)"
    ),
}


def model_params(check: Checker, model_table: dict[str, Any]) -> dict[str, ParamSpec]:
    """The fixed values [model] gives for `family`, `freeze`, `backbone_learning_rate`."""
    check.no_unknown(model_table, {*MODEL_PARAMETERS, "pretrained"}, "[model].")
    params = {}
    for name, domain in MODEL_PARAMETERS.items():
        if name in model_table:
            key = f"[model].{name}"
            value = check.typed(model_table[name], domain.kind, key)
            if not domain.check(value):
                raise check.fail(key, f"must be {domain.allowed}, got {shown(value)}")
            params[name] = ParamSpec(name=name, type="fixed", value=value)
    return params


def parse_model(
    check: Checker, model_table: dict[str, Any], space: dict[str, ParamSpec], sampler: str
) -> ModelSpec:
    """Check [model] against the parsed space (which holds the model parameters by now)."""
    family = space.get("family")
    families = [SEED_CNN] if family is None else _choices(family)
    owners = family_parameters()
    if sampler == "grid" and len(families) > 1:
        sampled = [name for name in owners if not space[name].is_fixed]
        if sampled:
            # GridSampler lists every combination: each other family would train once per
            # value of parameters it does not have.
            raise check.fail(
                f"[space].{sampled[0]}",
                f"the grid sampler cannot sample {_owned_by(owners[sampled[0]])} parameters "
                "together with the family (other families would train the same model once "
                "per value): fix it",
            )
    for name, owned_by in owners.items():
        if not space[name].is_fixed and not set(owned_by) & set(families):
            raise check.fail(
                f"[space].{name}",
                f"only the {_owned_by(owned_by)} family uses it, and family is "
                f"{shown(families)}: fix it or remove it",
            )
    pretrained = model_table.get("pretrained", "")
    pretrained = check.typed(pretrained, str, "[model].pretrained")
    if not pretrained:
        return ModelSpec()
    if not any(FAMILIES[name].pretrained for name in families):
        raise check.fail(
            "[model].pretrained",
            "pretrained weights are for torchvision families "
            f"({', '.join(repr(n) for n, f in FAMILIES.items() if f.pretrained)}); "
            f"family is {_owned_by(families, quote=True)}",
        )
    path = Path(pretrained).expanduser()
    if not path.is_absolute():
        path = (check.path.parent / path).resolve()  # relative to the study file
    # The file's tensors are checked against each family's shapes in the pre-flight step.
    return ModelSpec(pretrained=str(path))


def _choices(param: ParamSpec) -> list[Any]:
    return [param.value] if param.is_fixed else list(param.choices)


def _owned_by(names: tuple[str, ...] | list[str], quote: bool = False) -> str:
    return ", ".join(repr(name) if quote else name for name in names)
