"""A real, throwaway PostgreSQL server for the tests: initdb and pg_ctl in a temporary folder, on a free port."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

ENV_URL = "HARNESS_POSTGRES_URL"  # an existing server (its user may CREATE DATABASE) instead of a throwaway one
ENV_BIN = "HARNESS_PG_BIN"  # the folder holding initdb and pg_ctl, when they are not found on their own
USER = "harness"
NO_SERVER = (
    "no PostgreSQL server binaries (initdb, pg_ctl): install them (Debian: apt-get install postgresql; "
    f".ci/install-postgres does it) or set {ENV_BIN} or {ENV_URL}"
)


def find_bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: $HARNESS_PG_BIN, Debian's versioned folder (newest first), or PATH."""
    candidates = [os.environ.get(ENV_BIN, "")]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    initdb = shutil.which("initdb")
    candidates.append(str(Path(initdb).resolve().parent) if initdb else "")
    for folder in filter(None, candidates):
        if all(os.access(Path(folder, tool), os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def _version(folder: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", folder)) or (0,)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server: its admin URL, and fresh databases on demand."""

    admin_url: str  # postgresql://user:password@127.0.0.1:port/postgres
    password: str

    def url(self, database: str) -> str:
        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        import psycopg2  # the test extra installs it; a missing driver is an error, not a reason to skip

        connection = psycopg2.connect(make_url(self.admin_url).render_as_string(hide_password=False))
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)


def _as_server_user(command: list[str], owner: str | None) -> list[str]:
    # initdb refuses to run as root: run the server as the `postgres` account the Debian package creates.
    return ["runuser", "-u", owner, "--", *command] if owner else command


@contextlib.contextmanager
def throwaway_server(bin_dir: Path) -> Iterator[PostgresServer]:
    """initdb + pg_ctl start in a temporary folder, listening on 127.0.0.1 only; stopped and removed afterwards."""
    owner = None
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root needs runuser to start PostgreSQL as another user")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no 'postgres' user to run the server as")
        owner = "postgres"
    # Under /tmp: short (a socket path must stay under 107 bytes) and reachable by the server's user.
    root = Path(tempfile.mkdtemp(prefix="harness-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    password = "pw-" + secrets.token_hex(8)  # random, so a leak test can grep for it
    (root / "pwfile").write_text(password + "\n")
    if owner:
        shutil.chown(root, owner)
        shutil.chown(root / "pwfile", owner)
    data, log = root / "data", root / "server.log"
    run = dict(check=True, capture_output=True, text=True, timeout=120)
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "--pwfile", str(root / "pwfile")]
        initdb += ["--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"]
        subprocess.run(_as_server_user(initdb, owner), **run)
        for attempt in range(3):  # another process may take the free port between the probe and the start
            port = _free_port()
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start"]
            started = subprocess.run(_as_server_user(start, owner), capture_output=True, text=True, timeout=120)
            if started.returncode == 0:
                break
            if attempt == 2:
                tail = log.read_text()[-2000:] if log.exists() else started.stderr
                raise RuntimeError(f"PostgreSQL did not start: {tail}")
        try:
            yield PostgresServer(f"postgresql://{USER}:{password}@127.0.0.1:{port}/postgres", password)
        finally:
            stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_server_user(stop, owner), capture_output=True, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server for the whole session: $HARNESS_POSTGRES_URL's, or a throwaway one; skips without binaries."""
    external = os.environ.get(ENV_URL)
    if external:
        yield PostgresServer(external, make_url(external).password or "")
        return
    bin_dir = find_bin_dir()
    if bin_dir is None:
        pytest.skip(NO_SERVER)
    with throwaway_server(bin_dir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database for this test (named after it) on the session's server."""
    name = "t_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:50] + "_" + secrets.token_hex(3)
    return postgres_server.create_database(name)
