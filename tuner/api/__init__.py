"""tuner from Python, for notebooks and scripts: the functions the CLI verbs call.

- `run(study, budget=..., trials=...)` -> `RunSummary`; `trials(study)` -> a pandas DataFrame
- `best(study)` -> `BestConfig`; `retrain(study)` -> `SavedModel`; `write_report(study)` -> path
- `load_model(path)` -> (module, card); `predict(model, images)`; `visualize(model)` -> path

A study is a study file's path, a study's name, or a dict in the study file's structure,
validated by the same checks. Every user mistake raises `tuner.errors.TunerError` with the
one-line message the CLI prints. docs/python.md shows a whole session.
"""

from tuner.api.run import run
from tuner.api.study import StudyLike, StudySource, stored_study_name, studies_dir, study_source
from tuner.api.table import trials
from tuner.api.trained import (
    SavedModel,
    best,
    load_model,
    predict,
    retrain,
    visualize,
    write_report,
)

__all__ = [
    "SavedModel",
    "StudyLike",
    "StudySource",
    "best",
    "load_model",
    "predict",
    "retrain",
    "run",
    "stored_study_name",
    "studies_dir",
    "study_source",
    "trials",
    "visualize",
    "write_report",
]
