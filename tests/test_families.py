"""Model families and transfer learning: building each family for gray 28x28 and RGB 32x32
inputs, studies that sample the family, pretrained weights from safetensors and .pth files made
here, freezing, the backbone learning rate, the errors, and saved models of any family."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torchvision import models
from typer.testing import CliRunner

from tuner import attrs
from tuner.cli import app
from tuner.config import TrialConfig
from tuner.data import load_dataset, split
from tuner.engine import to_device
from tuner.engine.device import auto_precision, forward_flops
from tuner.engine.families import conv_layers
from tuner.engine.model import count_parameters
from tuner.engine.pretrained import prepare_model
from tuner.engine.train import make_optimizer
from tuner.errors import TunerError
from tuner.families import FAMILIES, build_model
from tuner.report.visualize import feature_maps, visualization_page
from tuner.search.objective import make_objective
from tuner.search.space import common_distributions, suggest
from tuner.spec import load_spec
from tuner.trained.card import load_model
from tuner.trained.export import BestConfig, read_best, to_toml
from tuner.trained.predict import probabilities
from tuner.trained.retrain import retrain, save

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TORCHVISION_FAMILIES = [name for name in FAMILIES if name != "seed-cnn"]


class NotATensor:
    """A custom object: a checkpoint holding one can only be read by full unpickling."""

    def __init__(self) -> None:
        self.epoch = 3


LR_RANGE = '{ type = "float", low = 1e-3, high = 1e-2, log = true }'


def study_text(
    model: str = "", space: str = "", sampler: str = "random", learning_rate: str = LR_RANGE
) -> str:
    return f"""\
name = "fam"
[sampler]
name = "{sampler}"
seed = 0
[pruner]
name = "none"
[dataset]
name = "digits"
train_subset = 100
[training]
max_epochs = 1
patience = 0
trials = 2
[model]
{model}
[space]
learning_rate = {learning_rate}
batch_size = 64
{space}
"""


def write_study(tmp_path: Path, **parts: str) -> Path:
    path = tmp_path / "fam.toml"
    path.write_text(study_text(**parts))
    return path


def study_error(tmp_path: Path, **parts: str) -> str:
    with pytest.raises(TunerError) as error:
        load_spec(write_study(tmp_path, **parts))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(str(tmp_path / "fam.toml"))
    return message


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory) -> dict[str, Path]:
    """A torchvision resnet18 (1000 classes, RGB stem) saved as safetensors and as .pth."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(7)
    state = models.resnet18(weights=None).state_dict()
    paths = {"safetensors": folder / "r18.safetensors", "pth": folder / "r18.pth"}
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths["safetensors"]))
    torch.save(state, paths["pth"])
    return paths


# -- building -------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_family_builds_for_small_gray_and_rgb_images(family, shape) -> None:
    model = build_model(TrialConfig(family=family), shape, 10).eval()
    with torch.inference_mode():
        logits = model(torch.zeros(2, *shape))
    assert logits.shape == (2, 10)
    # The FLOP count the precision policy uses works for every family.
    assert forward_flops(model, shape) > 0
    assert auto_precision(model, shape, 64, torch.device("cpu")) in ("bf16", "fp32")
    assert conv_layers(model, family)[0][1].in_channels == shape[0]


def test_resnet_on_small_images_gets_a_stride_one_stem_without_max_pool() -> None:
    model = build_model(TrialConfig(family="resnet18"), (1, 28, 28), 10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    large = build_model(TrialConfig(family="resnet18"), (3, 96, 96), 10)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, nn.MaxPool2d)


def test_unknown_family_names_the_key_and_the_valid_names(tmp_path: Path) -> None:
    message = study_error(tmp_path, model='family = "vgg99"')
    assert "[model].family" in message and "'vgg99'" in message
    assert all(repr(name) in message for name in FAMILIES)
    message = study_error(
        tmp_path, space='family = { type = "categorical", choices = ["resnet18", "vgg99"] }'
    )
    assert "[space].family.choices[1]" in message


