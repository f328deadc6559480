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


def k8s(kind: str) -> dict[str, Any]:
    """The document of `kind` in deploy/k8s-job.yaml (the data claim, then the Job)."""
    (document,) = [
        doc
        for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s-job.yaml").read_text())
        if doc["kind"] == kind
    ]
    return document


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^version = "([^"]+)"', text, re.MULTILINE).group(1)


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
            secret_file = key.endswith("_FILE") and value.startswith("/run/secrets/")
            assert value.startswith("${") or secret_file, f"{key} has a literal password"
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
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres-password"
    assert "POSTGRES_PASSWORD" not in postgres["environment"]


def test_compose_has_no_password_literal() -> None:
    assert_no_password_literal(load("docker-compose.yml"))


def test_compose_reads_the_password_from_secret_files_only() -> None:
    """Not in any container's environment (`docker inspect` shows it) nor on a command line."""
    compose = load("docker-compose.yml")
    assert compose["secrets"] == {
        "postgres-password": {"file": "./secrets/postgres-password"},
        "storage-url": {"file": "./secrets/storage-url"},
    }
    services = compose["services"]
    assert services["postgres"]["secrets"] == ["postgres-password"]
    for name in ("worker", "dashboard"):
        service = services[name]
        assert service["secrets"] == ["storage-url"], name
        assert service["environment"]["TUNER_STORAGE_FILE"] == "/run/secrets/storage-url"
        assert "TUNER_STORAGE" not in service["environment"], name
    for _key, value in strings(compose):
        assert "://" not in value or "$" not in value, value  # no URL built from variables
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets/" in ignored and "secrets/" in (ROOT / ".dockerignore").read_text()


def test_images_are_tagged_with_the_version() -> None:
    """Never :latest: every replica and every node runs one build."""
    tag = version()
    assert load("docker-compose.yml")["services"]["worker"]["image"] == f"tuner-worker:{tag}"
    assert load("docker-compose.gpu.yml")["services"]["worker"]["image"] == (
        f"tuner-worker:{tag}-cuda"
    )
    (container,) = k8s("Job")["spec"]["template"]["spec"]["containers"]
    assert container["image"].endswith(f"tuner-worker:{tag}")
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert f"docker build -t tuner-worker:{tag} ." in (ROOT / "Dockerfile").read_text()


def test_compose_services_have_memory_limits_and_the_worker_a_healthcheck() -> None:
    services = load("docker-compose.yml")["services"]
    for name, service in services.items():
        assert re.fullmatch(r"\$\{[A-Z_]+:-\d+g\}", service["mem_limit"]), name
    worker = services["worker"]
    command = worker["healthcheck"]["test"]
    assert command[:3] == ["CMD", "python", "-c"] and "open_storage" in command[3]
    assert worker["read_only"] is True and "/tmp" in worker["tmpfs"]


def worker_healthcheck(storage_file: Path) -> subprocess.CompletedProcess:
    """The compose worker's healthcheck command, run here with TUNER_STORAGE_FILE."""
    command = load("docker-compose.yml")["services"]["worker"]["healthcheck"]["test"][1:]
    env = {**os.environ, "TUNER_STORAGE_FILE": str(storage_file), "PYTHONPATH": str(ROOT)}
    env.pop("TUNER_STORAGE", None)
    return subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=120, check=False
    )


def test_the_worker_healthcheck_fails_when_the_storage_does_not_answer(tmp_path: Path) -> None:
    url_file = tmp_path / "storage-url"
    url_file.write_text(f"sqlite:///{tmp_path / 'ok.db'}\n")
    assert worker_healthcheck(url_file).returncode == 0
    url_file.write_text(f"postgresql://tuner:pw@127.0.0.1:{free_port()}/tuner\n")
    assert worker_healthcheck(url_file).returncode != 0


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
    assert worker["environment"]["TUNER_STORAGE_FILE"].startswith("/run/secrets/")
    assert "@postgres:5432/" in (ROOT / "docker-compose.yml").read_text()  # the URL to write
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert worker["build"] == "."
    assert "container_name" not in worker  # a fixed name would prevent --scale
    assert not worker.get("ports")  # published ports would clash between replicas


def test_dashboard_reads_the_same_database() -> None:
    services = load("docker-compose.yml")["services"]
    dashboard = services["dashboard"]
    assert (
        dashboard["environment"]["TUNER_STORAGE_FILE"]
        == services["worker"]["environment"]["TUNER_STORAGE_FILE"]
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
    assert "POSTGRES_PASSWORD" not in env  # the password is in secrets/, not in .env
    assert {"TUNER_STUDY", "TUNER_TRIALS", "TUNER_WORKER_MEMORY"} <= set(env)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored and "secrets/" in ignored
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
    assert "resolve_storage_url(None)" in command  # TUNER_STORAGE_FILE, the secret file
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
    url_file = tmp_path / "storage-url"
    url_file.write_text(storage + "\n")
    env = {**os.environ, "TUNER_STORAGE_FILE": str(url_file), "PYTHONPATH": str(ROOT)}
    env.pop("TUNER_STORAGE", None)
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


def test_k8s_indexed_job_reads_the_url_from_a_secret_file() -> None:
    job = k8s("Job")
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] >= 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["tuner", "run"]
    assert not [env for env in container["env"] if env["name"] == "TUNER_STORAGE"]
    (storage,) = [env for env in container["env"] if env["name"] == "TUNER_STORAGE_FILE"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "storage-url"]
    assert storage["value"] == f"{mount['mountPath']}/url" and mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == "storage-url"]
    assert volume["secret"]["secretName"] == "tuner-db"
    assert_no_password_literal(job)
    text = (ROOT / "deploy" / "k8s-job.yaml").read_text()
    assert "--from-file=url=" in text and "--from-literal" not in text


def test_k8s_job_limits_threads_time_and_shares_data() -> None:
    spec = k8s("Job")["spec"]
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["cpu"]
    (threads,) = [env for env in container["env"] if env["name"] == "OMP_NUM_THREADS"]
    assert threads["valueFrom"]["resourceFieldRef"]["resource"] == "limits.cpu"
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = k8s("PersistentVolumeClaim")  # the claim the Job mounts is defined with it
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_k8s_job_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    pod = k8s("Job")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert "--uid 10001" in (ROOT / "Dockerfile").read_text()
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"]
    (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == tmp["name"]]
    assert "emptyDir" in volume
    probe = container["livenessProbe"]
    assert "open_storage" in " ".join(probe["exec"]["command"])
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 120  # outlasts a failover
