"""Families from code outside tuner: a build function in a file or a module, or an entry point.

A study names one in `[model].family`:

- `"models.py:build"`: a function in a Python file (relative to the study file; the spec
  stores it absolute, with the file's SHA-256). Naming a file runs it, as running it would.
- `"package.module:build"`: a function in an importable module.
- `"NAME"`: an entry point of group `tuner.families` that an installed package declares (a
  build function, or a whole `Family`).

The function is `build(params: dict, input_shape: (C, H, W), num_classes: int) -> nn.Module`;
`params` holds the trial's training values and the family's own [space] parameters. Each
becomes one `Family` (`family_from_code`), so everything that asks the registry works on it:
its stages are its conv layers, found by walking the module, and its head is its last linear
layer. Every problem is a TunerError of one line (`dry_run` checks a network before a study
runs; the spec adds the study file and `[model].family`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from tuner.errors import TunerError
from tuner.families.family import Family, Shape

if TYPE_CHECKING:
    from torch import nn

    from tuner.config import TrialConfig

ENTRY_POINT_GROUP = "tuner.families"
# The training values a build function may read besides its own parameters (`dropout`...).
TRAINING_PARAMS = (
    "learning_rate",
    "batch_size",
    "dropout",
    "weight_decay",
    "label_smoothing",
    "optimizer",
    "momentum",
)
REFERENCE = re.compile(r"(?P<target>.+):(?P<attribute>[A-Za-z_]\w*)")
MODULE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
MAX_MESSAGE = 200  # characters of the user's own exception message kept in ours


@dataclass(frozen=True)
class Reference:
    """`target:attribute`, where target is a Python file (ends in .py) or a module name."""

    target: str
    attribute: str

    @property
    def is_file(self) -> bool:
        return self.target.endswith(".py")

    def __str__(self) -> str:
        return f"{self.target}:{self.attribute}"


def parse_reference(value: str) -> Reference | None:
    """The reference `value` is (`file.py:function` or `package.module:function`), or None."""
    found = REFERENCE.fullmatch(value)
    if found is None or found["target"] == "timm":
        return None
    reference = Reference(found["target"], found["attribute"])
    if not reference.is_file and MODULE_NAME.fullmatch(reference.target) is None:
        return None
    return reference


def entry_point_names() -> list[str]:
    """The names installed packages register in the `tuner.families` group."""
    return sorted(
        {point.name for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    )


def is_code_family(value: str) -> bool:
    """Whether `value` names a family from code: a reference or an installed entry point."""
    return parse_reference(value) is not None or value in entry_point_names()


def absolute_reference(value: str, base: Path) -> str:
    """`value` with a relative file made absolute from `base` (the study file's folder)."""
    reference = parse_reference(value)
    if reference is None or not reference.is_file:
        return value
    path = Path(reference.target).expanduser()
    return f"{path if path.is_absolute() else (base / path).resolve()}:{reference.attribute}"


def file_sha256(path: Path) -> str:
    """SHA-256 of a family's Python file; TunerError when it is gone."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise TunerError(f"{path}: no such file") from None
    except OSError as exc:
        raise TunerError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def family_from_code(name: str) -> Family | None:
    """The family `name` names in code (importing it), or None when it names none."""
    reference = parse_reference(name)
    if reference is not None:
        return _function_family(name, _load(reference), str(reference), reference)
    points = [p for p in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if p.name == name]
    if not points:
        return None
    try:
        loaded = points[0].load()
    except Exception as exc:  # the package's own import failed: its message, on one line
        raise TunerError(
            f"entry point {name!r} ({points[0].value}): importing it raised {_said(exc)}"
        ) from None
    if isinstance(loaded, Family):
        return loaded
    shown = f"entry point {name!r} ({points[0].value})"
    return _function_family(name, _callable(loaded, shown), shown, None)


class MissingParameter(KeyError):
    """A build function read a parameter the study's [space] does not declare."""


class Params(dict):
    """The `params` a build function gets; a missing name raises MissingParameter."""

    def __missing__(self, key: str) -> Any:
        raise MissingParameter(key)


def build_params(config: TrialConfig) -> Params:
    """The trial's training values and the family's own [space] parameters, by name."""
    values = {name: getattr(config, name) for name in TRAINING_PARAMS}
    return Params({**values, **dict(config.model_params)})


def dry_run(family: Family, config: TrialConfig, input_shape: Shape, num_classes: int) -> None:
    """Build `config`'s network and run a batch of 2 random images through it.

    Raises TunerError (what went wrong, in one line) unless the output is (2, num_classes).
    """
    import torch

    model = family.build(config, input_shape, num_classes)
    shape = "x".join(map(str, input_shape))
    try:
        with torch.no_grad():
            output = model(torch.randn(2, *input_shape))
    except Exception as exc:
        raise TunerError(
            f"{family.name}: the network's forward pass on a batch of 2 {shape} images "
            f"raised {_said(exc)}"
        ) from None
    found = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if found != (2, num_classes):
        raise TunerError(
            f"{family.name}: the network's output for a batch of 2 {shape} images is {found}; "
            f"it must be (2, {num_classes}): one score per class"
        )


def _function_family(
    name: str, build: Callable[..., Any], shown: str, reference: Reference | None
) -> Family:
    """A Family around a user's build function (file references checked against their hash)."""

    def build_model(config: TrialConfig, input_shape: Shape, num_classes: int) -> nn.Module:
        from torch import nn

        if reference is not None and reference.is_file and config.family_sha256:
            _check_unchanged(Path(reference.target), config.family_sha256)
        try:
            model = build(build_params(config), tuple(input_shape), num_classes)
        except MissingParameter as exc:
            raise TunerError(
                f"{shown}: build reads params[{exc.args[0]!r}], which [space] does not declare"
            ) from None
        except TunerError:
            raise
        except Exception as exc:
            raise TunerError(f"{shown}: build raised {_said(exc)}") from None
        if not isinstance(model, nn.Module):
            raise TunerError(
                f"{shown}: build returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model

    return Family(
        name=name,
        build=build_model,
        stages=_conv_layers,
        head=_last_linear,
        adaptation=lambda shape: f"as the build function made it for {'x'.join(map(str, shape))}",
    )


def _load(reference: Reference) -> Callable[..., Any]:
    """The function a reference names, its file or module run (imported) once per content."""
    if reference.is_file:
        path = Path(reference.target)
        digest = file_sha256(path)
        module = _run_file(path, digest)
    else:
        try:
            module = importlib.import_module(reference.target)
        except ModuleNotFoundError as exc:
            raise TunerError(
                f"{reference}: no module {exc.name!r} (is it installed or on PYTHONPATH?)"
            ) from None
        except Exception as exc:
            raise TunerError(f"{reference}: importing it raised {_said(exc)}") from None
    if not hasattr(module, reference.attribute):
        where = "the file" if reference.is_file else "the module"
        raise TunerError(f"{reference}: {where} has no {reference.attribute!r}")
    return _callable(getattr(module, reference.attribute), str(reference))


def _run_file(path: Path, digest: str) -> ModuleType:
    """Run a family's file as a module; sys.modules keeps it under a name of its content."""
    name = f"tuner_family_{digest[:16]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TunerError(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as importing does: the file's own dataclasses need it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise TunerError(f"{path}: running it raised {_said(exc)}") from None
    return module


def _callable(value: Any, shown: str) -> Callable[..., Any]:
    if not callable(value):
        raise TunerError(f"{shown}: is {type(value).__name__}, not a function")
    return value


def _check_unchanged(path: Path, recorded: str) -> None:
    """Refuse a family file whose content is not the one the configuration was tuned with."""
    if file_sha256(path) != recorded:
        raise TunerError(
            f"{path}: changed since this configuration was tuned (SHA-256 differs from "
            f"{recorded[:12]}...); restore the file, or tune again with the new one"
        )


def _conv_layers(model: nn.Module) -> list[nn.Module]:
    """A model's conv layers in module order: what freezing and `tuner visualize` act on."""
    from torch import nn

    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def _last_linear(model: nn.Module) -> nn.Module:
    """The classifier: the model's last linear layer (the model itself when it has none)."""
    from torch import nn

    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else model


def _said(exc: BaseException) -> str:
    """`Type: message` of an exception raised by the user's code, on one short line."""
    message = " ".join(str(exc).split())
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 3] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
