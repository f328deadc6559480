"""A training run's state at an epoch's end, as bytes and back: what resuming a trial needs.

`TrainingState` holds everything `fit` needs to continue as if it had never stopped: the
model's weights, the optimizer's and the learning-rate schedule's state, every random number
generator a step draws from (torch's global one, which dropout uses; CUDA's; numpy's; Python's;
and fit's own generator, which orders the batches and drives augmentation), the epochs
finished with their results, and the best epoch's weights with the early-stopping counters.
tuner trains in fp32 or bf16 autocast, neither of which scales the loss, so there is no AMP
GradScaler state to keep.

`to_bytes` / `from_bytes` are the one format, `tuner-checkpoint/1`:

    MAGIC | SHA-256 of the rest (32 bytes) | JSON length (8 bytes, little-endian) | JSON |
    safetensors

Tensors go in the safetensors part, everything else in the JSON part (nested dicts keep their
int keys and tuples stay tuples, so an optimizer's `state_dict` comes back as it went in).
Nothing is ever unpickled, and `from_bytes` checks the digest before it parses anything: a
truncated or altered checkpoint raises DamagedCheckpoint, never loads half of itself.

Knows nothing of Optuna or of where the bytes are kept (`tuner.search.checkpoints`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

MAGIC = b"tuner-checkpoint/1\n"
_DIGEST = 32
_LENGTH = 8
# Tags of the JSON encoding of nested state: a tensor stored in the safetensors part, a dict
# (kept as key-value pairs so int keys stay ints), a tuple.
_TENSOR, _DICT, _TUPLE = "__tensor__", "__dict__", "__tuple__"

Tensors = dict[str, torch.Tensor]


class DamagedCheckpoint(ValueError):
    """Bytes that are not one whole, unaltered checkpoint of this format."""


@dataclass(frozen=True)
class RngState:
    """Every random number generator a training step draws from."""

    torch: torch.Tensor  # torch's global CPU generator (dropout on CPU, weight init)
    cuda: tuple[torch.Tensor, ...]  # each CUDA device's generator; () without CUDA in use
    numpy: tuple  # np.random.get_state()
    python: tuple  # random.getstate()
    generator: torch.Tensor  # fit's own: the batch order and augmentation


@dataclass(frozen=True)
class TrainingState:
    """The state of a run after `epoch` finished epochs."""

    epoch: int
    model: Tensors
    optimizer: dict[str, Any]  # optimizer.state_dict()
    scheduler: dict[str, Any]  # the learning-rate schedule's state_dict()
    rng: RngState
    history: tuple[dict[str, Any], ...]  # one JSON-ready record per finished epoch
    best_loss: float  # lowest validation loss so far
    best_epoch: int  # the epoch that reached it (0: none yet)
    epochs_without_improvement: int
    best_model: Tensors | None = None  # the best epoch's weights, when the run keeps them


def capture_rng(generator: torch.Generator) -> RngState:
    """The generators' states now; `generator` is fit's own."""
    cuda = tuple(torch.cuda.get_rng_state_all()) if torch.cuda.is_initialized() else ()
    return RngState(
        torch=torch.get_rng_state(),
        cuda=cuda,
        numpy=np.random.get_state(),
        python=random.getstate(),
        generator=generator.get_state(),
    )


def restore_rng(state: RngState, generator: torch.Generator) -> None:
    """Put every generator back as `capture_rng` found it (CUDA only where it was captured)."""
    torch.set_rng_state(state.torch)
    if state.cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(state.cuda):
        torch.cuda.set_rng_state_all(list(state.cuda))
    np.random.set_state(state.numpy)
    random.setstate(state.python)
    generator.set_state(state.generator)


def detached(state_dict: dict[str, torch.Tensor]) -> Tensors:
    """A CPU copy of a module's state_dict that later training steps cannot change."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state_dict.items()}


