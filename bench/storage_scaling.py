"""How many trials per second a storage sustains with N worker processes (trivial objective).

    python bench/storage_scaling.py                                   # PostgreSQL: 1 4 16 32
    python bench/storage_scaling.py --backend sqlite --workers 4      # SQLite file, WAL
    python bench/storage_scaling.py --backend journal --workers 4     # Optuna journal file

Each point starts N processes that open the storage with `tuner.storage.open_storage`, wait until
all are ready, then run `study.optimize` on `x**2` (random sampler, heartbeats on) for
`--seconds`. PostgreSQL runs in its own throwaway cluster (tests/pg.py), with fsync on.
Reported per point: complete trials/s, failed trials, workers that crashed, retries after storage
errors ("database is locked" and the like) and, for PostgreSQL, the peak number of connections
the workers held (sampled every 0.2 s).
`--no-retry` turns tuner's retry of transient storage errors off, to see the raw backend.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the throwaway-server helper lives with the tests

import pg  # noqa: E402

from tuner.storage import open_storage  # noqa: E402

RETRY_LINE = "storage unavailable"


@dataclass(frozen=True)
class Point:
    workers: int
    seconds: float
    complete: int
    failed: int
    crashed: int
    retries: int
    peak_connections: int | None

    @property
    def rate(self) -> float:
        return self.complete / self.seconds


def run_worker(url: str, study_name: str, seconds: float, go_file: Path, no_retry: bool) -> None:
    """One worker process: open, say ready, wait for the go file, optimize for `seconds`."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(url, outage_timeout=0 if no_retry else 30)
    study = optuna.load_study(
        study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )
    print("ready", flush=True)
    while not go_file.exists():
        time.sleep(0.01)
    study.optimize(lambda trial: trial.suggest_float("x", -10, 10) ** 2, timeout=seconds)


def measure(url: str, workers: int, seconds: float, no_retry: bool, count_connections) -> Point:
    """Run `workers` processes for `seconds` against a fresh study and count the outcome."""
    study_name = f"scaling-{workers}-{time.time_ns()}"
    storage = open_storage(url)
    optuna.create_study(study_name=study_name, storage=storage)
    baseline = count_connections() if count_connections is not None else 0  # this process's
    with tempfile.TemporaryDirectory() as tmp:
        go_file = Path(tmp) / "go"
        command = [sys.executable, __file__, "--worker", url, study_name, str(seconds), tmp]
        if no_retry:
            command.append("--no-retry")
        procs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(workers)
        ]
        for proc in procs:  # wait for every worker to be ready (imports take a while on 2 cores)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"worker did not start:\n{proc.communicate()[1]}")
        peak: list[int] = []
        stop = threading.Event()
        if count_connections is not None:
            threading.Thread(target=_poll, args=(count_connections, peak, stop)).start()
        go_file.touch()
        errors = [proc.communicate()[1] for proc in procs]
        stop.set()
    trials = optuna.load_study(study_name=study_name, storage=storage).get_trials()
    crashed = sum(proc.returncode != 0 for proc in procs)
    for proc, err in zip(procs, errors, strict=True):
        if proc.returncode != 0:
            print(f"  worker exit {proc.returncode}: {err.strip().splitlines()[-1]}")
    return Point(
        workers=workers,
        seconds=seconds,
        complete=sum(t.state == TrialState.COMPLETE for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        crashed=crashed,
        retries=sum(err.count(RETRY_LINE) for err in errors),
        peak_connections=max(peak) - baseline if peak else None,
    )


def _poll(count_connections, peak: list[int], stop: threading.Event) -> None:
    while not stop.wait(0.2):
        peak.append(count_connections())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgresql", "sqlite", "journal"),
                        default="postgresql")  # fmt: skip
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--no-retry", action="store_true")
    parser.add_argument("--worker", nargs=4, metavar=("URL", "STUDY", "SECONDS", "DIR"))
    args = parser.parse_args()
    if args.worker:
        url, study_name, seconds, tmp = args.worker
        run_worker(url, study_name, float(seconds), Path(tmp) / "go", args.no_retry)
        return

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        server = None
        count_connections = None
        if args.backend == "postgresql":
            server = pg.start_postgres(settings={})  # default settings: fsync on
            url = server.create_database("bench")
            count_connections = _connection_counter(server)
        elif args.backend == "sqlite":
            url = f"sqlite:///{tmp}/bench.db"
        else:
            url = f"journal:{tmp}/bench.journal"
        try:
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(
                f"backend={args.backend} seconds/point={args.seconds} "
                f"retry={not args.no_retry} cpus={os.cpu_count()} load average before={load}"
            )
            print("workers  trials/s  complete  failed  crashed  retries  peak_conn")
            for workers in args.workers:
                p = measure(url, workers, args.seconds, args.no_retry, count_connections)
                conn = "-" if p.peak_connections is None else str(p.peak_connections)
                print(
                    f"{p.workers:7d}  {p.rate:8.1f}  {p.complete:8d}  {p.failed:6d}  "
                    f"{p.crashed:7d}  {p.retries:7d}  {conn:>9}",
                    flush=True,
                )
        finally:
            if server is not None:
                pg.stop_postgres(server)


def _connection_counter(server: pg.PostgresServer):
    import psycopg

    conninfo = (
        f"host=127.0.0.1 port={server.port} user={server.user} password={server.password} "
        "dbname=postgres"
    )
    connection = psycopg.connect(conninfo, autocommit=True)
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'tuner'"
    return lambda: connection.execute(query).fetchone()[0]


if __name__ == "__main__":
    main()
