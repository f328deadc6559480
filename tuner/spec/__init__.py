"""Study files (TOML) -> a validated `StudySpec`: the public face of the spec package.

Every problem is reported as a `TunerError` whose one line names the file, the key and what is
allowed, so a typo never reaches storage.

- `schema`: the dataclasses (`StudySpec`, `ParamSpec`, ...) and the tunable `PARAMETERS`
- `parse`: `read_spec`/`parse_spec`, TOML errors, the study name, [training]
- `augment`: the [augment] table and the augmentations' domains (also sampled in [space])
- `params`: the [space] table; `grid`: counting its grid; `model`: [model] against the family
  registry (`tuner.families`); `options`: the shape of [sampler] and [pruner];
  `datasets`: the [dataset] table (the message wording is `tuner.checking`'s)
- `objectives`: `metric` (one measure or several) and the [constraints] table
- `find`: `--study NAME_OR_PATH` -> a file

These modules load neither torch nor tuner's lower layers. The checks that need torch or Optuna
(sampler and pruner options, pretrained weights) run in one pre-flight step after parsing,
`tuner.search.preflight`; `load_spec` (parse + pre-flight, what callers want before writing to
storage) is served from there on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tuner.checking import MAX_SEED
from tuner.spec.find import find_study_file, list_study_files
from tuner.spec.params import MAX_GRID_POINTS
from tuner.spec.parse import parse_spec, read_spec
from tuner.spec.schema import (
    METRICS,
    PARAMETERS,
    DatasetSpec,
    ParamDomain,
    ParamSpec,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    TrainingSpec,
)

__all__ = [
    "MAX_GRID_POINTS",
    "MAX_SEED",
    "METRICS",
    "PARAMETERS",
    "DatasetSpec",
    "ParamDomain",
    "ParamSpec",
    "PrunerSpec",
    "SamplerSpec",
    "StudySpec",
    "TrainingSpec",
    "find_study_file",
    "list_study_files",
    "load_spec",
    "parse_spec",
    "read_spec",
]

if TYPE_CHECKING:
    from tuner.search.preflight import load_spec


def __getattr__(name: str) -> Any:
    if name != "load_spec":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return importlib.import_module("tuner.search.preflight").load_spec
