"""The fast path (device-resident tensors, fused optimizer, channels_last) learns as well as a
plain DataLoader loop: the speed must not come from doing less or doing it differently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tuner.config import TrialConfig
from tuner.data import load_dataset, split
from tuner.engine import DeviceData, fit, to_device
from tuner.families import build_model

CPU = torch.device("cpu")
CONFIG = TrialConfig(
    learning_rate=3e-3,
    batch_size=32,
    filters=(16, 32),
    fc_units=64,
    dropout=0.1,
    max_epochs=6,
    patience=0,
    seed=3,
)


@pytest.fixture(scope="module")
def digits() -> DeviceData:
    """scikit-learn's 8x8 digits: real images, 10 classes, decoded in milliseconds."""
    return to_device(split(load_dataset("digits"), val_fraction=0.2, split_seed=0), CPU)


def fast_path_accuracy(data: DeviceData) -> float:
    torch.manual_seed(CONFIG.seed)
    model = build_model(CONFIG, data.input_shape, data.num_classes)
    results = list(fit(model, data, CONFIG, CPU))
    return min(results, key=lambda r: r.val_loss).val_accuracy


def plain_loop_accuracy(data: DeviceData) -> float:
    """The textbook loop: a DataLoader over a TensorDataset, default optimizer and layout."""
    train = TensorDataset(data.normalise(data.train_images), data.train_labels)
    loader = DataLoader(
        train,
        batch_size=CONFIG.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(CONFIG.seed),
    )
    val_images, val_labels = data.normalise(data.val_images), data.val_labels
    torch.manual_seed(CONFIG.seed)
    model = build_model(CONFIG, data.input_shape, data.num_classes)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=CONFIG.learning_rate, weight_decay=CONFIG.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, CONFIG.max_epochs)
    best_loss, best_accuracy = math.inf, 0.0
    for _ in range(CONFIG.max_epochs):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        with torch.no_grad():
            logits = model(val_images)
        loss = F.cross_entropy(logits, val_labels).item()
        if loss < best_loss:
            best_loss = loss
            best_accuracy = (logits.argmax(dim=1) == val_labels).float().mean().item()
    return best_accuracy


def test_fast_path_matches_a_plain_dataloader_loop(digits: DeviceData) -> None:
    fast, plain = fast_path_accuracy(digits), plain_loop_accuracy(digits)
    assert fast > 0.9 and plain > 0.9, (fast, plain)
    assert abs(fast - plain) < 0.04, (fast, plain)
