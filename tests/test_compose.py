"""The deployment files: docker compose, the worker image, .env.example and the Kubernetes Job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

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
    assert postgres["image"] == "postgres:15"
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
    assert "optuna-dashboard" in " ".join(dashboard["command"])


def test_gpu_override_reserves_gpus_for_the_worker() -> None:
    worker = load("docker-compose.gpu.yml")["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "cu" in worker["build"]["args"]["TORCH_INDEX"]


def test_dockerfile_and_env_example() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "TORCH_INDEX" in dockerfile and 'pip install ".[dashboard]"' in dockerfile
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert env["POSTGRES_PASSWORD"] == ""  # to be filled in; never a default password
    assert {"POSTGRES_USER", "POSTGRES_DB", "TUNER_STUDY", "TUNER_TRIALS"} <= set(env)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored


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
