"""`tuner dashboard`: optuna-dashboard on the study's storage, bound to loopback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from net import free_port
from study_fixtures import make_study, sqlite_url
from typer.testing import CliRunner

from tuner.cli import app

STARTUP_DEADLINE = 60.0  # seconds; importing torch and optuna on a busy machine is slow


def test_serves_the_study_on_loopback(tmp_path: Path) -> None:
    pytest.importorskip("optuna_dashboard")
    url = sqlite_url(tmp_path)
    make_study(5, name="fake", storage=url)
    port = free_port()
    command = [sys.executable, "-c", "from tuner.cli import app; app()"]
    args = ["dashboard", "--study", "fake", "--storage", url, "--port", str(port)]
    server = subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        studies = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as r:
                    studies = json.loads(r.read())
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)  # polling for the server to come up, with a deadline
        assert studies is not None, f"dashboard did not answer: {server.poll()}"
        assert [s["study_name"] for s in studies["study_summaries"]] == ["fake"]
        study_id = studies["study_summaries"][0]["study_id"]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=10
        ) as response:
            assert len(json.loads(response.read())["trials"]) == 5
    finally:
        server.terminate()
        try:
            output, _ = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert f"http://127.0.0.1:{port}/dashboard/studies/" in output


def test_unknown_study_is_a_user_error(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_study(2, name="fake", storage=url)
    result = CliRunner().invoke(app, ["dashboard", "--study", "nope", "--storage", url])
    assert result.exit_code == 2
    assert "no study 'nope'" in result.stderr


def test_missing_optuna_dashboard_says_how_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # makes the import fail
    result = CliRunner().invoke(app, ["dashboard", "--storage", sqlite_url(tmp_path)])
    assert result.exit_code == 2
    assert "pip install 'tuner[dashboard]'" in result.stderr


def test_busy_port_is_one_line_suggesting_another(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    make_study(2, name="fake", storage=url)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            app, ["dashboard", "--study", "fake", "--storage", url, "--port", str(port)]
        )
    assert result.exit_code == 2
    assert "--port" in result.stderr
    assert "http://" not in result.stdout  # no promise of a server that never starts
