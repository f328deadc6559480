"""The [model] table: the network family, pretrained weights, freezing, the backbone's rate.

`family`, `freeze` and `backbone_learning_rate` are fixed here or sampled in [space] (one place,
not both); `pretrained` is a local weights file, checked when the study file is read, and
loaded by trials of torchvision families (seed-cnn trials train from scratch).
Parameters that only the seed CNN has are refused as sampled when no family choice is the
seed CNN, since they would change nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tuner.config import TrialConfig
from tuner.engine.families import FAMILIES, FREEZE_RULE, SEED_CNN, is_freeze
from tuner.engine.pretrained import WeightsError, fitting_tensors, read_weights
from tuner.spec.checker import Checker, shown
from tuner.spec.schema import ModelSpec, ParamDomain, ParamSpec

MODEL_PARAMETERS: dict[str, ParamDomain] = {
    "family": ParamDomain(
        str, SEED_CNN, lambda v: v in FAMILIES, "one of " + ", ".join(map(repr, FAMILIES))
    ),
    "freeze": ParamDomain(str, "none", is_freeze, FREEZE_RULE),
    "backbone_learning_rate": ParamDomain(
        float, 0.0, lambda v: v >= 0, "a float >= 0 (0 = the head's learning_rate)"
    ),
}
# Parameters of the seed CNN only: sampled only in trials whose family is the seed CNN.
SEED_CNN_PARAMETERS = ("kernel_size", "num_blocks", "filters", "fc_units", "batch_norm")
# Any shape will do to see which tensors fit: only the stem depends on the input.
_PROBE_SHAPE = (3, 32, 32)


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
    if sampler == "grid" and len(families) > 1:
        sampled = [name for name in SEED_CNN_PARAMETERS if not space[name].is_fixed]
        if sampled:
            # GridSampler lists every combination: each other family would train once per
            # value of parameters it does not have.
            raise check.fail(
                f"[space].{sampled[0]}",
                "the grid sampler cannot sample seed-cnn parameters together with the family "
                "(other families would train the same model once per value): fix it",
            )
    if SEED_CNN not in families:
        for name in SEED_CNN_PARAMETERS:
            if not space[name].is_fixed:
                raise check.fail(
                    f"[space].{name}",
                    f"only the seed-cnn family uses it, and family is {shown(families)}: "
                    "fix it or remove it",
                )
    pretrained = model_table.get("pretrained", "")
    pretrained = check.typed(pretrained, str, "[model].pretrained")
    if not pretrained:
        return ModelSpec()
    if families == [SEED_CNN]:
        raise check.fail(
            "[model].pretrained",
            "pretrained weights are for torchvision families "
            f"({', '.join(repr(n) for n in FAMILIES if n != SEED_CNN)}); family is 'seed-cnn'",
        )
    path = Path(pretrained).expanduser()
    if not path.is_absolute():
        path = (check.path.parent / path).resolve()  # relative to the study file
    try:
        state = read_weights(path)
        for name in families:
            if name == SEED_CNN:
                continue  # seed-cnn trials train from scratch
            with torch.device("meta"):  # shapes only: no memory, no initialisation time
                model = FAMILIES[name].build(TrialConfig(family=name), _PROBE_SHAPE, 10)
            fitting_tensors(model, name, state)
    except WeightsError as exc:
        raise check.fail("[model].pretrained", f"{path}: {exc}") from None
    return ModelSpec(pretrained=str(path))


def _choices(param: ParamSpec) -> list[Any]:
    return [param.value] if param.is_fixed else list(param.choices)
