"""Trial throughput: tuner's engine against the usual Optuna + torchvision script, same study.

    python bench/trial_throughput.py                          # mnist study, CPU-sized defaults
    python bench/trial_throughput.py --trials 8 --epochs 3 --loader-workers 2
    python bench/fetch_fashion_mnist.py && python bench/trial_throughput.py \
        --study studies/fashion-mnist.toml --dataset-dir .bench-data/fashion-mnist-10k

Both engines train the same list of configs (sampled once from the study's search space with a
seeded RandomSampler), on the same train/validation split, with the same seeds, epochs, model,
optimizer, loss, LR schedule and augmentation (random crop and flip, from the study file), with
no pruning and no early stopping, so both do the same work:

(a) tuner: suggest -> build_model -> fit, as the objective runs a trial (without
    its user-attribute bookkeeping), on device-resident uint8 tensors: batched augmentation
    (tuner.engine.augment), channels_last, fused optimizer, and tuner's default `--precision auto`:
    bf16 autocast on CUDA and, for models big enough to gain, on CPUs with native bf16.
(b) the usual script, as in Optuna's PyTorch examples: torchvision.datasets.MNIST or
    FashionMNIST (one PIL image per sample) + transforms.Compose([RandomCrop(28, padding=2),
    RandomHorizontalFlip() where the study flips, ToTensor(), Normalize()]) +
    DataLoader(shuffle=True, num_workers=--loader-workers), all built inside the objective,
    per-batch `.to(device)`, evaluation every epoch, default (non-fused) optimizer.

Trials alternate between the engines (a b, b a, ...), so changes in machine load hit both alike.
`--precision fp32` keeps tuner in fp32 too, for like-for-like arithmetic.
The trial value of both is the validation accuracy of the epoch with the lowest validation loss
(tuner's rule); the two must agree within seed noise, or the speed came from doing less.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from common import (
    DEFAULT_DATASET_DIR,
    DEFAULT_STUDY,
    describe,
    load_average,
    load_splits,
    machine_header,
    sample_configs,
)
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from usual_data import TORCHVISION_DATASETS, RecipeData, recipe_data, split_indices

from tuner.config import AugmentSpec, TrialConfig
from tuner.engine import PRECISIONS, DeviceData, EngineOptions, fit, pick_device, to_device
from tuner.families import build_model
from tuner.search.space import suggest
from tuner.spec import PrunerSpec, StudySpec, load_spec


@dataclass(frozen=True)
class TrialTiming:
    seconds: float
    value: float  # the trial's validation accuracy
    precision: str  # what the trial trained in: tuner's "auto" decides per model


def bench_spec(spec: StudySpec, epochs: int) -> StudySpec:
    """The study with every trial running all `epochs`: no pruner, no early stopping."""
    training = replace(spec.training, max_epochs=epochs, patience=0)
    return replace(spec, pruner=PrunerSpec(name="none"), training=training)


def tuner_objective(
    spec: StudySpec, data: DeviceData, device: torch.device, options: EngineOptions
) -> Callable[[optuna.Trial], float]:
    """A trial as tuner.search.objective runs it: the best epoch's validation accuracy."""

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial, spec)
        torch.manual_seed(config.seed)
        model = build_model(config, data.input_shape, data.num_classes)
        engine = options.resolve(model, data.input_shape, config.batch_size, device)
        trial.set_user_attr("precision", engine.precision)
        results = list(fit(model, data, config, device, engine))
        return min(results, key=lambda r: r.val_loss).val_accuracy

    return objective


