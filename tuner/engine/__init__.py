"""Training one model: device and precision policy, the model families, augmentation, the loop.

The names callers use live here; `device` decides where and how to train, `loading` puts a
study's split on the device, `families` freezes and groups a built model's parameters by its
family's stages (the families themselves are `tuner.families`), `model` counts parameters,
`pretrained` loads weights, `augment` transforms batches, `train` runs the loop (`fit`).

Each name is imported on first use (PEP 562), so `tuner --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ("PRECISIONS", "DeviceData", "EngineOptions", "available_cpus", "pick_device", "to_device"),
        "device",
    ),
    "build_model": "families",
    "count_parameters": "model",
    "load_device_data": "loading",
    "prepare_model": "pretrained",
    **dict.fromkeys(
        (
            "BatchCallback",
            "DivergedError",
            "EpochResult",
            "SliceResult",
            "StopCheck",
            "TrainingStopped",
            "classify",
            "evaluate",
            "fit",
        ),
        "train",
    ),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
