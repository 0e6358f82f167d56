"""A lock per study across processes and machines, so that workers hand out trial slots one at a time."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from harness.store.database import create_engine


class StudyLock:
    """`with lock:` holds the study's lock: a PostgreSQL advisory lock, or a file lock beside a SQLite database.

    Both are released by the operating system or the server when a holder dies, so a killed worker never leaves
    the study locked. Other databases get no lock (Optuna still works; `--trials` may then be overshot slightly).
    """

    def __init__(self, url: str, study: str) -> None:
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        digest = hashlib.sha256(f"harness-study:{study}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)  # pg_advisory_lock takes a bigint
        self.path: Path | None = None
        self.engine: sa.Engine | None = None
        if self.backend == "postgresql":
            # No pool: a connection closed on error takes any lock it held with it.
            self.engine = create_engine(url, poolclass=NullPool)
        elif self.backend == "sqlite" and parsed.database and parsed.database != ":memory:":
            self.path = Path(f"{parsed.database}.{digest[:6].hex()}.lock")
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> StudyLock:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self._hold())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stack is not None
        self._stack.close()

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        if self.engine is not None:
            with self.engine.connect() as connection:
                # Polled, not a blocking pg_advisory_lock: a statement waiting for a lock would hit the statement
                # timeout and look like a silent server to the wait limit (harness.store.database).
                while not connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar():
                    time.sleep(0.05)
                try:
                    yield
                finally:
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
        elif self.path is not None:
            with open(self.path, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        else:
            yield
