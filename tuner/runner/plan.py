"""`tuner run --workers auto`: processes x threads per process, chosen by a quick measurement.

On a CPU, a small model cannot keep every core busy from one process, while a big one can; which
wins depends on the model, the batch size and the machine, so it is measured, not assumed: each
candidate plan (1 process x C threads, C processes x 1 thread, and the divisors between) trains
the study's typical model for a few steps on random data shaped like the dataset, every process
of the plan at once, and the plan with the most images per second wins. The result is cached in
the cache directory per machine (CPU model, cores, torch version) and study shape (model, batch,
input), so the measurement costs a few seconds once. A measurement taken while other work kept
the cores busy (load average above half the cores) is used for that run but not cached: it says
which plan wins on a loaded machine, not on this one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import queue
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CACHE_FILE = "workers-auto.json"
WARMUP_STEPS = 2  # the first steps allocate and pick kernels: not timed
TIMED_STEPS = 6
MEASURE_SECONDS = 4.0  # the timed steps of one plan stop after this, whatever is left
MEASURE_TIMEOUT = 300.0  # seconds to wait for a measuring process (starting torch included)
# A 1-minute load average above this share of the cores: the cores were busy with other work
# (this process loading its data adds ~0.1-0.3), and what was measured is not cached.
BUSY_LOAD_SHARE = 0.5


@dataclass(frozen=True)
class ThreadPlan:
    """Worker processes on this machine, and torch threads in each."""

    processes: int
    threads: int

    def __str__(self) -> str:
        processes = "process" if self.processes == 1 else "processes"
        threads = "thread" if self.threads == 1 else "threads"
        return f"{self.processes} {processes} x {self.threads} {threads}"


@dataclass(frozen=True)
class Workload:
    """What one measured step trains: the study's typical model on one batch."""

    config: dict[str, Any]  # TrialConfig.to_dict()
    input_shape: tuple[int, int, int]
    num_classes: int
    precision: str = "auto"  # the run's --precision: the trials' precision is timed

    def key(self, cores: int) -> str:
        """The cache key: this machine and this study shape."""
        machine = [cpu_model(), cores, _torch_version(), platform.machine()]
        shape = [self.config, list(self.input_shape), self.num_classes, self.precision]
        text = json.dumps([machine, *shape])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# images per second of a whole plan (all its processes together)
Measure = Callable[[ThreadPlan, Workload], float]