def test_seed_cnn_parameters_cannot_be_sampled_without_the_seed_cnn(tmp_path: Path) -> None:
    message = study_error(
        tmp_path,
        model='family = "resnet18"',
        space='filters = { type = "categorical", choices = [8, 16] }',
    )
    assert "[space].filters" in message and "seed-cnn" in message


def test_grid_over_families_refuses_sampled_seed_cnn_parameters(tmp_path: Path) -> None:
    message = study_error(
        tmp_path,
        sampler="grid",
        learning_rate="0.003",
        space='family = { type = "categorical", choices = ["seed-cnn", "resnet18"] }\n'
        'fc_units = { type = "categorical", choices = [8, 16] }',
    )
    assert "[space].fc_units" in message and "grid sampler" in message


def test_family_in_model_and_space_at_once_is_refused(tmp_path: Path) -> None:
    message = study_error(
        tmp_path,
        model='family = "resnet18"',
        space='family = { type = "categorical", choices = ["resnet18", "seed-cnn"] }',
    )
    assert "[space].family" in message and "[model]" in message


def test_bad_freeze_names_the_key(tmp_path: Path) -> None:
    message = study_error(tmp_path, model='family = "resnet18"\nfreeze = "half"')
    assert "[model].freeze" in message and "all-but-last-K" in message


def test_a_sampled_family_makes_the_seed_cnn_parameters_conditional(tmp_path: Path) -> None:
    spec = load_spec(
        write_study(
            tmp_path,
            space='family = { type = "categorical", choices = ["seed-cnn", "resnet18"] }\n'
            'fc_units = { type = "categorical", choices = [8, 16] }',
        )
    )
    common = common_distributions(spec.space)
    assert "family" in common and "fc_units" not in common


def test_seed_cnn_parameters_are_sampled_in_seed_cnn_trials_only(tmp_path, resnet_weights) -> None:
    spec = load_spec(
        write_study(
            tmp_path,
            model=f'pretrained = "{resnet_weights["pth"]}"',
            space='family = { type = "categorical", choices = ["seed-cnn", "resnet18"] }\n'
            'fc_units = { type = "categorical", choices = [8, 16] }',
        )
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(12):
        trial = study.ask()
        configs.append((trial, suggest(trial, spec)))
    assert {config.family for _, config in configs} == {"seed-cnn", "resnet18"}
    for trial, config in configs:
        seed_cnn = config.family == "seed-cnn"
        assert ("fc_units" in trial.params) == seed_cnn
        # Only the torchvision family loads the pretrained weights.
        assert config.pretrained == ("" if seed_cnn else str(resnet_weights["pth"]))


def test_a_trial_records_what_pretrained_loading_skipped(tmp_path, resnet_weights) -> None:
    spec = load_spec(
        write_study(
            tmp_path,
            model='family = "resnet18"\nfreeze = "backbone"\n'
            f'pretrained = "{resnet_weights["pth"]}"',
        )
    )
    data = to_device(
        split(load_dataset("digits"), val_fraction=0.5, split_seed=0, train_subset=64),
        torch.device("cpu"),
    )
    study = optuna.create_study(direction="maximize")
    study.optimize(make_objective(spec, data, torch.device("cpu")), n_trials=1)
    summary = study.trials[0].user_attrs[attrs.PRETRAINED]
    assert "skipped" in summary and "conv1.weight" in summary


def test_a_study_sampling_the_family_trains_each_family(tmp_path: Path) -> None:
    """Two grid points, one per family; each trial records its family and trains it."""
    write_study(
        tmp_path,
        sampler="grid",
        learning_rate="0.003",
        space='family = { type = "categorical", choices = ["seed-cnn", "mobilenet_v3_small"] }\n'
        "fc_units = 8\nnum_blocks = 1\nfilters = 4",
    )
    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    ran = CliRunner().invoke(
        app, ["run", "--study", str(tmp_path / "fam.toml"), "--storage", url, "--device", "cpu"]
    )
    assert ran.exit_code == 0, ran.output
    trials = optuna.load_study(study_name="fam", storage=url).get_trials()
    assert sorted(t.params["family"] for t in trials) == ["mobilenet_v3_small", "seed-cnn"]
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.user_attrs[attrs.CONFIG]["family"] == trial.params["family"]
        assert set(trial.params) == {"family"}
    sizes = {t.params["family"]: t.user_attrs[attrs.PARAM_COUNT] for t in trials}
    assert sizes["mobilenet_v3_small"] > 10 * sizes["seed-cnn"]


# -- pretrained weights ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_pretrained_weights_load_into_the_backbone_and_skip_what_does_not_fit(
    resnet_weights, fmt
) -> None:
    saved = torch.load(resnet_weights["pth"], weights_only=True)
    config = TrialConfig(family="resnet18", pretrained=str(resnet_weights[fmt]))
    torch.manual_seed(0)
    fresh = build_model(config, (1, 28, 28), 10)
    torch.manual_seed(0)
    model, report = prepare_model(config, (1, 28, 28), 10)
    layer = "layer3.0.conv1.weight"
    assert not torch.equal(fresh.state_dict()[layer], saved[layer])
    assert torch.equal(model.state_dict()[layer], saved[layer])
    # The gray 3x3 stem and the 1000-class head do not fit: skipped and said so.
    assert {"conv1.weight", "fc.weight", "fc.bias"} <= set(report.skipped)
    assert report.loaded == len(saved) - len(report.skipped) > 100


