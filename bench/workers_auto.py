"""What `tuner run --workers auto` measures for a shipped study on this machine, uncached.

    python bench/workers_auto.py       # studies/fashion-mnist.toml, 28x28, 10 classes
    python bench/workers_auto.py --study studies/digits-quick.toml --shape 1 8 8

Prints images per second of every candidate plan (processes x threads) for the study's typical
model (its first [[enqueue]] configuration, else mid-range values) and the plan chosen.
Set OMP_WAIT_POLICY=PASSIVE in the environment to measure what the CLI sees (it sets that).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from tuner.engine import available_cpus
from tuner.runner.plan import candidate_plans, choose_plan, cpu_model, measure_plan, study_workload
from tuner.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=ROOT / "studies" / "fashion-mnist.toml")
    parser.add_argument("--shape", type=int, nargs=3, default=(1, 28, 28))
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    workload = study_workload(load_spec(args.study), tuple(args.shape), args.classes)
    cores = available_cpus()
    print(f"# {cpu_model()}, {cores} cores, load {os.getloadavg()[0]:.1f}, {args.study.name}")
    for round_ in range(1, args.rounds + 1):
        measured = {plan: measure_plan(plan, workload) for plan in candidate_plans(cores)}
        figures = ", ".join(f"{plan}: {rate:.0f} images/s" for plan, rate in measured.items())
        print(f"round {round_}: {figures}; chosen {choose_plan(measured)}", flush=True)


if __name__ == "__main__":
    main()
