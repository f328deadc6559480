"""The [model] table: the network family, pretrained weights, freezing, the backbone's rate.

`family`, `freeze` and `backbone_learning_rate` are fixed here or sampled in [space] (one place,
not both); `pretrained` is a local weights file (its tensors are checked against the families'
shapes in `tuner.search.preflight`), loaded by trials of the families that take weights.
Parameters only some families have (`tuner.families`: the seed CNN's `filters`...) are refused
as sampled when no family choice has them, since they would change nothing. A family from code
(`tuner.families.user`: "models.py:build", a module, an entry point; or "timm:NAME") is named in
[model].family only; a file is stored absolute, with its SHA-256, and is not run here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuner.checking import Checker, shown
from tuner.errors import TunerError
from tuner.families import (
    CODE_FAMILIES,
    FAMILIES,
    FREEZE_RULE,
    SEED_CNN,
    family_names,
    family_parameters,
    is_family_name,
    is_freeze,
)
from tuner.families.user import absolute_reference, file_sha256, parse_reference
from tuner.spec.schema import ModelSpec, ParamDomain, ParamSpec

MODEL_PARAMETERS: dict[str, ParamDomain] = {
    "family": ParamDomain(
        str, SEED_CNN, is_family_name, f"one of {family_names()}, or {CODE_FAMILIES}"
    ),
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
            if name == "family":
                value = absolute_reference(value, check.path.parent)  # as for pretrained
            params[name] = ParamSpec(name=name, type="fixed", value=value)
    return params


def parse_model(
    check: Checker, model_table: dict[str, Any], space: dict[str, ParamSpec], sampler: str
) -> ModelSpec:
    """Check [model] against the parsed space (which holds the model parameters by now)."""
    family = space.get("family")
    families = [SEED_CNN] if family is None else _choices(family)
    from_code = [name for name in families if name not in FAMILIES]  # [model]'s (params.py)
    digest = _family_sha256(check, from_code[0]) if from_code else ""
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
        return ModelSpec(family_sha256=digest)
    if from_code and not from_code[0].startswith("timm:"):
        raise check.fail(
            "[model].pretrained", "a build function loads its own weights; remove pretrained"
        )
    if not from_code and not any(FAMILIES[name].pretrained for name in families):
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
    return ModelSpec(pretrained=str(path), family_sha256=digest)


def _family_sha256(check: Checker, family: str) -> str:
    """The SHA-256 of a family's Python file (the family a trial records); "" for others."""
    reference = parse_reference(family)
    if reference is None or not reference.is_file:
        return ""
    try:
        return file_sha256(Path(reference.target))
    except TunerError as exc:
        raise check.fail("[model].family", str(exc)) from None


def _choices(param: ParamSpec) -> list[Any]:
    return [param.value] if param.is_fixed else list(param.choices)


def _owned_by(names: tuple[str, ...] | list[str], quote: bool = False) -> str:
    return ", ".join(repr(name) if quote else name for name in names)
