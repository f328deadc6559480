"""`tuner run` processes on one machine share its cores: they find each other through a folder.

The README suggests starting the same `tuner run` in several terminals for more workers; each
PyTorch process starts one thread per core, and oversubscribed OpenMP threads spin at every
barrier (bench/RESULTS.md). So every `tuner run` process (and every `--workers` child) puts a
file named HOST.PID in CACHE_DIR/running/ while it runs, holding its start time, and a process
not told its threads ($OMP_NUM_THREADS, `--workers`) takes its share of PyTorch's own thread
count at each trial start: that count // the live processes of this host. Files of processes
that have ended (kill -9 included) are ignored and removed; other hosts' files (a shared cache
folder) are not counted.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

REGISTRY_FOLDER = "running"


def registry_folder(cache_dir: Path | None) -> Path:
    """CACHE_DIR/running: where the processes of this machine register."""
    from tuner.data import default_cache_dir

    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / REGISTRY_FOLDER


@contextmanager
def registered(folder: Path) -> Iterator[None]:
    """Register this process in `folder` while the block runs; a folder that cannot be written
    only means this process is not counted by the others."""
    entry = folder / f"{_host()}.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        entry.write_text(_start_time(os.getpid()) or "", encoding="utf-8")
    except OSError as exc:
        log.debug("cannot register in %s: %s", folder, exc)
    try:
        yield
    finally:
        entry.unlink(missing_ok=True)


def live_processes(folder: Path) -> int:
    """The registered processes of this host that are still running (this one included)."""
    host = _host()
    try:
        entries = list(folder.glob(f"{glob.escape(host)}.*"))
    except OSError:
        return 1
    live = 0
    for entry in entries:
        pid_text = entry.name[len(host) + 1 :]
        if not pid_text.isdigit():
            continue
        if _alive(int(pid_text), entry):
            live += 1
        else:
            entry.unlink(missing_ok=True)  # a process that ended without cleaning up
    return max(1, live)


def thread_share(default_threads: int, folder: Path) -> int:
    """Threads for this process: PyTorch's own count split between this host's live processes."""
    return max(1, default_threads // live_processes(folder))


def share_cores(cache_dir: Path | None) -> Callable[..., None] | None:
    """Take this process's share of the cores now; returns the trial callback that takes it
    again before each next trial. None, changing nothing, when $OMP_NUM_THREADS sets threads."""
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return None
    import torch

    default, folder = torch.get_num_threads(), registry_folder(cache_dir)

    def take_share(*_trial_end: object) -> None:
        threads = thread_share(default, folder)
        if threads != torch.get_num_threads():
            log.info(
                "tuner processes on this machine: %d; %d thread(s) for this one (of %d)",
                live_processes(folder),
                threads,
                default,
            )
            torch.set_num_threads(threads)

    take_share()
    return take_share


def _alive(pid: int, entry: Path) -> bool:
    """Whether `pid` runs and is the process that wrote `entry` (not a reuse of its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    try:
        recorded = entry.read_text(encoding="utf-8").strip()
    except OSError:
        return False
    started = _start_time(pid)
    return not recorded or started is None or recorded == started


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, from field 3 on
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def _host() -> str:
    return socket.gethostname().replace("/", "_") or "host"
