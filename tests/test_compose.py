"""The deployment files: docker compose, the worker image, .env.example and the Kubernetes Job."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import optuna
import pytest
from net import free_port

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
INTERPOLATION = re.compile(r"\$\{[^}]*\}")  # ${NAME}, ${NAME:-default}, ${NAME:?message}
# After interpolations become "${}": a URL whose password is anything else, user:secret@host
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(?!\$\{\}@)[^@\s]+@")


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def strings(node: Any, key: str = "") -> list[tuple[str, str]]:
    """Every (key, string value) pair in a parsed YAML document; list items keep their key."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in strings(v, str(k))]
    if isinstance(node, list):
        return [pair for item in node for pair in strings(item, key)]
    return [(key, str(node))] if node is not None else []


def assert_no_password_literal(document: dict[str, Any]) -> None:
    for key, value in strings(document):
        if "PASSWORD" in key.upper():
            assert value.startswith("${"), f"{key} has a literal password"
        bare = INTERPOLATION.sub("${}", value)
        assert not URL_PASSWORD.search(bare), f"{key}: URL with a literal password: {value}"


def test_compose_services_volume_and_healthcheck() -> None:
    compose = load("docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"postgres", "worker", "dashboard"}

    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:15\.\d+-bookworm", postgres["image"])  # an exact server version
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pgdata" in compose["volumes"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert postgres["environment"][name].startswith("${"), name


def test_compose_has_no_password_literal() -> None:
    assert_no_password_literal(load("docker-compose.yml"))
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text  # compose refuses to start without a password


def test_compose_ports_are_bound_to_localhost() -> None:
    services = load("docker-compose.yml")["services"]
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published, "postgres and the dashboard publish ports"
    assert all(str(port).startswith("127.0.0.1:") for port in published), published
    assert "127.0.0.1:8080:8080" in services["dashboard"]["ports"]


def test_compose_worker_runs_tuner_on_postgres() -> None:
    worker = load("docker-compose.yml")["services"]["worker"]
    command = worker["command"]
    assert command[:2] == ["tuner", "run"]
    assert command[command.index("--study") + 1] == "${TUNER_STUDY:-digits-quick}"
    assert command[command.index("--trials") + 1] == "${TUNER_TRIALS:-100}"
    assert worker["environment"]["TUNER_STORAGE"].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in worker["environment"]["TUNER_STORAGE"]
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["build"] == "."
    assert "container_name" not in worker  # a fixed name would prevent --scale
    assert not worker.get("ports")  # published ports would clash between replicas


def test_dashboard_reads_the_same_database() -> None:
    services = load("docker-compose.yml")["services"]
    dashboard = services["dashboard"]
    assert (
        dashboard["environment"]["TUNER_STORAGE"]
        == services["worker"]["environment"]["TUNER_STORAGE"]
    )
    assert "optuna_dashboard" in " ".join(dashboard["command"])


def test_gpu_override_reserves_gpus_for_the_worker() -> None:
    worker = load("docker-compose.gpu.yml")["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "cu" in worker["build"]["args"]["TORCH_INDEX"]


def test_dockerfile_and_env_example() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    # The base image by its exact tag: images built on different days run one Python.
    assert re.search(r"^FROM python:3\.11\.\d+-slim-bookworm$", dockerfile, re.MULTILINE)
    assert "TORCH_INDEX" in dockerfile
    assert 'pip install -c constraints.txt ".[dashboard]"' in dockerfile
    # The study files are package data: they must be in the build context before the install.
    assert dockerfile.index("COPY studies") < dockerfile.index('".[dashboard]"')
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["POSTGRES_PASSWORD"] == ""  # to be filled in; never a default password
    assert {"POSTGRES_USER", "POSTGRES_DB", "TUNER_STUDY", "TUNER_TRIALS"} <= set(env)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored
    assert "!deploy/constraints.txt" in ignored  # deploy/ is ignored but for the pins


def test_constraints_pin_every_runtime_dependency() -> None:
    """Every distribution tuner[dashboard] needs is pinned to one version for the image."""
    lock = _lock_module()
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "deploy" / "constraints.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    needed = set(lock.runtime_closure())
    assert needed, "tuner is installed, so it has dependencies"
    assert not needed - set(pins), f"unpinned in deploy/constraints.txt: {needed - set(pins)}"
    assert {"optuna", "sqlalchemy", "torch", "torchvision"} <= set(pins)
    assert all(re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version) for version in pins.values())


def _lock_module() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_lock", ROOT / "deploy" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_wheel_ships_the_study_files(tmp_path: Path) -> None:
    """`tuner run --study NAME` works from any directory: the studies are package data."""
    source = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("studies", "tuner"):
        shutil.copytree(ROOT / name, source / name, symlinks=True)
    build = ["pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run(
        [sys.executable, "-m", *build, str(source)], check=True, capture_output=True, cwd=tmp_path
    )
    (wheel,) = tmp_path.glob("tuner-*.whl")
    shipped = {
        Path(name).name
        for name in zipfile.ZipFile(wheel).namelist()
        if name.startswith("tuner/studies/")
    }
    assert shipped == {path.name for path in (ROOT / "studies").glob("*.toml")}


def test_compose_workers_share_a_data_volume_and_limit_threads() -> None:
    compose = load("docker-compose.yml")
    worker = compose["services"]["worker"]
    assert "tuner-data:/data" in worker["volumes"]
    assert "tuner-data" in compose["volumes"]
    # OpenMP threads follow the CPUs a replica may use, so replicas don't oversubscribe a host.
    assert worker["environment"]["OMP_NUM_THREADS"] == worker["cpus"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "TUNER_DATA_DIR=/data/datasets" in dockerfile
    assert "TUNER_CACHE_DIR=/data/cache" in dockerfile


def test_dashboard_url_is_not_on_its_command_line() -> None:
    dashboard = load("docker-compose.yml")["services"]["dashboard"]
    command = " ".join(dashboard["command"])
    assert "TUNER_STORAGE" in command and "os.environ" in command
    assert "$" not in command and "://" not in command  # nothing `ps` could show
    assert "healthcheck" in dashboard


def test_compose_dashboard_command_serves_and_passes_its_healthcheck(tmp_path: Path) -> None:
    """The dashboard service's own command and healthcheck, run as real processes."""
    pytest.importorskip("optuna_dashboard")
    dashboard = load("docker-compose.yml")["services"]["dashboard"]
    port = str(free_port())
    command = [part.replace("8080", port) for part in dashboard["command"]]
    health = [part.replace("8080", port) for part in dashboard["healthcheck"]["test"][1:]]
    assert command[0] == health[0] == "python"
    storage = f"sqlite:///{tmp_path / 'dash.db'}"
    optuna.create_study(study_name="compose-check", storage=storage)
    env = {**os.environ, "TUNER_STORAGE": storage}
    server = subprocess.Popen(
        [sys.executable, *command[1:]],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run([sys.executable, *health[1:]], capture_output=True, check=False)
            if check.returncode == 0:
                break
            assert server.poll() is None, "the dashboard command exited"
            assert time.monotonic() < deadline, check.stderr.decode()[-500:]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_k8s_indexed_job_reads_the_url_from_a_secret() -> None:
    job = load("deploy/k8s-job.yaml")
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    (container,) = spec["template"]["spec"]["containers"]
    assert container["command"][:2] == ["tuner", "run"]
    (storage,) = [env for env in container["env"] if env["name"] == "TUNER_STORAGE"]
    assert storage["valueFrom"]["secretKeyRef"] == {"name": "tuner-db", "key": "url"}
    assert_no_password_literal(job)


def test_k8s_job_limits_threads_time_and_shares_data() -> None:
    job = load("deploy/k8s-job.yaml")
    spec = job["spec"]
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["cpu"]
    (threads,) = [env for env in container["env"] if env["name"] == "OMP_NUM_THREADS"]
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"] == "/data" and volume["persistentVolumeClaim"]["claimName"]