class UsualScript:
    """Optuna's pytorch_simple.py pattern, with tuner's model so both train the same network."""

    def __init__(
        self,
        spec: StudySpec,
        data: RecipeData,
        device: torch.device,
        loader_workers: int,
        epoch_log: Path | None = None,
    ) -> None:
        self.spec = spec
        # The search race's epoch-level curve: one JSON line per finished epoch (trial, epoch,
        # wall time, accuracy), appended as it happens so a stopped run keeps every line.
        self.epoch_log = epoch_log
        self.data = data
        self.train_indices, self.val_indices = data.split
        self.normalize = transforms.Normalize(*data.stats)  # the training split's mean, std
        self.device = device
        self.loader_workers = loader_workers

    def loaders(
        self, batch_size: int, seed: int, test: bool = False
    ) -> tuple[DataLoader, DataLoader]:
        """Datasets and loaders, built per trial as in Optuna's examples: the study's train and
        validation split, or with `test` the whole training split and the test split."""
        augment = self.spec.augment
        size = self.data.input_shape[1:]
        per_sample = [transforms.RandomCrop(size, padding=augment.random_crop_padding)]
        if augment.horizontal_flip:
            per_sample.append(transforms.RandomHorizontalFlip())
        train_transform = transforms.Compose([*per_sample, transforms.ToTensor(), self.normalize])
        val_transform = transforms.Compose([transforms.ToTensor(), self.normalize])
        train_set = self.data.pool(train_transform)
        val_set = self.data.test(val_transform) if test else self.data.pool(val_transform)
        if not test:
            train_set = Subset(train_set, self.train_indices)
            val_set = Subset(val_set, self.val_indices)
        train_loader = DataLoader(
            train_set,
            batch_size=batch_size,
            shuffle=True,
            num_workers=self.loader_workers,
            generator=torch.Generator().manual_seed(seed),
        )
        val_loader = DataLoader(val_set, batch_size=batch_size, num_workers=self.loader_workers)
        return train_loader, val_loader

    def epochs(
        self, config: TrialConfig, loaders: tuple[DataLoader, DataLoader]
    ) -> Iterator[tuple[int, float, float]]:
        """Train `config` for its max_epochs; yields (epoch, val loss, val accuracy) each epoch."""
        train_loader, val_loader = loaders
        torch.manual_seed(config.seed)
        model = build_model(config, self.data.input_shape, self.data.num_classes)
        model = model.to(self.device)
        if config.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                model.parameters(),
                lr=config.learning_rate,
                momentum=config.momentum,
                weight_decay=config.weight_decay,
                nesterov=config.momentum > 0,
            )
        else:
            optimizer = torch.optim.AdamW(
                model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
            )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.max_epochs)

        for epoch in range(1, config.max_epochs + 1):
            model.train()
            for images, labels in train_loader:
                images, labels = images.to(self.device), labels.to(self.device)
                optimizer.zero_grad()
                loss = F.cross_entropy(
                    model(images), labels, label_smoothing=config.label_smoothing
                )
                loss.backward()
                optimizer.step()
            scheduler.step()

            model.eval()
            total_loss, correct, count = 0.0, 0, 0
            with torch.no_grad():
                for images, labels in val_loader:
                    images, labels = images.to(self.device), labels.to(self.device)
                    logits = model(images)
                    total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
                    correct += (logits.argmax(dim=1) == labels).sum().item()
                    count += len(labels)
            yield epoch, total_loss / count, correct / count

    def objective(self, trial: optuna.Trial) -> float:
        """Optuna's recipe: report the accuracy each epoch, prune when the study's pruner says.

        The value is the accuracy of the epoch with the lowest validation loss (tuner's rule).
        """
        config = suggest(trial, self.spec)
        loaders = self.loaders(config.batch_size, config.seed)
        best_loss, best_accuracy = math.inf, 0.0
        for epoch, val_loss, accuracy in self.epochs(config, loaders):
            if val_loss < best_loss:
                best_loss, best_accuracy = val_loss, accuracy
                trial.set_user_attr("best_epoch", epoch)
            if self.epoch_log is not None:
                line = json.dumps(
                    {"trial": trial.number, "epoch": epoch, "wall": time.time(), "value": accuracy}
                )
                with self.epoch_log.open("a", encoding="utf-8") as log:
                    log.write(line + "\n")
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best_accuracy


