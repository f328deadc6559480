"""Pretrained weights from a local file into a family's backbone: read, match, load, report.

Files are safetensors, or `.pth`/`.pt` read with `torch.load(weights_only=True)` (plain tensors
only; a checkpoint that needs pickled Python objects is refused with how to convert it).
Nothing is downloaded. Tensors load where a parameter of the same name and shape exists,
outside the head (always new); the rest (e.g. a 7x7 RGB stem replaced by a 3x3 gray one, the
old 1000-class head) is skipped and reported.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from tuner.config import TrialConfig
from tuner.engine.families import apply_freeze
from tuner.errors import TunerError
from tuner.families import build_model, get_family

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
CONVERT_HINT = (
    "convert it once, in a trusted Python session: "
    "state = torch.load(path, weights_only=False); state = state.get('state_dict', state) "
    "if it is a dict, else state.state_dict(); "
    "safetensors.torch.save_file(state, 'weights.safetensors')"
)


class WeightsError(ValueError):
    """A weights file that cannot be used; the message says why, without the path."""


@dataclass(frozen=True)
class LoadReport:
    """What loading pretrained weights did: tensors loaded, and the file's tensors skipped."""

    loaded: int
    skipped: tuple[str, ...]

    def summary(self) -> str:
        shown = ", ".join(self.skipped[:6]) + (" ..." if len(self.skipped) > 6 else "")
        return f"{self.loaded} tensors loaded, {len(self.skipped)} skipped" + (
            f" ({shown})" if self.skipped else ""
        )


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, by name. Raises WeightsError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError("no such file" if not path.exists() else "not a file")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(f"unknown weights format {path.suffix!r}; use .safetensors or .pth")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise WeightsError(f"not a readable safetensors file ({_first_line(exc)})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The weights_only unpickler names the Python object it refused to create.
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        if refused:
            raise WeightsError(
                f"a pickle checkpoint holding Python objects ({refused.group(1)}), which a "
                f"weights_only load refuses (unpickling could run code); {CONVERT_HINT}"
            ) from None
        raise WeightsError("not a readable .pth file (neither a state_dict nor a pickle)") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"not a readable .pth file ({_first_line(exc)})") from None
    return _state_dict(state)


def _state_dict(state: object) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping of a loaded .pth (also inside {'state_dict': ...})."""
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
        tensors = {k: v for k, v in state.items() if isinstance(k, str) and torch.is_tensor(v)}
        if tensors:
            # DataParallel saves every name with a "module." prefix.
            return {k.removeprefix("module."): v for k, v in tensors.items()}
    raise WeightsError("holds no state_dict (a mapping of names to tensors)")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def fitting_tensors(
    model: nn.Module, family: str, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The tensors of `state` that fit `model`: same name and shape, not in the head.

    Raises WeightsError when none fits: the file is for another architecture.
    """
    head = get_family(family).head(model)
    head_tensors = {id(t) for t in [*head.parameters(), *head.buffers()]}
    own = model.state_dict(keep_vars=True)
    fitting = {
        name: tensor
        for name, tensor in state.items()
        if name in own and own[name].shape == tensor.shape and id(own[name]) not in head_tensors
    }
    if not fitting:
        raise WeightsError(
            f"no tensor fits a layer of {family} (names or shapes differ everywhere; "
            f"{len(state)} tensors, e.g. {next(iter(state), 'none')!r})"
        )
    return fitting


def load_pretrained(model: nn.Module, family: str, state: dict[str, torch.Tensor]) -> LoadReport:
    """Copy the tensors of `state` that fit `model` into it; report what was skipped."""
    fitting = fitting_tensors(model, family, state)
    model.load_state_dict(fitting, strict=False)
    return LoadReport(loaded=len(fitting), skipped=tuple(sorted(state.keys() - fitting.keys())))


def prepare_model(
    config: TrialConfig, input_shape: tuple[int, int, int], num_classes: int
) -> tuple[nn.Module, LoadReport | None]:
    """The network a trial or retrain trains: built, pretrained weights loaded, frozen.

    Raises TunerError naming the weights file when it cannot be used (the study file was
    checked when it was read; the file may have changed since).
    """
    model = build_model(config, input_shape, num_classes)
    report = None
    if config.pretrained:
        try:
            report = load_pretrained(model, config.family, read_weights(Path(config.pretrained)))
        except WeightsError as exc:
            raise TunerError(f"{config.pretrained}: pretrained weights: {exc}") from None
        log.info(
            "pretrained weights %s into %s: %s", config.pretrained, config.family, report.summary()
        )
    apply_freeze(model, config.family, config.freeze)
    return model, report