def test_freeze_backbone_leaves_the_backbone_unchanged_after_a_step(resnet_weights) -> None:
    config = TrialConfig(
        family="resnet18", pretrained=str(resnet_weights["safetensors"]), freeze="backbone"
    )
    model, _ = prepare_model(config, (3, 32, 32), 4)
    before = {k: v.clone() for k, v in model.named_parameters()}
    optimizer = make_optimizer(model, config)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4))
    loss.backward()
    optimizer.step()
    after = dict(model.named_parameters())
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"fc.1.weight", "fc.1.bias"}
    assert count_parameters(model) == sum(p.numel() for p in before.values())


def test_all_but_last_k_trains_the_last_stages_and_the_head() -> None:
    model, _ = prepare_model(
        TrialConfig(family="resnet18", freeze="all-but-last-1"), (3, 32, 32), 4
    )
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}


def test_backbone_learning_rate_gives_the_backbone_its_own_group() -> None:
    config = TrialConfig(
        family="mobilenet_v3_small", learning_rate=1e-2, backbone_learning_rate=1e-4
    )
    model = build_model(config, (1, 28, 28), 3)
    groups = make_optimizer(model, config).param_groups
    assert [g["lr"] for g in groups] == [1e-2, 1e-4]
    head = {id(p) for p in model.classifier.parameters()}
    assert {id(p) for p in groups[0]["params"]} == head
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_pretrained_path_is_relative_to_the_study_file(tmp_path: Path, resnet_weights) -> None:
    (tmp_path / "w.safetensors").write_bytes(resnet_weights["safetensors"].read_bytes())
    spec = load_spec(
        write_study(tmp_path, model='family = "resnet18"\npretrained = "w.safetensors"')
    )
    assert spec.model.pretrained == str(tmp_path / "w.safetensors")


def test_missing_weights_file(tmp_path: Path) -> None:
    message = study_error(tmp_path, model='family = "resnet18"\npretrained = "nope.safetensors"')
    assert "[model].pretrained" in message and "no such file" in message


@pytest.mark.parametrize("name", ["bad.safetensors", "bad.pth"])
def test_corrupt_weights_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x00\x01 not weights at all" * 10)
    message = study_error(tmp_path, model=f'family = "resnet18"\npretrained = "{name}"')
    assert "[model].pretrained" in message and "not a readable" in message


