"""Connections to the SQL database: the URLs supported, connect and statement timeouts, bounded and visible waits."""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from harness.errors import HarnessError

CONNECT_SECONDS = 10  # a server that has not completed a connection in this time is unreachable
STATEMENT_SECONDS = 30  # PostgreSQL cancels a statement that runs longer (the server's own timeout)
WAIT_SECONDS = 120  # how long a database that stopped answering mid-session is waited for, then the command stops
ENV_WAIT = "HARNESS_DB_WAIT_SECONDS"
NOTICE_SECONDS = 5.0  # the first "waiting for the database" line comes after this long without an answer
REPEAT_SECONDS = 10.0  # and then one line this often
SUPPORTED = (
    "the harness stores runs in SQLite (sqlite:///PATH) or PostgreSQL "
    "(postgresql://user:password@host/database, driver psycopg2: pip install 'harness[postgres]')"
)


def mask(url: str) -> str:
    """The URL with any password replaced by ***, even when it cannot be parsed."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")  # the last @: a password may hold one
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return mask(url)


def parse(url: str) -> URL:
    """The storage URL, checked: one SQLAlchemy understands, on a back end and driver the harness supports."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise HarnessError(f"--storage {mask(url)} is not a database URL: {SUPPORTED}") from None
    except ValueError:  # a port that is not a number, an unclosed [IPv6 address
        raise HarnessError(
            f"--storage {mask(url)}: its host or port cannot be read (a port is a number; an IPv6 address is "
            f"written [::1]:5432): {SUPPORTED}"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")  # not get_driver_name(): it loads the dialect
    if backend == "postgres":
        raise HarnessError(f"--storage {redact(url)}: write postgresql://, not postgres://; {SUPPORTED}")
    if backend not in ("sqlite", "postgresql"):
        raise HarnessError(f"--storage {redact(url)}: {backend} databases are not supported; {SUPPORTED}")
    if driver and driver != {"sqlite": "pysqlite", "postgresql": "psycopg2"}[backend]:
        raise HarnessError(f"--storage {redact(url)}: the {driver} driver is not supported; {SUPPORTED}")
    if backend == "sqlite":
        _check_persistent(url, parsed)
    return parsed


def _check_persistent(url: str, parsed: URL) -> None:
    """A run store keeps its records after the command ends: an in-memory SQLite database, or a file that is a
    device, a FIFO or a folder, would lose every record (or never open), so it is refused before anything trains."""
    database = parsed.database or ""
    memory = database in ("", ":memory:") or database.startswith("file::memory:")
    memory = memory or parsed.query.get("mode") == "memory" or "mode=memory" in database
    if memory:
        raise HarnessError(
            f"--storage {mask(url)} is an in-memory database: every run record would be lost when the command ends;"
            " use sqlite:///PATH (a file), or leave --storage out for sqlite:///<results>/harness.db"
        )
    path = Path(database.removeprefix("file:").split("?")[0])
    if path.exists() and not path.is_file():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, FIFO or socket)"
        raise HarnessError(f"--storage {mask(url)}: {path} is {kind}; a run store is a SQLite file")


def engine_url(url: str) -> str:
    """A bare postgresql:// URL names psycopg2 (SQLAlchemy 2.1 would pick psycopg 3, whose waits are not bounded)."""
    parsed = make_url(url)
    if parsed.drivername != "postgresql":
        return url
    return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)


def engine_connect_args(url: str) -> dict[str, Any]:
    """Lock waits for SQLite (several local writers); connect and statement timeouts for PostgreSQL."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"timeout": 60}
    if backend == "postgresql":
        return {"connect_timeout": CONNECT_SECONDS, "options": f"-c statement_timeout={STATEMENT_SECONDS * 1000}"}
    return {}


def open_error(url: str, exc: BaseException) -> str:
    """Why a database could not be opened, in one line, never with the password."""
    if isinstance(exc, ModuleNotFoundError):
        return f"no database driver for {redact(url)} ({exc.name}): pip install 'harness[postgres]'"
    return first_line(exc)


def first_line(exc: BaseException) -> str:
    """The driver's own message (not SQLAlchemy's wrapping, with its SQL), first line only."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def env_seconds(name: str, default: int) -> int:
    """A whole number of seconds (at least 1) from the environment variable `name`, or `default`."""
    try:
        value = int(os.environ.get(name, default))
    except ValueError:
        raise HarnessError(f"{name} must be a whole number of seconds, got {os.environ[name]!r}") from None
    if value < 1:
        raise HarnessError(f"{name} must be at least 1, got {value}")
    return value


