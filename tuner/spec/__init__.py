"""Study files (TOML) -> a validated `StudySpec`: the public face of the spec package.

Every problem is reported as a `TunerError` whose one line names the file, the key and what is
allowed, so a typo never reaches storage.

- `schema`: the dataclasses (`StudySpec`, `ParamSpec`, ...) and the tunable `PARAMETERS`
- `parse`: `load_spec`/`parse_spec`, TOML errors, the study name, [training]
- `augment`: the [augment] table and the augmentations' domains (also sampled in [space])
- `params`: the [space] table; `options`: [sampler] and [pruner] against the registry in
  `tuner.search.samplers`; `datasets`: the [dataset] table; `checker`: the message wording
- `objectives`: `metric` (one measure or several) and the [constraints] table
- `find`: `--study NAME_OR_PATH` -> a file
"""

from tuner.spec.checker import MAX_SEED
from tuner.spec.find import find_study_file, list_study_files
from tuner.spec.params import MAX_GRID_POINTS
from tuner.spec.parse import load_spec, parse_spec
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
]
