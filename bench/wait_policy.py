"""OpenMP wait policy: does OMP_WAIT_POLICY=PASSIVE help or cost tuner's training steps?

    python bench/wait_policy.py                 # 2 rounds, alone and next to a busy process
    python bench/wait_policy.py --steps 40 --rounds 3

Each measurement is a fresh Python process (the policy is read when libgomp loads, so it must
be in the environment before torch is imported) that trains the shipped fashion-mnist study's
known good model (3 conv blocks 32/64/128, batch 128, 28x28 inputs, random data) for `--steps`
steps after 3 warm-up steps, and prints wall and process CPU seconds. Settings: all threads
with the default policy, all threads with PASSIVE, one thread. "competing": one more process
spins a core-bound loop (another trial, another user) for the whole measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time, torch
from torch import nn
from tuner.config import TrialConfig
from tuner.families import build_model
steps = int(sys.argv[1])
config = TrialConfig(filters=(32, 64, 128), batch_size=128, fc_units=256)
model = build_model(config, (1, 28, 28), 10)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    opt.zero_grad(); nn.functional.cross_entropy(model(x), y).backward(); opt.step()
for _ in range(3):
    step()
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "threads": torch.get_num_threads()}))
"""

SPINNER = "import time\nwhile True:\n    sum(range(10000))\n"


def settings(cores: int) -> dict[str, dict[str, str]]:
    return {
        f"{cores} threads, default policy": {"OMP_NUM_THREADS": str(cores)},
        f"{cores} threads, PASSIVE": {"OMP_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"},
        "1 thread": {"OMP_NUM_THREADS": "1"},
    }


def measure(extra: dict[str, str], steps: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(extra, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(steps)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scenario", choices=["alone", "competing"], action="append")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# {cpu}, {cores} cores, load {os.getloadavg()[0]:.1f}, {now}")
    print("| scenario | setting | round | wall s | cpu s | images/s |")
    print("|---|---|---:|---:|---:|---:|")
    for scenario in args.scenario or ("alone", "competing"):
        spinner = None
        if scenario == "competing":
            spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
        try:
            for round_ in range(1, args.rounds + 1):
                for name, extra in settings(cores).items():
                    result = measure(extra, args.steps)
                    rate = args.steps * 128 / result["wall"]
                    print(
                        f"| {scenario} | {name} | {round_} | {result['wall']:.2f} | "
                        f"{result['cpu']:.2f} | {rate:.0f} |",
                        flush=True,
                    )
        finally:
            if spinner is not None:
                spinner.terminate()
                spinner.wait()
    print(f"# load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
