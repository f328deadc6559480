"""Build the zero-shot portfolio: configurations that together do well across datasets.

    python bench/build_portfolio.py evaluate --configs 80 --shard 0/2 &   # the evaluations
    python bench/build_portfolio.py evaluate --configs 80 --shard 1/2     # (resumable)
    python bench/build_portfolio.py choose --k 6               # greedy choice -> portfolio.toml
    python bench/build_portfolio.py summary                    # the tables for RESULTS.md

`evaluate` draws `--configs` configurations of the seed CNN from `--space` (default
bench/portfolio_space.toml; they are named `--prefix` + index, d000...; the first portfolio's
c000... came from bench/portfolio_space_v1.toml) with tuner's own `suggest` under a seeded
RandomSampler, so a rerun draws the same list; `--shard I/N` gives one process every Nth; plus the
reference configurations in REFERENCES, and trains each on every development dataset
(bench/dev_datasets.py, the held-out one excepted) with tuner's engine at a low fidelity:
`--epochs` epochs on at most `--train-images` training images, validated on at most
`--val-images`. Every evaluation is one JSON line in --results; a (config, dataset) pair already
there is skipped, so an interrupted run resumes. Configurations run in the outer loop, so the
first M configurations are complete on every dataset whenever it stops.

`choose` turns the records into a regret table (per dataset: regret of a configuration =
(best - its accuracy) / (best - median), so a dataset where all configurations are close
counts as much as one where they spread) and picks K configurations greedily, each time the one
that lowers the summed regret of the portfolio (a dataset's regret is that of its best member)
the most: the forward selection auto-sklearn 2.0 uses; configurations costing more than
`--max-cost` times the median CPU time are left out first. It writes tuner/search/portfolio.toml,
with the provenance. Run with one thread and `nice`: accuracies at fixed epochs do not depend
on the machine's speed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import optuna
import torch

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from dev_datasets import DEFAULT_OUT, DevDataset, dev_datasets  # noqa: E402

from tuner.config import TrialConfig  # noqa: E402
from tuner.data import load_dataset, split  # noqa: E402
from tuner.engine import EngineOptions, build_model, fit, to_device  # noqa: E402
from tuner.search.space import suggest  # noqa: E402
from tuner.spec import load_spec  # noqa: E402

SPACE = BENCH / "portfolio_space.toml"
RESULTS = BENCH / "portfolio_evaluations.jsonl"
PORTFOLIO = ROOT / "tuner" / "search" / "portfolio.toml"
# The datasets the portfolio is built on (the others are for checking it): the cheapest four
# that differ in what makes them hard, at the compute one shared core gives (RESULTS.md).
BUILD = ("digits", "fashion", "fashion-colour", "mnist-rot-noisy")
# Configurations measured beside the sampled ones, on REFERENCE_DATASET with --ref-seeds seeds:
# the [[enqueue]] table of studies/fashion-mnist.toml (with its batch size), to decide whether
# the portfolio covers it.
REFERENCE_DATASET = "fashion"
REFERENCES: dict[str, dict[str, Any]] = {
    "fashion-enqueue": {
        "learning_rate": 1.5e-3,
        "batch_size": 128,
        "kernel_size": 3,
        "num_blocks": 3,
        "filters": [32, 64, 128],
        "fc_units": 256,
        "dropout": 0.25,
        "weight_decay": 1e-4,
        "label_smoothing": 0.05,
        "optimizer": "adamw",
        "batch_norm": True,
        "momentum": 0.9,
    }
}
TABLE_KEYS = (
    "learning_rate",
    "batch_size",
    "kernel_size",
    "num_blocks",
    "filters",
    "fc_units",
    "dropout",
    "weight_decay",
    "label_smoothing",
    "optimizer",
    "batch_norm",
    "momentum",
)


def table_of(config: TrialConfig) -> dict[str, Any]:
    """A configuration as a study file's [[enqueue]] table (filters as one value per block)."""
    values = config.to_dict()
    table = {key: values[key] for key in TABLE_KEYS if key in values}
    table["num_blocks"] = config.num_blocks
    return table


def config_of(table: dict[str, Any], epochs: int, seed: int) -> TrialConfig:
    values = {k: v for k, v in table.items() if k != "num_blocks"}
    values["filters"] = tuple(table["filters"])
    return TrialConfig(**values, max_epochs=epochs, patience=0, seed=seed)


