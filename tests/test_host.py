"""`tuner run` processes on one machine split its cores through registrations in the cache."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from tuner.runner import host


def register(folder: Path, pid: int, start: str | None = None, name: str | None = None) -> Path:
    """A fake registration, as `host.registered` writes for process `pid`."""
    folder.mkdir(parents=True, exist_ok=True)
    entry = folder / f"{name or socket.gethostname()}.{pid}"
    entry.write_text((host._start_time(pid) or "") if start is None else start)
    return entry


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_threads_are_split_between_the_live_processes_of_this_host(tmp_path: Path) -> None:
    folder = tmp_path / "running"
    with host.registered(folder):
        assert host.thread_share(8, folder) == 8  # alone
        register(folder, os.getppid())  # another live process (pytest's parent)
        assert host.thread_share(8, folder) == 4
        gone = register(folder, dead_pid())  # ended without removing its file (kill -9)
        other = register(folder, os.getppid(), name="another-host")  # a shared cache folder
        assert host.thread_share(8, folder) == 4
        assert not gone.exists() and other.exists()
        assert host.thread_share(1, folder) == 1  # never below one thread
    assert not (folder / f"{socket.gethostname()}.{os.getpid()}").exists()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times need /proc")
def test_a_reused_pid_is_not_counted(tmp_path: Path) -> None:
    folder = tmp_path / "running"
    with host.registered(folder):
        register(folder, os.getppid(), start="1")  # that pid now belongs to another process
        assert host.live_processes(folder) == 1


def test_each_trial_takes_the_share_unless_omp_num_threads_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    folder = host.registry_folder(tmp_path)
    try:
        torch.set_num_threads(4)
        with host.registered(folder):
            take_share = host.share_cores(tmp_path)
            assert take_share is not None and torch.get_num_threads() == 4
            others = [register(folder, os.getppid(), name=socket.gethostname())]
            take_share()  # the next trial: two processes now
            assert torch.get_num_threads() == 2
            others[0].unlink()
            take_share()
            assert torch.get_num_threads() == 4
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        assert host.share_cores(tmp_path) is None
    finally:
        torch.set_num_threads(threads)


def test_tuner_run_next_to_another_run_takes_half_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same command in two terminals: each process trains on its share of the cores."""
    from typer.testing import CliRunner

    from studies import tiny_study_toml
    from tuner.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("TUNER_STORAGE", raising=False)
    cache = tmp_path / "cache"
    register(host.registry_folder(cache), os.getppid())  # the other terminal's `tuner run`
    (tmp_path / "tiny.toml").write_text(tiny_study_toml(training="max_epochs = 1\ntrials = 1"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        result = CliRunner().invoke(
            app, ["run", "--study", "tiny.toml", "--cache-dir", str(cache), "--device", "cpu"]
        )
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
        assert "tuner processes on this machine: 2; 1 thread(s) for this one (of 2)" in (
            result.output
        )
    finally:
        torch.set_num_threads(threads)
