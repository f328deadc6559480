"""Training: one model, one config, one device -> a stream of per-epoch results.

Knows nothing of Optuna. The data lives on the training device as uint8 tensors; batches are
index permutations of it, normalised on the fly, so no per-sample Python runs per epoch. Where
and how to train (device, threads, precision, channels_last) is decided before `fit` starts,
in `tuner.engine.device`; `fit` itself is the plain loop: batches, steps, validation, yield.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from tuner.config import TrialConfig
from tuner.engine.checkpoint import TrainingState, capture_rng, restore_rng
from tuner.engine.device import MEMORY_FORMAT, DeviceData, EngineOptions
from tuner.engine.families import param_groups

# Evaluation batch size by device type: big batches keep a GPU busy, while on CPU a layer's
# activations for 128 images stay in the L3 cache (measured in bench/RESULTS.md).
EVAL_BATCH_SIZE = {"cuda": 1024, "cpu": 128}
# A mean cross-entropy this large is no longer training: a uniform guess over C classes scores
# log(C) (under 7 for 1,000 classes). AdamW's normalised steps can keep an exploding loss finite
# (~1e19 at lr=1e6), so a finite-but-absurd loss counts as diverged too.
DIVERGED_LOSS = 1e4
# Which weights the model holds when `fit` ends: its best epoch by validation loss (tuning), or
# its last epoch (retraining for a fixed number of epochs, where nothing is held out).
KEEP = ("best", "last")
# `fit`'s on_batch progress hook runs at most this often (and at every epoch's end).
PROGRESS_SECONDS = 0.5
# Precision fit trains in when the caller passes no options: fp32, already decided.
FP32 = EngineOptions(precision="fp32")

# Validation images an in-epoch report evaluates: a fixed subset keeps each report cheap (the
# full validation set is evaluated at every epoch's end).
SLICE_VAL_IMAGES = 1000

BatchCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]
# Called at each epoch's end with the state to resume from; the state holds the live tensors
# (model, optimizer), so it must be saved before the callback returns.
CheckpointCallback = Callable[[TrainingState], None]


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int  # 1-based
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall time of this epoch, training and validation
    improved: bool  # validation loss improved (with keep="best": the weights the model keeps)


@dataclass(frozen=True)
class SliceResult:
    """Validation metrics after `part` of `parts` equal slices of an epoch's training data."""

    epoch: int  # 1-based
    part: int  # 1 .. parts - 1 (the last slice ends the epoch: an EpochResult)
    parts: int
    val_loss: float
    val_accuracy: float  # on the first SLICE_VAL_IMAGES validation images
    val_images: int


SliceCallback = Callable[[SliceResult], None]


class TrainingStopped(Exception):
    """The caller's `should_stop` said stop, inside epoch `epoch` (a deadline, not a failure)."""

    def __init__(self, epoch: int, batch: int) -> None:
        super().__init__(f"stopped in epoch {epoch} at batch {batch}")
        self.epoch = epoch
        self.batch = batch


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run cannot recover."""

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(f"training loss is {loss} at epoch {epoch} (diverged)")
        self.epoch = epoch
        self.loss = loss


def make_optimizer(model: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    """AdamW or SGD with momentum, as the config says, as one fused kernel per step.

    The fused kernels compute the same update as the default per-parameter loop, which runs a
    dozen small ops per parameter tensor: 6-13% of a small CNN's step on CPU, measured.
    """
    fused = all(p.device.type in ("cpu", "cuda") for p in model.parameters())
    # Frozen parameters stay out; the head and backbone may have their own learning rates.
    groups = param_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.momentum > 0,
            fused=fused,
        )
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused
    )


def classify(
    model: nn.Module,
    data: DeviceData,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    options: EngineOptions = FP32,
) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy loss of `model` on uint8 `images`, and its predicted classes."""
    model.eval()
    device = images.device
    batch_size = batch_size or EVAL_BATCH_SIZE.get(device.type, 1024)
    total_loss = torch.zeros((), device=device)
    predicted = []
    with torch.inference_mode(), options.autocast(device):
        for start in range(0, len(labels), batch_size):
            batch = data.normalise(images[start : start + batch_size])
            logits = model(batch).float()
            total_loss += F.cross_entropy(
                logits, labels[start : start + batch_size], reduction="sum"
            )
            predicted.append(logits.argmax(dim=1))
    predictions = torch.cat(predicted) if predicted else labels.new_empty(0)
    return total_loss.item() / max(1, len(labels)), predictions