def wait_seconds() -> int:
    """The longest wait for a database that stopped answering ($HARNESS_DB_WAIT_SECONDS, default 120)."""
    return env_seconds(ENV_WAIT, WAIT_SECONDS)


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine on a checked URL, with the harness's timeouts; PostgreSQL's waits are bounded and reported."""
    parse(url)
    if make_url(url).get_backend_name() == "postgresql":
        prepare_postgres()
    engine = sa.create_engine(engine_url(url), connect_args=engine_connect_args(url), pool_pre_ping=True, **kwargs)
    if engine.dialect.name == "postgresql":
        wait_for_reconnects(engine)
    return engine


def prepare_postgres() -> None:
    """Every psycopg2 connection of this process waits through `_wait`, so no wait on the server is unbounded."""
    wait_seconds()  # a bad setting is refused before anything connects
    import psycopg2.extensions  # type: ignore[import-untyped, import-not-found, unused-ignore]

    if psycopg2.extensions.get_wait_callback() is not _wait:
        psycopg2.extensions.set_wait_callback(_wait)


class _Outage:
    """Since when a server that answered before has stopped answering: shared by threads, reported now and then."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.answered: set[tuple[str, str]] = set()  # servers that completed a connection in this process
        self.since: dict[tuple[str, str], float] = {}
        self.reported = 0.0

    def waiting(self, server: tuple[str, str], started: float) -> float:
        """Seconds this server has not answered; prints a line once the wait is long enough to notice."""
        with self.lock:
            since = self.since.setdefault(server, started)
            now = time.monotonic()
            waited = now - since
            first = min(NOTICE_SECONDS, wait_seconds() / 2)
            if waited >= first and now - self.reported >= REPEAT_SECONDS:
                self.reported = now
                # Plain stderr: this runs in any thread (Optuna's heartbeat too), under any progress display.
                print(f"waiting for the database at {server[0]}:{server[1]} ({waited:.0f} s)", file=sys.stderr)
            return waited

    def answer(self, server: tuple[str, str]) -> None:
        with self.lock:
            self.answered.add(server)
            if self.since.pop(server, None) is not None:
                self.reported = 0.0


_outage = _Outage()


def _server(host: object, port: object) -> tuple[str, str]:
    return (str(host or "localhost"), str(port or 5432))


def _wait(connection: Any) -> None:
    """psycopg2's wait callback: poll the socket, never block on it for longer than the limits allow."""
    import psycopg2  # type: ignore[import-untyped, import-not-found, unused-ignore]
    import psycopg2.extensions as ext  # type: ignore[import-untyped, import-not-found, unused-ignore]

    started = time.monotonic()
    connecting = connection.status == ext.STATUS_SETUP
    try:
        server = _server(connection.info.host, connection.info.port)
    except psycopg2.Error:
        server = _server(None, None)
    limit = wait_seconds()
    while True:
        state = connection.poll()
        if state == ext.POLL_OK:
            _outage.answer(server)
            return
        readers, writers = ([connection.fileno()], []) if state == ext.POLL_READ else ([], [connection.fileno()])
        ready = select.select(readers, writers, [], 1.0)
        if ready[0] or ready[1]:
            continue
        waited = time.monotonic() - started
        if connecting and waited >= CONNECT_SECONDS:
            raise psycopg2.OperationalError(f"no answer from {server[0]}:{server[1]} in {CONNECT_SECONDS} s")
        if server in _outage.answered:
            waited = _outage.waiting(server, started)
            if waited >= limit:
                where = f"{server[0]}:{server[1]}"
                raise psycopg2.OperationalError(f"the database at {where} has not answered for {waited:.0f} s")


def wait_for_reconnects(engine: sa.Engine, connected: bool = False) -> None:
    """Once this engine has connected, a server that refuses or ignores new connections is retried (visibly) until
    the wait limit; a first connection that fails, or a refusal that waiting cannot cure, fails at once."""
    state = {"connected": connected}

    @sa.event.listens_for(engine, "do_connect")
    def connect(dialect: Any, _record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        server = _server(cparams.get("host"), cparams.get("port"))
        while True:
            started = time.monotonic()
            try:
                connection = dialect.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                final = any(word in str(exc) for word in ("authentication", "does not exist", "no pg_hba.conf"))
                if not state["connected"] or final or _outage.waiting(server, started) >= wait_seconds():
                    raise
                time.sleep(1.0)
                continue
            state["connected"] = True
            return connection