def run_one(study: optuna.Study, objective, params: dict[str, object]) -> TrialTiming:
    """One trial of `params` (enqueued, so every engine trains the same config)."""
    study.enqueue_trial(params)
    started = time.perf_counter()
    study.optimize(objective, n_trials=1)
    seconds = time.perf_counter() - started
    trial = study.trials[-1]
    if trial.value is None:
        raise RuntimeError(f"trial {trial.number} ended {trial.state.name}: {trial.user_attrs}")
    return TrialTiming(seconds, trial.value, trial.user_attrs.get("precision", "fp32"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset-dir", type=Path, default=DEFAULT_DATASET_DIR)
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--loader-workers", type=int, default=0, help="DataLoader num_workers of the usual script"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="tuner's side")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    spec = bench_spec(load_spec(args.study), args.epochs)
    if spec.dataset.name not in TORCHVISION_DATASETS:
        parser.error("the usual-script side reads MNIST-format IDX files: use an MNIST study")
    mirrored = AugmentSpec(
        random_crop_padding=spec.augment.random_crop_padding,
        horizontal_flip=spec.augment.horizontal_flip,
    )
    if spec.augment != mirrored:
        parser.error(
            f"{args.study}: the usual-script side mirrors random_crop_padding and horizontal_flip "
            "only; remove the study's other [augment] keys for this benchmark"
        )
    device = pick_device(args.device)
    header = machine_header()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache_dir:
        splits = load_splits(spec, args.dataset_dir, Path(cache_dir))
    data = to_device(splits, device)
    tuner_setup = time.perf_counter() - started
    # The baseline must see exactly the images tuner trains and validates on (checked below).
    indices = split_indices(spec, len(splits.train) + len(splits.val))

    configs = sample_configs(spec, args.trials, args.epochs)
    # No pruner: every engine trains every config for all epochs.
    studies = {
        engine: optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
        for engine in ("tuner", "usual")
    }

    with tempfile.TemporaryDirectory() as root_dir:
        started = time.perf_counter()
        dataset_class = TORCHVISION_DATASETS[spec.dataset.name]
        recipe = replace(
            recipe_data(spec, args.dataset_dir, Path(root_dir)), stats=(splits.mean, splits.std)
        )
        root = Path(root_dir)
        usual_setup = time.perf_counter() - started
        usual = UsualScript(spec, recipe, device, args.loader_workers)
        objectives = {
            "tuner": tuner_objective(spec, data, device, EngineOptions(args.precision)),
            "usual": usual.objective,
        }
        images = dataset_class(str(root), train=True).data.unsqueeze(1)
        for part, subset in zip(indices, (splits.train, splits.val), strict=True):
            assert torch.equal(images[part], subset.images), "the engines' splits differ"

        timings: dict[str, list[TrialTiming]] = {"tuner": [], "usual": []}
        loads = []
        print("\n".join(header))
        print(
            f"trial  {'config':<52} {'tuner s':>8} {'usual s':>8} {'tuner acc':>9} {'usual acc':>9}"
            "  tuner precision"
        )
        for number, (params, config) in enumerate(configs):
            order = ("tuner", "usual") if number % 2 == 0 else ("usual", "tuner")
            for engine in order:
                timings[engine].append(run_one(studies[engine], objectives[engine], params))
            loads.append(load_average())
            a, b = timings["tuner"][-1], timings["usual"][-1]
            print(
                f"{number:>5}  {describe(config):<52} {a.seconds:8.1f} {b.seconds:8.1f} "
                f"{a.value:9.4f} {b.value:9.4f}  {a.precision}",
                flush=True,
            )

    trained = args.trials * args.epochs * len(splits.train)
    tuner_s = sum(t.seconds for t in timings["tuner"])
    usual_s = sum(t.seconds for t in timings["usual"])
    tuner_acc = [t.value for t in timings["tuner"]]
    usual_acc = [t.value for t in timings["usual"]]
    print(
        f"\nstudy {spec.name}: {args.trials} trials x {args.epochs} epochs x "
        f"{len(splits.train)} train + {len(splits.val)} val images, device {device}, "
        f"tuner precision {args.precision}, "
        f"usual-script DataLoader num_workers={args.loader_workers}; "
        f"load average during trials: {', '.join(loads)}"
    )
    print(f"{'engine':<14} {'wall s':>8} {'train img/s':>12} {'mean val acc':>13}  one-time setup")
    for name, seconds, accuracy, setup in (
        ("tuner", tuner_s, tuner_acc, f"{tuner_setup:.2f} s (decode+cache, split, to device)"),
        ("usual script", usual_s, usual_acc, f"{usual_setup:.2f} s (unpack IDX for torchvision)"),
    ):
        print(
            f"{name:<14} {seconds:8.1f} {trained / seconds:12.0f} "
            f"{sum(accuracy) / len(accuracy):13.4f}  {setup}"
        )
    differences = [a - b for a, b in zip(tuner_acc, usual_acc, strict=True)]
    spread = statistics.stdev(differences) if len(differences) > 1 else math.nan
    print(
        f"speed-up: {usual_s / tuner_s:.2f}x; accuracy tuner - usual: mean "
        f"{statistics.fmean(differences):+.4f}, per-trial std {spread:.4f} (seed noise)"
    )


if __name__ == "__main__":
    main()
