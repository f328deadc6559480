"""Trained models: a study's best configuration as a file, retrained, saved with its card, used.

The names callers need, from the modules that do the work:

- export: `BestConfig`, `best_config` (a study's best trial), `read_best`, `render` (TOML/JSON)
- retrain: `retrain_model`, `save_retrained` (model, card, retrain.html), `epochs_for`
- card: `ModelCard`, `load_card`, `load_model`, `save_model`, `model_paths`
- predict: `Prediction`, `predict_files`, `read_image`, `exit_code`, `load_predictor`
- model_export: `export_model` (ONNX or PT2 file), `load_exported`

Each name is imported on first use (PEP 562): `import tuner.trained` loads nothing heavy, and
a CLI verb loads only what it uses (`retrain_model` alone pulls in Plotly and the engine).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> (module, name there). Not `retrain`: that is the submodule's own name.
_EXPORTS: dict[str, tuple[str, str]] = {
    **{n: ("export", n) for n in ("BestConfig", "best_config", "read_best", "render")},
    "retrain_model": ("retrain", "retrain"),
    "save_retrained": ("retrain", "save"),
    "epochs_for": ("retrain", "epochs_for"),
    **{n: ("card", n) for n in ("ModelCard", "load_card", "load_model", "save_model")},
    "model_paths": ("card", "model_paths"),
    **{n: ("predict", n) for n in ("Prediction", "predict_files", "read_image", "exit_code")},
    "load_predictor": ("predict", "load_predictor"),
    **{n: ("model_export", n) for n in ("export_model", "load_exported")},
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
