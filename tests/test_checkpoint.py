"""tuner.engine.checkpoint: a training state as bytes and back, refused when damaged."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tuner.config import TrialConfig
from tuner.engine.checkpoint import (
    MAGIC,
    DamagedCheckpoint,
    TrainingState,
    capture_rng,
    detached,
    from_bytes,
    restore_rng,
    to_bytes,
)
from tuner.engine.train import make_optimizer
from tuner.families import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHAPE = (1, 8, 8)


def parts(optimizer: str):
    """A seed CNN with BatchNorm and dropout, its optimizer, schedule and generator."""
    config = TrialConfig(
        filters=(4, 6), fc_units=8, dropout=0.5, optimizer=optimizer, momentum=0.9, max_epochs=4
    )
    torch.manual_seed(0)
    model = build_model(config, SHAPE, 3)
    opt = make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.max_epochs)
    return model, opt, schedule, torch.Generator().manual_seed(7)


def steps(model, optimizer, schedule, generator, count: int) -> list[float]:
    """Train `count` steps on random data drawn from every generator a real step uses."""
    losses = []
    model.train()
    for _ in range(count):
        images = torch.randn((6, *SHAPE), generator=generator)
        labels = torch.randint(0, 3, (6,), generator=generator)
        images = images + 0.01 * float(np.random.rand()) + 0.01 * random.random()
        loss = F.cross_entropy(model(images), labels)  # dropout draws from torch's generator
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return losses


def snapshot(model, optimizer, schedule, generator, epoch: int = 2) -> TrainingState:
    weights = detached(model.state_dict())
    return TrainingState(
        epoch=epoch,
        model=weights,
        optimizer=optimizer.state_dict(),
        scheduler=schedule.state_dict(),
        rng=capture_rng(generator),
        history=({"epoch": 1, "val_loss": 1.5, "improved": True}, {"epoch": 2, "val_loss": 1.25}),
        best_loss=1.25,
        best_epoch=2,
        epochs_without_improvement=0,
        best_model=weights,
    )


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_restored_state_continues_exactly_like_the_original(optimizer: str) -> None:
    """Weights, optimizer moments, LR schedule and every RNG come back: identical next steps."""
    model, opt, schedule, generator = parts(optimizer)
    steps(model, opt, schedule, generator, 3)
    data = to_bytes(snapshot(model, opt, schedule, generator))
    expected_losses = steps(model, opt, schedule, generator, 3)
    expected_weights = model.state_dict()

    torch.manual_seed(123)  # another process, another RNG history
    np.random.seed(5)
    random.seed(5)
    state = from_bytes(data)
    fresh, fresh_opt, fresh_schedule, fresh_generator = parts(optimizer)
    fresh.load_state_dict(state.model)
    fresh_opt.load_state_dict(state.optimizer)
    fresh_schedule.load_state_dict(state.scheduler)
    restore_rng(state.rng, fresh_generator)

    assert steps(fresh, fresh_opt, fresh_schedule, fresh_generator, 3) == expected_losses
    for name, tensor in fresh.state_dict().items():
        assert torch.equal(tensor, expected_weights[name]), name
    assert fresh_schedule.get_last_lr() == schedule.get_last_lr()


def test_every_field_round_trips() -> None:
    model, opt, schedule, generator = parts("adamw")
    steps(model, opt, schedule, generator, 2)
    state = snapshot(model, opt, schedule, generator, epoch=5)
    loaded = from_bytes(to_bytes(state))
    assert (loaded.epoch, loaded.best_loss, loaded.best_epoch) == (5, 1.25, 2)
    assert loaded.history == state.history
    assert loaded.epochs_without_improvement == 0
    assert loaded.best_model is not None and loaded.best_model.keys() == state.model.keys()
    assert list(loaded.model) == list(state.model)  # the state_dict's order
    groups = loaded.optimizer["param_groups"]
    assert groups[0]["betas"] == opt.state_dict()["param_groups"][0]["betas"]
    assert isinstance(groups[0]["betas"], tuple)
    assert set(loaded.optimizer["state"]) == set(opt.state_dict()["state"])  # int keys
    assert loaded.rng.python == state.rng.python
    assert np.array_equal(loaded.rng.numpy[1], state.rng.numpy[1])
    assert loaded.rng.numpy[1].dtype == np.uint32
    without_best = from_bytes(to_bytes(TrainingState(**{**vars(state), "best_model": None})))
    assert without_best.best_model is None


def test_a_snapshot_does_not_follow_later_training() -> None:
    model, opt, schedule, generator = parts("sgd")
    state = snapshot(model, opt, schedule, generator)
    before = {name: tensor.clone() for name, tensor in state.model.items()}
    steps(model, opt, schedule, generator, 2)
    assert all(torch.equal(state.model[name], before[name]) for name in before)


@pytest.fixture
def checkpoint_bytes() -> bytes:
    model, opt, schedule, generator = parts("adamw")
    steps(model, opt, schedule, generator, 1)
    return to_bytes(snapshot(model, opt, schedule, generator))


def test_truncated_or_altered_bytes_are_refused(checkpoint_bytes: bytes) -> None:
    flipped = bytearray(checkpoint_bytes)
    flipped[len(flipped) // 2] ^= 0x01
    for damaged in (checkpoint_bytes[:-10], bytes(flipped), checkpoint_bytes + b"x"):
        with pytest.raises(DamagedCheckpoint, match="checksum differs"):
            from_bytes(damaged)
    with pytest.raises(DamagedCheckpoint, match="not a tuner-checkpoint/1 file"):
        from_bytes(b"PK\x03\x04" + checkpoint_bytes)
    with pytest.raises(DamagedCheckpoint, match="not a tuner-checkpoint/1 file"):
        from_bytes(b"")


def test_a_well_summed_but_malformed_body_is_refused() -> None:
    """The digest proves the bytes are whole, not that a tuner wrote them: parsing is checked."""
    text = b'{"epoch": 1}'
    rest = len(text).to_bytes(8, "little") + text + b"not safetensors"
    with pytest.raises(DamagedCheckpoint, match="unreadable content"):
        from_bytes(MAGIC + hashlib.sha256(rest).digest() + rest)


def test_objects_that_are_not_plain_data_are_not_checkpointed() -> None:
    model, opt, schedule, generator = parts("sgd")
    state = snapshot(model, opt, schedule, generator)
    bad = TrainingState(**{**vars(state), "scheduler": {"lambda": nn.Linear(1, 1)}})
    with pytest.raises(TypeError, match="cannot checkpoint a Linear"):
        to_bytes(bad)