def candidate_plans(cores: int, threads_given: int | None = None) -> list[ThreadPlan]:
    """Plans that use every core once: processes x threads = cores (divisors of `cores`).

    With $OMP_NUM_THREADS set the threads are given: one plan, cores // threads processes.
    """
    if threads_given:
        return [ThreadPlan(max(1, cores // threads_given), threads_given)]
    return [ThreadPlan(p, cores // p) for p in range(1, cores + 1) if cores % p == 0]


def choose_plan(measured: dict[ThreadPlan, float]) -> ThreadPlan:
    """The plan with the most images per second; on a tie, fewer processes (less memory)."""
    return max(measured, key=lambda plan: (measured[plan], -plan.processes))


@dataclass(frozen=True)
class AutoPlan:
    """The chosen plan, what each candidate measured, whether it came from the cache, and the
    load average before a measurement that was too busy to cache."""

    plan: ThreadPlan
    measured: dict[ThreadPlan, float]
    cached: bool
    busy_load: float | None = None

    def describe(self) -> str:
        """One line for the run's first line of output."""
        figures = ", ".join(f"{plan}: {rate:.0f}" for plan, rate in self.measured.items())
        source = "cached measurement" if self.cached else "measured now"
        if self.busy_load is not None:
            source += f" under load {self.busy_load:.1f}, not cached"
        return f"--workers auto: {self.plan} ({source}, images/s: {figures})"


def auto_plan(
    workload: Workload,
    cache_dir: Path,
    cores: int,
    *,
    measure: Measure | None = None,
    threads_given: int | None = None,
    load_average: Callable[[], float] = lambda: os.getloadavg()[0],
) -> AutoPlan:
    """Pick a plan for `workload` on `cores` cores: from the cache, else by measuring (cached
    unless the load average says other work kept the cores busy)."""
    plans = candidate_plans(cores, threads_given)
    if len(plans) == 1:
        return AutoPlan(plans[0], {}, cached=False)
    path = cache_dir / CACHE_FILE
    key = workload.key(cores)
    stored = _read_cache(path).get(key)
    if stored is not None:
        measured = {ThreadPlan(**entry["plan"]): entry["rate"] for entry in stored}
        if set(measured) == set(plans):
            return AutoPlan(choose_plan(measured), measured, cached=True)
    measure = measure or measure_plan
    load = load_average()
    measured = {plan: measure(plan, workload) for plan in plans}
    if load > BUSY_LOAD_SHARE * cores:
        return AutoPlan(choose_plan(measured), measured, cached=False, busy_load=load)
    _write_cache(path, key, measured)
    return AutoPlan(choose_plan(measured), measured, cached=False)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: measure again
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, key: str, measured: dict[ThreadPlan, float]) -> None:
    data = _read_cache(path)
    data[key] = [{"plan": asdict(plan), "rate": rate} for plan, rate in measured.items()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, indent=1))
        partial.replace(path)  # another run reading it sees the old or the new file, whole
    except OSError as exc:
        log.warning("could not cache the --workers auto measurement in %s: %s", path, exc)


def cpu_model() -> str:
    """The CPU's model name (Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str:
    import torch

    return torch.__version__


def measure_plan(plan: ThreadPlan, workload: Workload) -> float:
    """Images per second of `plan`: its processes train `workload` at the same time.

    A one-process plan is measured here (no process to start); others in fresh processes.
    """
    if plan.processes == 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(plan.threads)
        try:
            return time_steps(workload)
        finally:
            torch.set_num_threads(threads)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(plan.processes)
    results = context.Queue()
    processes = [
        context.Process(target=_measure_main, args=(plan.threads, workload, start, results))
        for _ in range(plan.processes)
    ]
    for process in processes:
        process.start()
    try:
        rates = [results.get(timeout=MEASURE_TIMEOUT) for _ in processes]
    except queue.Empty:  # a process died or hangs: count the plan as the slowest
        log.warning("--workers auto: measuring %s failed; not choosing it", plan)
        rates = [0.0]
        for process in processes:
            process.terminate()
    for process in processes:
        process.join()
    return sum(rates)


def _measure_main(threads: int, workload: Workload, start: Any, results: Any) -> None:
    """One process of a measured plan: warm up, wait for the others, time a few steps."""
    import torch

    torch.set_num_threads(threads)
    results.put(time_steps(workload, barrier=start.wait))


def time_steps(workload: Workload, barrier: Callable[[], object] = lambda: None) -> float:
    """Images per second of training batches of `workload` in this process: the budget's probe
    (`tuner.runner.probe`), the model the trials build through their loop, on random data."""
    import torch

    from tuner.config import TrialConfig
    from tuner.engine import EngineOptions
    from tuner.runner.probe import random_data, time_batches

    config = TrialConfig.from_dict(workload.config)
    device = torch.device("cpu")
    images = config.batch_size * (WARMUP_STEPS + TIMED_STEPS + 1)
    data = random_data(workload.input_shape, workload.num_classes, images, device)
    timed = time_batches(
        data,
        device,
        config,
        EngineOptions(precision=workload.precision),
        batches=WARMUP_STEPS + TIMED_STEPS,
        warmup=WARMUP_STEPS,
        max_seconds=MEASURE_SECONDS,
        barrier=barrier,
    )
    return len(timed) * config.batch_size / sum(timed)


def typical_params(space: dict[str, Any], known: dict[str, Any] | None) -> dict[str, Any]:
    """Trial parameters of a typical model: the first [[enqueue]] set, else mid-range values."""
    from tuner.spec.grid import filter_param_name

    params = dict(known or {})
    for name, param in space.items():
        if param.is_fixed or name == "filters" or name in params:
            continue
        params[name] = _middle(param)
    filters = space["filters"]
    if not filters.is_fixed:
        blocks = params.get("num_blocks", space["num_blocks"].value)
        for block in range(1, blocks + 1):
            params.setdefault(filter_param_name(block), _middle(filters))
    return params


def _middle(param: Any) -> Any:
    """A value in the middle of a declared range or list of choices."""
    if param.type == "categorical":
        return param.choices[len(param.choices) // 2]
    middle = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
    if param.step:
        middle = param.low + round((middle - param.low) / param.step) * param.step
    middle = min(max(middle, param.low), param.high)
    return round(middle) if param.type == "int" else middle


def study_workload(
    spec: Any, input_shape: tuple[int, int, int], num_classes: int, precision: str = "auto"
) -> Workload:
    """The workload `--workers auto` measures for a study: the model and batch the budget's
    probe times (`tuner.runner.probe.first_config`)."""
    from tuner.runner.probe import first_config

    return Workload(first_config(spec).to_dict(), input_shape, num_classes, precision)


def resolve_workers_auto(settings: Any) -> tuple[Any, str]:
    """`settings` with `workers` set from the auto plan, and the line that says why."""
    import dataclasses

    import torch

    from tuner.data import load_dataset
    from tuner.data.load import default_cache_dir
    from tuner.engine import available_cpus

    spec = settings.load_spec()
    if settings.device.startswith("cuda") or (
        settings.device == "auto" and torch.cuda.is_available()
    ):
        count = len(settings.devices.split(",")) if settings.devices else torch.cuda.device_count()
        plan = dataclasses.replace(settings, workers=max(1, count))
        return plan, f"--workers auto: one worker per GPU ({plan.workers}); see --jobs-per-device"
    dataset = load_dataset(spec.dataset.name, settings.data_dir, settings.cache_dir)
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    chosen = auto_plan(
        study_workload(spec, dataset.input_shape, dataset.num_classes, settings.precision),
        settings.cache_dir or default_cache_dir(),
        available_cpus(),
        threads_given=int(given) if given.isdigit() and int(given) > 0 else None,
    )
    return dataclasses.replace(settings, workers=chosen.plan.processes), chosen.describe()