def test_pickle_only_checkpoint_is_refused_with_how_to_convert(tmp_path: Path) -> None:
    torch.save({"model": NotATensor(), "w": torch.zeros(2)}, tmp_path / "pickled.pth")
    message = study_error(tmp_path, model='family = "resnet18"\npretrained = "pickled.pth"')
    assert "[model].pretrained" in message and "weights_only" in message
    assert "save_file" in message  # how to convert it


def test_weights_that_fit_no_layer_of_the_family(tmp_path: Path) -> None:
    save_file({"encoder.w": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    message = study_error(
        tmp_path, model='family = "mobilenet_v3_small"\npretrained = "other.safetensors"'
    )
    assert "[model].pretrained" in message and "no tensor fits" in message
    assert "mobilenet_v3_small" in message


def test_resnet_weights_fit_no_mobilenet(tmp_path: Path, resnet_weights) -> None:
    message = study_error(
        tmp_path,
        model=f'pretrained = "{resnet_weights["pth"]}"',
        space='family = { type = "categorical", choices = ["resnet18", "mobilenet_v3_small"] }',
    )
    assert "no tensor fits a layer of mobilenet_v3_small" in message


def test_pretrained_weights_with_only_the_seed_cnn_are_refused(tmp_path, resnet_weights) -> None:
    message = study_error(tmp_path, model=f'pretrained = "{resnet_weights["pth"]}"')
    assert "[model].pretrained" in message and "seed-cnn" in message


# -- saved models of any family ------------------------------------------------------------


def test_retrained_torchvision_model_reloads_predicts_and_visualizes(tmp_path: Path) -> None:
    """retrain -> card + weights -> load_model rebuilds the family -> predict, visualize."""
    config = TrialConfig(family="mobilenet_v3_small", batch_size=256, seed=1)
    result = retrain(
        BestConfig("digits", config), load_dataset("digits"), torch.device("cpu"), epochs=1
    )
    save(tmp_path, result)
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["config"]["family"] == "mobilenet_v3_small"
    assert "stride 1" in card["adaptation"]

    model, loaded = load_model(tmp_path)
    assert loaded.config.family == "mobilenet_v3_small"
    images = torch.randint(0, 255, (2, 1, 8, 8), dtype=torch.uint8)
    assert torch.allclose(probabilities(model, loaded, images).sum(dim=1), torch.ones(2))
    maps = feature_maps(model, loaded, images[0])
    assert len(maps) == len(conv_layers(model, "mobilenet_v3_small")) == len(model.features)
    page = visualization_page(model, loaded, images[0], "random")
    assert "mobilenet_v3_small" in page.subtitle and "stages shown" in page.subtitle


def test_best_config_file_round_trips_the_family(tmp_path: Path) -> None:
    """`tuner best` writes the family; `tuner retrain --config` reads it back, checked."""
    config = TrialConfig(family="resnet18", freeze="all-but-last-2", backbone_learning_rate=1e-4)
    path = tmp_path / "best.toml"
    path.write_text(to_toml(BestConfig("digits", config)))
    assert read_best(path).config == config
    path.write_text(path.read_text().replace('"resnet18"', '"resnet99"'))
    with pytest.raises(TunerError, match=r"config\.family: must be one of 'seed-cnn'"):
        read_best(path)


def test_an_old_card_without_a_family_is_the_seed_cnn(tmp_path: Path) -> None:
    from model_fixtures import save_untrained_model

    save_untrained_model(tmp_path)
    card_file = tmp_path / "model.json"
    card = json.loads(card_file.read_text())
    for key in ("family", "pretrained", "freeze", "backbone_learning_rate"):
        card["config"].pop(key, None)
    card_file.write_text(json.dumps(card))
    model, loaded = load_model(tmp_path)
    assert loaded.config.family == "seed-cnn"
    assert isinstance(model, nn.Sequential)