def to_bytes(state: TrainingState) -> bytes:
    """The checkpoint file's content for `state` (see the module docstring for the layout)."""
    tensors: Tensors = {}
    for prefix, weights in (("model", state.model), ("best", state.best_model or {})):
        for name, tensor in weights.items():
            tensors[f"{prefix}/{name}"] = tensor.detach().to("cpu", copy=True).contiguous()
    tensors["rng/torch"] = state.rng.torch.clone()
    tensors["rng/generator"] = state.rng.generator.clone()
    for index, cuda_state in enumerate(state.rng.cuda):
        tensors[f"rng/cuda/{index}"] = cuda_state.clone()
    numpy_state = list(state.rng.numpy)
    numpy_state[1] = np.asarray(numpy_state[1]).tolist()  # the Mersenne Twister's 624 words
    document = {
        "epoch": state.epoch,
        "history": list(state.history),
        "best_loss": state.best_loss,
        "best_epoch": state.best_epoch,
        "epochs_without_improvement": state.epochs_without_improvement,
        "model": list(state.model),
        "best_model": None if state.best_model is None else list(state.best_model),
        "optimizer": _encode(state.optimizer, tensors),
        "scheduler": _encode(state.scheduler, tensors),
        "rng": {
            "cuda": len(state.rng.cuda),
            "numpy": _encode(tuple(numpy_state), tensors),
            "python": _encode(state.rng.python, tensors),
        },
    }
    text = json.dumps(document, separators=(",", ":")).encode("utf-8")
    rest = len(text).to_bytes(_LENGTH, "little") + text + save_tensors(tensors)
    return MAGIC + hashlib.sha256(rest).digest() + rest


def from_bytes(data: bytes) -> TrainingState:
    """The state `to_bytes` wrote. Raises DamagedCheckpoint on anything else."""
    if not data.startswith(MAGIC):
        raise DamagedCheckpoint(f"not a {MAGIC.decode().strip()} file")
    digest, rest = data[len(MAGIC) : len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST :]
    if hashlib.sha256(rest).digest() != digest:
        raise DamagedCheckpoint("checksum differs (truncated or altered)")
    try:
        length = int.from_bytes(rest[:_LENGTH], "little")
        document = json.loads(rest[_LENGTH : _LENGTH + length].decode("utf-8"))
        tensors = load_tensors(bytes(rest[_LENGTH + length :]))
        numpy_state = list(_decode(document["rng"]["numpy"], tensors))
        numpy_state[1] = np.asarray(numpy_state[1], dtype=np.uint32)
        best_names = document["best_model"]
        return TrainingState(
            epoch=int(document["epoch"]),
            model={name: tensors[f"model/{name}"] for name in document["model"]},
            optimizer=_decode(document["optimizer"], tensors),
            scheduler=_decode(document["scheduler"], tensors),
            rng=RngState(
                torch=tensors["rng/torch"],
                cuda=tuple(tensors[f"rng/cuda/{i}"] for i in range(document["rng"]["cuda"])),
                numpy=tuple(numpy_state),
                python=_decode(document["rng"]["python"], tensors),
                generator=tensors["rng/generator"],
            ),
            history=tuple(document["history"]),
            best_loss=float(document["best_loss"]),
            best_epoch=int(document["best_epoch"]),
            epochs_without_improvement=int(document["epochs_without_improvement"]),
            best_model=None
            if best_names is None
            else {name: tensors[f"best/{name}"] for name in best_names},
        )
    except Exception as exc:  # a digest that matches a malformed body: written by something else
        raise DamagedCheckpoint(f"unreadable content ({type(exc).__name__}: {exc})") from None


def _encode(value: Any, tensors: Tensors) -> Any:
    """`value` as JSON-ready data; its tensors move into `tensors` under new names."""
    if isinstance(value, torch.Tensor):
        name = f"state/{len(tensors)}"
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()
        return {_TENSOR: name}
    if isinstance(value, dict):
        return {_DICT: [[key, _encode(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_encode(item, tensors) for item in value]}
    if isinstance(value, list):
        return [_encode(item, tensors) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a {type(value).__name__}")


def _decode(value: Any, tensors: Tensors) -> Any:
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if isinstance(value, dict):
        (tag, content), *_ = value.items()
        if tag == _TENSOR:
            return tensors[content]
        if tag == _DICT:
            return {key: _decode(item, tensors) for key, item in content}
        if tag == _TUPLE:
            return tuple(_decode(item, tensors) for item in content)
        raise ValueError(f"unknown tag {tag!r}")
    return value
