"""tuner: hyperparameter tuning for CNN image classifiers on Optuna and PyTorch.

From Python (docs/python.md): `tuner.run`, `tuner.trials`, `tuner.best`, `tuner.retrain`,
`tuner.write_report`, `tuner.visualize`, `tuner.load_model`, `tuner.predict` (from `tuner.api`),
and `tuner.TunerError`, the one exception they raise for a user's mistake.

Each is imported on first use (PEP 562): `import tuner` loads neither torch nor Optuna, so a
notebook, the CLI's `--help` and a worker process start fast. (`report` is the name of the
subpackage of reports, which Python sets on this package once imported: hence `write_report`.)
"""

from __future__ import annotations

import importlib
from typing import Any

from tuner.errors import TunerError

__version__ = "0.1.0"

# public name -> module it lives in
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        (
            "run",
            "trials",
            "best",
            "retrain",
            "write_report",
            "visualize",
            "load_model",
            "predict",
            "SavedModel",
        ),
        "tuner.api",
    ),
    "RunSummary": "tuner.runner.summary",
    "BestConfig": "tuner.trained.export",
    "ModelCard": "tuner.trained.card",
    "Prediction": "tuner.trained.predict",
}

__all__ = ["TunerError", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