def sampled_tables(count: int, space: Path, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    """`count` configurations from `space`, always the same ones for a count, named
    `prefix` + index (c000 are the first portfolio's, drawn from portfolio_space_v1.toml)."""
    spec = load_spec(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    tables = []
    for index in range(count):
        trial = study.ask()
        tables.append((f"{prefix}{index:03d}", table_of(suggest(trial, spec))))
        study.tell(trial, 0.0)
    return tables


def device_data(dataset: DevDataset, train_images: int, val_images: int, cache_dir: Path):
    """The dataset's seeded split at the build's fidelity, on the CPU."""
    loaded = load_dataset(dataset.name, dataset.data_dir, cache_dir, download=False)
    total = len(loaded.train)
    val_fraction = min(0.2, val_images / total)
    splits = split(loaded, val_fraction=val_fraction, split_seed=0, train_subset=train_images)
    return to_device(splits, torch.device("cpu"))


def evaluate_one(table: dict[str, Any], data, epochs: int, seed: int) -> dict[str, Any]:
    """Train one configuration with tuner's engine; its accuracies per epoch and its cost."""
    config = config_of(table, epochs, seed)
    torch.manual_seed(config.seed)
    model = build_model(config, data.input_shape, data.num_classes)
    device = torch.device("cpu")
    options = EngineOptions().resolve(model, data.input_shape, config.batch_size, device)
    started = time.process_time()
    history, error = [], None
    try:
        for result in fit(model, data, config, device, options):
            history.append(
                {
                    "epoch": result.epoch,
                    "val_loss": result.val_loss,
                    "val_accuracy": result.val_accuracy,
                }
            )
    except RuntimeError as exc:  # DivergedError among them: the configuration failed here
        error = str(exc)
    best = min(history, key=lambda h: h["val_loss"]) if history else None
    return {
        "history": history,
        "error": error,
        "precision": options.precision,
        # what tuner records as the trial's value: the accuracy at the best epoch by val loss
        "value": best["val_accuracy"] if best else 0.0,
        "last": history[-1]["val_accuracy"] if history else 0.0,
        "cpu_seconds": round(time.process_time() - started, 2),
    }


def chosen_tables(path: Path) -> dict[str, dict[str, Any]]:
    """The configurations of a written portfolio file, as "portfolio:N" (1-based)."""
    if not path.is_file():
        return {}
    with path.open("rb") as file:
        tables = tomllib.load(file).get("configuration", [])
    return {f"portfolio:{i}": table for i, table in enumerate(tables, 1)}


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def evaluate(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    datasets = dev_datasets(args.data_out)
    keys = args.datasets.split(",") if args.datasets else list(BUILD)
    done = {(r["config"], r["dataset"], r["seed"]) for r in read_records(args.results)}
    references = {**REFERENCES, **chosen_tables(args.out)} if args.references else {}
    jobs: list[tuple[str, dict[str, Any], int, list[str]]] = [
        (name, table, seed, keys if args.datasets else [REFERENCE_DATASET])
        for name, table in references.items()
        for seed in range(args.ref_seeds)
    ]
    sampled = sampled_tables(args.configs, args.space, args.prefix)
    shard, shards = (int(part) for part in args.shard.split("/"))
    # Several processes (one thread each) share the evaluations; each appends whole lines.
    jobs += [job for index, job in enumerate((n, t, 0, keys) for n, t in sampled)
             if index % shards == shard]  # fmt: skip
    if args.only:
        jobs = [job for job in jobs if job[0] in args.only.split(",")]
    loaded: dict[str, Any] = {}
    for name, table, seed, job_keys in jobs:
        for key in job_keys:
            if (name, key, seed) in done:
                continue
            if key not in loaded:
                loaded[key] = device_data(
                    datasets[key], args.train_images, args.val_images, args.cache
                )
            record = {
                "config": name,
                "dataset": key,
                "seed": seed,
                "table": table,
                "epochs": args.epochs,
                "train_images": len(loaded[key].train_labels),
                "val_images": len(loaded[key].val_labels),
                **evaluate_one(table, loaded[key], args.epochs, seed),
                "cpu": cpu_name(),
                "threads": torch.get_num_threads(),
                "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            }
            with args.results.open("a") as out:
                out.write(json.dumps(record) + "\n")
            value, seconds = record["value"], record["cpu_seconds"]
            print(f"{name} {key} seed {seed}: {value:.4f} ({seconds} s)", flush=True)


def regret_table(
    records: list[dict[str, Any]],
    keys: list[str],
    prefix: str,
    max_cost: float = math.inf,
    batch_sizes: tuple[int, ...] = (),
) -> tuple[dict, dict]:
    """{config: {dataset: normalised regret}} over the configurations named `prefix`...
    measured on every dataset (seed 0), and {config: table}.

    A configuration whose CPU time summed over the datasets is more than `max_cost` times the
    median configuration's is left out: a portfolio member is a study's first trial, and under
    a time budget an expensive one spends what the search needs (the regret is measured at
    equal epochs, which does not see the cost). With `batch_sizes`, only configurations of those
    batch sizes are candidates: at a fidelity of a few epochs of 1,000 images, batch 32 takes 8x
    the optimizer steps of batch 256 and wins for that alone, which full data does not repeat."""
    scores: dict[str, dict[str, float]] = {}
    costs: dict[str, float] = {}
    tables: dict[str, dict[str, Any]] = {}
    for record in records:
        name = record["config"]
        if record["seed"] == 0 and record["dataset"] in keys and name.startswith(prefix):
            scores.setdefault(name, {})[record["dataset"]] = record["value"]
            costs[name] = costs.get(name, 0.0) + record["cpu_seconds"]
            tables[name] = record["table"]
    complete = {c: s for c, s in scores.items() if all(k in s for k in keys)}
    if batch_sizes:
        complete = {c: s for c, s in complete.items() if tables[c]["batch_size"] in batch_sizes}
    if complete and math.isfinite(max_cost):
        ceiling = max_cost * statistics.median(costs[c] for c in complete)
        complete = {c: s for c, s in complete.items() if costs[c] <= ceiling}
    regret: dict[str, dict[str, float]] = {c: {} for c in complete}
    for key in keys:
        values = [s[key] for s in complete.values()]
        best, median = max(values), statistics.median(values)
        spread = max(best - median, 1e-6)
        for config, s in complete.items():
            regret[config][key] = (best - s[key]) / spread
    return regret, tables


def greedy(regret: dict[str, dict[str, float]], keys: list[str], k: int, min_k: int) -> list[str]:
    """Forward selection: add the configuration that lowers the summed best-member regret most.

    Once nothing lowers it (and fewer than `min_k` are chosen), the next is the one with the
    least summed regret alone: a hedge for datasets unlike the development ones.
    """
    chosen: list[str] = []
    current = dict.fromkeys(keys, math.inf)
    for _ in range(k):
        totals = {
            config: sum(min(current[key], regret[config][key]) for key in keys)
            for config in regret
            if config not in chosen
        }
        if not totals:
            break
        best = min(totals, key=lambda config: (totals[config], config))
        if chosen and totals[best] >= sum(current.values()) - 1e-9:
            if len(chosen) >= min_k:
                break  # nothing left lowers the regret
            alone = {config: sum(regret[config].values()) for config in totals}
            best = min(alone, key=lambda config: (alone[config], config))
        chosen.append(best)
        current = {key: min(current[key], regret[best][key]) for key in keys}
    return chosen


def batch_sizes(args: argparse.Namespace) -> tuple[int, ...]:
    return tuple(int(size) for size in args.batch_sizes.split(",")) if args.batch_sizes else ()


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4g}" if "e" not in f"{value:.4g}" else f"{value:.3e}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)


def choose(args: argparse.Namespace) -> None:
    records = read_records(args.results)
    keys = sorted(BUILD)
    regret, tables = regret_table(records, keys, args.prefix, args.max_cost, batch_sizes(args))
    chosen = greedy(regret, keys, args.k, args.min_k)
    first = next(r for r in records if r["config"].startswith(args.prefix))
    command = "python " + shlex.join(["bench/build_portfolio.py", *sys.argv[1:]])
    lines = [
        "# The zero-shot portfolio: seed-CNN configurations a study without [[enqueue]] tries",
        "# first (tuner/search/portfolio.py projects each into the study's [space]). Rebuilt from",
        "# scratch by bench/build_portfolio.py; the figures behind the choice are in",
        "# bench/RESULTS.md and bench/portfolio_evaluations.jsonl. Order matters: the first",
        "# configuration is the one with the least regret alone.",
        "",
        "[provenance]",
        f"datasets = {toml_value(keys)}",
        f"configurations = {len(regret)}",
        f"space = {json.dumps(str(args.space.resolve().relative_to(ROOT)))}",
        f'fidelity = "{first["epochs"]} epochs on at most {args.train_images} training images, '
        f'validated on at most {args.val_images}"',
        'selection = "greedy forward selection, summed regret (best - value) / (best - median)'
        f", configurations costing over {args.max_cost:g}x the median CPU time left out"
        f', batch sizes {args.batch_sizes or "any"}"',
        f'cpu = "{first["cpu"]}, 1 thread"',
        f'date = "{datetime.date.today().isoformat()}"',
        f"command = {json.dumps(command)}",
    ]
    current = dict.fromkeys(keys, math.inf)
    for rank, config in enumerate(chosen, 1):
        current = {key: min(current[key], regret[config][key]) for key in keys}
        lines += ["", "[[configuration]]", f"# {config}; portfolio regret after it: "
                  + ", ".join(f"{key} {current[key]:.2f}" for key in keys)]  # fmt: skip
        lines += [f"{key} = {toml_value(value)}" for key, value in tables[config].items()]
        print(f"{rank}. {config}: " + ", ".join(f"{k} {regret[config][k]:.2f}" for k in keys))
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}: {len(chosen)} configurations of {len(regret)} on {keys}")


def summary(args: argparse.Namespace) -> None:
    """Markdown for bench/RESULTS.md: the evaluations, the choice, the checks."""
    records = read_records(args.results)
    keys = sorted(BUILD)
    regret, _ = regret_table(records, keys, args.prefix, args.max_cost, batch_sizes(args))
    chosen = list(chosen_tables(args.out))
    members = greedy(regret, keys, args.k, args.min_k)
    value = {(r["config"], r["dataset"], r["seed"]): r["value"] for r in records}
    print("| dataset | configs | best | median | worst | at chance |")
    print("|---|---|---|---|---|---|")
    for key in keys:
        values = sorted(value[c, key, 0] for c in regret)
        chance = 1 / {"fashion-colour": 6}.get(key, 10)
        low = sum(v < chance + 0.05 for v in values)
        best, median, worst = values[-1], statistics.median(values), values[0]
        print(f"| {key} | {len(values)} | {best:.3f} | {median:.3f} | {worst:.3f} | {low} |")
    print("\n| portfolio | config | " + " | ".join(keys) + " |")
    print("|---|---|" + "---|" * len(keys))
    for name, config in zip(chosen, members, strict=False):
        cells = [f"{value[config, k, 0]:.3f} (regret {regret[config][k]:.2f})" for k in keys]
        print(f"| {name} | {config} | " + " | ".join(cells) + " |")
    print("\nSeeds on the reference dataset and the held-out set:")
    for key in (REFERENCE_DATASET, *(k for k in {r["dataset"] for r in records} if k not in keys)):
        names = sorted({r["config"] for r in records if r["dataset"] == key})
        for name in names:
            seeds = sorted((r["seed"], r["value"]) for r in records if r["config"] == name
                           and r["dataset"] == key)  # fmt: skip
            if name.startswith(args.prefix) and key == REFERENCE_DATASET:
                continue
            shown = ", ".join(f"{v:.3f}" for _, v in seeds)
            print(f"- {key} {name}: {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("evaluate", "choose", "summary"))
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument(
        "--references",
        action="store_true",
        help="also the reference configs and a written portfolio's, on the reference dataset",
    )
    parser.add_argument("--ref-seeds", type=int, default=3, help="seeds of each reference config")
    parser.add_argument("--datasets", help="comma-separated keys (default: BUILD)")
    parser.add_argument("--only", help="comma-separated config names to evaluate")
    parser.add_argument("--k", type=int, default=6, help="at most this many configurations")
    parser.add_argument("--min-k", type=int, default=3, help="at least this many")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--space", type=Path, default=SPACE, help="where configs are drawn")
    parser.add_argument("--prefix", default="d", help="names of the drawn configs (c: first build)")
    parser.add_argument("--shard", default="0/1", help="I/N: this process's share of the configs")
    parser.add_argument(
        "--max-cost", type=float, default=2.0, help="leave out configs over this x median CPU"
    )
    parser.add_argument(
        "--batch-sizes", default="64,128,256", help="candidates' batch sizes ('': any)"
    )
    parser.add_argument("--out", type=Path, default=PORTFOLIO)
    parser.add_argument("--data-out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--cache", type=Path, default=DEFAULT_OUT / "tensors")
    args = parser.parse_args()
    {"evaluate": evaluate, "choose": choose, "summary": summary}[args.step](args)


if __name__ == "__main__":
    main()
