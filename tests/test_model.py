"""The seed architecture builds and runs for every shape and config the space allows."""

from dataclasses import replace

import pytest
import torch

from tuner.config import TrialConfig
from tuner.engine.model import count_parameters
from tuner.families.seed_cnn import build_cnn


@pytest.mark.parametrize(
    ("input_shape", "filters"),
    [
        ((1, 8, 8), (8, 8, 8, 8)),  # more blocks than the image can be pooled
        ((1, 28, 28), (16, 32)),
        ((3, 32, 32), (32, 64, 128)),
        ((3, 17, 23), (4,)),  # odd, non-square images
    ],
)
@pytest.mark.parametrize("batch_norm", [True, False])
def test_build_cnn_maps_any_input_shape_to_class_logits(input_shape, filters, batch_norm):
    config = TrialConfig(filters=filters, kernel_size=3, batch_norm=batch_norm, fc_units=16)
    model = build_cnn(config, input_shape, num_classes=7)
    logits = model(torch.randn(5, *input_shape))
    assert logits.shape == (5, 7)
    assert len(model[0]) == len(filters)


def test_model_layers_follow_the_config():
    config = TrialConfig(filters=(6, 12), kernel_size=5, batch_norm=True, dropout=0.3, fc_units=20)
    model = build_cnn(config, (3, 32, 32), num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [6, 12]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert convs[0].in_channels == 3
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2
    dropout = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropout[0].p == pytest.approx(0.3)
    # 32 -> 16 -> 8 after two pooled blocks: the classifier sees 12 * 8 * 8 features.
    first_linear = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert first_linear.in_features == 12 * 8 * 8
    assert first_linear.out_features == 20


def test_count_parameters_counts_every_weight_bias_and_batchnorm_scale_by_hand():
    # (1, 8, 8) input, one 3x3 block of 4 filters, pooled to 4x4, FC 64 -> 8 -> 3 classes.
    config = TrialConfig(filters=(4,), kernel_size=3, fc_units=8, batch_norm=False)
    conv = 1 * 4 * 3 * 3 + 4  # weights + biases
    fc = (4 * 4 * 4) * 8 + 8
    out = 8 * 3 + 3
    model = build_cnn(config, (1, 8, 8), num_classes=3)
    assert count_parameters(model) == conv + fc + out == 587
    # BatchNorm drops the conv bias (4) and adds a scale and a shift per filter (8).
    with_bn = build_cnn(replace(config, batch_norm=True), (1, 8, 8), num_classes=3)
    assert count_parameters(with_bn) == 587 - 4 + 8
    # Frozen parameters still count: it is the size of the model.
    with_bn.requires_grad_(False)
    assert count_parameters(with_bn) == 591
