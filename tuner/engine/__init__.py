"""Training one model: device and precision policy, the CNN, augmentation, the training loop.

The names callers use live here; `device` decides where and how to train, `model` builds the
network, `augment` transforms batches, `train` runs the loop (`fit`).
"""

from tuner.engine.device import (
    PRECISIONS,
    DeviceData,
    EngineOptions,
    available_cpus,
    pick_device,
    to_device,
)
from tuner.engine.families import FAMILIES, build_model
from tuner.engine.model import build_cnn, count_parameters
from tuner.engine.pretrained import prepare_model
from tuner.engine.train import (
    BatchCallback,
    DivergedError,
    EpochResult,
    SliceResult,
    StopCheck,
    TrainingStopped,
    classify,
    evaluate,
    fit,
)

__all__ = [
    "FAMILIES",
    "PRECISIONS",
    "BatchCallback",
    "DeviceData",
    "DivergedError",
    "EngineOptions",
    "EpochResult",
    "SliceResult",
    "StopCheck",
    "TrainingStopped",
    "available_cpus",
    "build_cnn",
    "build_model",
    "classify",
    "count_parameters",
    "evaluate",
    "fit",
    "pick_device",
    "prepare_model",
    "to_device",
]