def evaluate(
    model: nn.Module,
    data: DeviceData,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    options: EngineOptions = FP32,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `model` on uint8 `images`."""
    loss, predictions = classify(model, data, images, labels, batch_size, options)
    return loss, (predictions == labels).sum().item() / max(1, len(labels))


def fit(
    model: nn.Module,
    data: DeviceData,
    config: TrialConfig,
    device: torch.device,
    options: EngineOptions = FP32,
    keep: Literal["best", "last"] = "best",
    on_batch: BatchCallback | None = None,
    should_stop: StopCheck | None = None,
    slices: int = 1,
    on_slice: SliceCallback | None = None,
    resume: TrainingState | None = None,
    on_checkpoint: CheckpointCallback | None = None,
) -> Iterator[EpochResult]:
    """Train `model` on `data`, yielding an `EpochResult` after every epoch.

    Stops early when validation loss has not improved for `config.patience` epochs (0: never).
    When the generator ends (finished, early-stopped, or closed by the caller) the model holds
    the weights of its best epoch by validation loss (`keep="best"`) or of its last finished
    epoch (`keep="last"`). Raises DivergedError on a NaN/inf loss. `options` must be resolved
    (`EngineOptions.resolve`): they choose precision and compilation, never the results'
    meaning. `on_batch(done, per_epoch)` reports progress within an epoch, at most every
    PROGRESS_SECONDS of wall time (from the epoch's first batch) and once at each epoch's end.

    `should_stop()` is polled before every batch (keep it cheap); when it says True, `fit`
    raises TrainingStopped. With `slices` > 1 each epoch's shuffled data is cut into that many
    equal slices and `on_slice` gets the validation metrics (on a fixed subset of
    SLICE_VAL_IMAGES images) after each but the last, so a caller can judge a model on part of
    an epoch's data; an exception raised by `on_slice` ends `fit` like any other.

    `on_checkpoint(state)` gets the run's state at each epoch's end, before that epoch's
    result is yielded. `fit(..., resume=state)` with the same model, data and config continues
    after `state.epoch` exactly as the run that saved it would have: the same batches, dropout
    masks, augmentations and optimizer steps, so the same results (bit for bit on one device
    with deterministic kernels); only the epochs after `state.epoch` are yielded.
    """
    if not options.resolved:
        raise ValueError("fit needs a decided precision: pass EngineOptions.resolve(...)'s result")
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, not {keep!r}")
    generator = torch.Generator(device=device).manual_seed(config.seed)
    augment = _augmenter(config)
    # Crop padding is black, a 0 pixel normalised, as torchvision's RandomCrop pads raw images.
    black = -data.shift
    model.to(device, memory_format=MEMORY_FORMAT)
    forward = torch.compile(model) if options.compile else model
    optimizer = make_optimizer(model, config)
    # Cosine decay over the epoch budget: a robust default that rarely needs its own tuning.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_epochs)
    train_count = len(data.train_labels)
    batches_per_epoch = math.ceil(train_count / config.batch_size)
    # The batch after which slice k of `slices` ends (the last one ends the epoch).
    slice_ends = (
        {math.ceil(k * batches_per_epoch / slices): k for k in range(1, slices)}
        if on_slice is not None
        else {}
    )
    slice_images = min(SLICE_VAL_IMAGES, len(data.val_labels))

    best_loss, best_epoch = math.inf, 0
    best_state = copy.deepcopy(model.state_dict()) if keep == "best" else None
    epochs_without_improvement = 0
    history: list[dict] = []  # every finished epoch's result, for checkpoints
    if resume is not None:
        _restore(resume, model, optimizer, scheduler, generator)
        if best_state is not None and resume.best_model is not None:
            best_state = {k: v.to(device) for k, v in resume.best_model.items()}
        best_loss, best_epoch = resume.best_loss, resume.best_epoch
        epochs_without_improvement = resume.epochs_without_improvement
        history = list(resume.history)
    try:
        for epoch in range(len(history) + 1, config.max_epochs + 1):
            if config.patience and epochs_without_improvement >= config.patience:
                break
            started = time.perf_counter()
            next_report = started  # the first batch shows at once that a new epoch began
            model.train()
            total_loss = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            order = torch.randperm(train_count, device=device, generator=generator)
            for batch, start in enumerate(range(0, train_count, config.batch_size), start=1):
                if should_stop is not None and should_stop():
                    raise TrainingStopped(epoch, batch)
                indices = order[start : start + config.batch_size]
                if len(indices) < 2 and config.batch_norm:
                    continue  # BatchNorm cannot train on a batch of one
                images = data.normalise(data.train_images[indices])
                targets = data.train_labels[indices]
                if augment is not None:
                    images, targets = augment(
                        images,
                        targets,
                        config.augment,
                        data.num_classes,
                        generator=generator,
                        black=black,
                    )
                with options.autocast(device):
                    logits = forward(images)
                    loss = F.cross_entropy(
                        logits.float(), targets, label_smoothing=config.label_smoothing
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if options.precision == "bf16":
                    _zero_nonfinite_gradients(model)
                optimizer.step()
                # Accumulate on the device: a .item() per step would stall a GPU every batch.
                total_loss += loss.detach() * len(indices)
                hard_targets = targets if targets.ndim == 1 else targets.argmax(dim=1)
                correct += (logits.detach().argmax(dim=1) == hard_targets).sum()
                # A clock read per batch, no device sync: the hook sees batches queued, which
                # on CUDA may run a little ahead of the ones computed.
                if on_batch is not None and batch < batches_per_epoch:
                    now = time.perf_counter()
                    if now >= next_report:
                        on_batch(batch, batches_per_epoch)
                        next_report = now + PROGRESS_SECONDS
                if batch in slice_ends and on_slice is not None:
                    if should_stop is not None and should_stop():
                        raise TrainingStopped(epoch, batch + 1)
                    val_loss, val_accuracy = evaluate(
                        forward,
                        data,
                        data.val_images[:slice_images],
                        data.val_labels[:slice_images],
                        options=options,
                    )
                    model.train()
                    on_slice(
                        SliceResult(
                            epoch, slice_ends[batch], slices, val_loss, val_accuracy, slice_images
                        )
                    )
            scheduler.step()

            train_loss = total_loss.item() / train_count
            if not math.isfinite(train_loss) or train_loss > DIVERGED_LOSS:
                raise DivergedError(epoch, train_loss)
            if on_batch is not None:
                on_batch(batches_per_epoch, batches_per_epoch)
            val_loss, val_accuracy = evaluate(
                forward, data, data.val_images, data.val_labels, options=options
            )
            if not math.isfinite(val_loss):
                raise DivergedError(epoch, val_loss)

            improved = val_loss < best_loss
            if improved:
                best_loss, best_epoch = val_loss, epoch
                if keep == "best":
                    best_state = copy.deepcopy(model.state_dict())
                epochs_without_improvement = 0
            else:
                epochs_without_improvement += 1
            result = EpochResult(
                epoch=epoch,
                train_loss=train_loss,
                train_accuracy=correct.item() / train_count,
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                seconds=time.perf_counter() - started,
                improved=improved,
            )
            history.append(dataclasses.asdict(result))
            if on_checkpoint is not None:
                on_checkpoint(
                    TrainingState(
                        epoch=epoch,
                        model=model.state_dict(),
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(),
                        rng=capture_rng(generator),
                        history=tuple(history),
                        best_loss=best_loss,
                        best_epoch=best_epoch,
                        epochs_without_improvement=epochs_without_improvement,
                        best_model=best_state,
                    )
                )
            yield result
    finally:
        if best_state is not None:
            model.load_state_dict(best_state)


def _zero_nonfinite_gradients(model: nn.Module) -> None:
    """Set NaN/inf gradient entries to 0 before a bf16 optimizer step.

    PyTorch 2.14's CPU bf16 backward of a 5x5 depthwise convolution on a 1x1 feature map (a
    mobilenet_v3_small stage on 28 px or smaller images) now and then leaves one NaN in the
    weight gradient, at a kernel tap that only ever meets zero padding: it is uninitialised
    memory, not a gradient (the loss and every other entry are unchanged, and which run hits it
    varies). Stepped in, that NaN stays in the weights; the bf16 forward never reads the tap,
    but an fp32 forward (predict, export) multiplies it by the padding's 0 and every output
    becomes NaN. A real divergence shows in the loss, which `fit` checks each epoch; the true
    gradient of a tap that only sees padding is 0.
    """
    for parameter in model.parameters():
        if parameter.grad is not None:
            torch.nan_to_num_(parameter.grad, nan=0.0, posinf=0.0, neginf=0.0)


def _restore(
    state: TrainingState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> None:
    """Put a run's saved state back into the freshly built model, optimizer and schedule."""
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    # The loaded moments are contiguous, while channels_last parameters made theirs in that
    # layout; the fused optimizers pair elements by memory position, not by index, so a moment
    # must share its parameter's layout. The copies also keep `state` itself unchanged.
    for group in optimizer.param_groups:
        for param in group["params"]:
            moments = optimizer.state.get(param, {})
            for key, value in moments.items():
                if isinstance(value, torch.Tensor):
                    like = param if value.shape == param.shape else value
                    moments[key] = torch.empty_like(like).copy_(value)
    scheduler.load_state_dict(state.scheduler)
    restore_rng(state.rng, generator)


def _augmenter(config: TrialConfig) -> Callable | None:
    """The batch augmentation `config` asks for, or None."""
    if not config.augment.enabled:
        return None
    from tuner.engine.augment import augment_batch  # only studies that augment pay the import

    return augment_batch
