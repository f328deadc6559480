"""A throwaway PostgreSQL server for tests and benchmarks (initdb + pg_ctl in a temp dir).

PostgreSQL refuses to run as root, so as root the server runs as the unprivileged user
`nobody` (via runuser) in a temp dir chowned to it; as any other user it runs as that user.
The server listens on 127.0.0.1 on a free port with its unix socket inside the temp dir and
uses password authentication over TCP, so tests can also try wrong credentials.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from net import free_port

BINARIES = ("initdb", "pg_ctl", "postgres")
SERVER_USER = "nobody"  # used only when running as root
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def postgres_available() -> bool:
    """True when the PostgreSQL server binaries are on PATH."""
    return all(shutil.which(name) for name in BINARIES)


@dataclass
class PostgresServer:
    """A running throwaway server; `url(database)` gives a SQLAlchemy URL for it."""

    root: Path
    port: int
    password: str
    user: str = "tuner"
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql+psycopg://{self.user}:{secret}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-k {self.root}"]
        options += [f"-c {key}={value}" for key, value in self.settings.items()]
        log = ["-l", str(self.log_file)]
        _run_as_server_user(["pg_ctl", "-D", str(self.data_dir), *log, "-w", "-t", "30",
                             "-o", " ".join(options), "start"])  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        _run_as_server_user(["pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def create_database(self, name: str) -> str:
        """Create database `name` and return its URL."""
        import psycopg  # imported here so that collecting tests does not need it

        conninfo = f"host=127.0.0.1 port={self.port} user={self.user} password={self.password}"
        with psycopg.connect(f"{conninfo} dbname=postgres", autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(settings: dict[str, str] | None = None) -> PostgresServer:
    """initdb a cluster in a new temp dir and start it; call `stop_postgres` when done."""
    root = Path(tempfile.mkdtemp(prefix="tuner-pg-"))
    password = secrets.token_hex(8)
    (root / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        account = pwd.getpwnam(SERVER_USER)
        os.chown(root, account.pw_uid, account.pw_gid)
        os.chown(root / "pwfile", account.pw_uid, account.pw_gid)
    try:
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'pwfile'}"]
        _run_as_server_user(["initdb", "-D", str(root / "data"), "-U", "tuner", *auth,
                             "-E", "UTF8", "--no-sync"])  # fmt: skip
        server = PostgresServer(root, 0, password, settings=dict(settings or FAST_SETTINGS))
        for _ in range(3):  # a free port can be taken by someone else before the server binds it
            server.port = free_port()
            try:
                server.start()
                return server
            except RuntimeError:
                continue
        raise RuntimeError(f"PostgreSQL did not start:\n{_tail(server.log_file)}")
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def stop_postgres(server: PostgresServer) -> None:
    """Stop the server (immediate: no checkpoint, nothing to keep) and delete its files."""
    try:
        server.stop("immediate")
    finally:
        shutil.rmtree(server.root, ignore_errors=True)


def _run_as_server_user(command: list[str]) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", SERVER_USER, "--", *command]
    result = subprocess.run(command, capture_output=True, text=True, cwd="/", check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text().splitlines()[-lines:])
    except OSError:
        return "(no server log)"
