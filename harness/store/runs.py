"""Run records in a SQL database (SQLAlchemy): the same URL that Optuna's studies use."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import (
    DatabaseError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    SQLAlchemyError,
)

from harness.errors import HarnessError, clip
from harness.path_guard import lexically_inside

# engine_url, engine_connect_args and redact are imported from here by older callers.
from harness.store.database import (  # noqa: F401
    create_engine,
    engine_connect_args,
    engine_url,
    first_line,
    open_error,
    parse,
    redact,
)
from harness.store.liveness import grace_seconds, pid_alive, stale_before
from harness.store.migrations import foreign_table, migrate
from harness.store.records import COLUMNS, PATHS, STATUSES, RunRecord, metadata, now, runs_table  # noqa: F401

_T = TypeVar("_T")


def default_storage(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'harness.db'}"


class StoreUnavailable(HarnessError):
    """The run store cannot be reached or did not answer in time (a server down or frozen, a lock never released)."""


class RunStore:
    """Create, update and query run records. Every write is one transaction, so a crash leaves whole rows.

    `root` is the results folder (by default a SQLite file's own folder): artifact paths are stored relative to it and
    read back against the results folder of the command that reads them, so a moved folder, another working
    directory or another machine still finds them.
    """

    def __init__(self, url: str, root: str | Path | None = None) -> None:
        self.url = url
        parsed = parse(url)
        self.backend = parsed.get_backend_name()
        if root is None and self.backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            root = Path(str(parsed.database)).parent  # harness keeps its SQLite file in the results folder
        self.root = Path(root) if root is not None else None
        self.refused: dict[str, str] = {}  # run id -> why a path its record names was not followed
        # What messages name: the file for SQLite, the URL without its password for a server.
        self.where = parsed.database if self.backend == "sqlite" and parsed.database else redact(url)
        if self.backend == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine = create_engine(url)
            if self.backend == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
                self._check_sqlite_file()
            # Creates a new store, or brings an older one forward (one locked transaction); refuses a newer one.
            self.schema_before = migrate(self.engine, runs_table, self.where)  # its version when opened; 0: new
            self._check_table()
        except DatabaseError as exc:
            if self._is_damage(exc):
                raise self._damaged(exc) from None
            raise HarnessError(f"cannot open the run store at {redact(url)}: {open_error(url, exc)}") from None
        except (SQLAlchemyError, ModuleNotFoundError) as exc:
            raise HarnessError(f"cannot open the run store at {redact(url)}: {open_error(url, exc)}") from None

    def _check_sqlite_file(self) -> None:
        """Refuse a damaged file before anything is trained or written into it (PRAGMA quick_check: one pass)."""
        with self.engine.connect() as connection:
            found = [row[0] for row in connection.exec_driver_sql("PRAGMA quick_check(3)")]
        if found != ["ok"]:
            problems = "; ".join(" ".join(str(p).split()) for p in found)
            raise HarnessError(
                f"the run store {self.where} is damaged (PRAGMA quick_check: {problems[:300]}): move it aside or "
                "restore a copy; nothing was written to it"
            )

    def _is_damage(self, exc: BaseException) -> bool:
        """SQLite's own words for a file it cannot read as a database."""
        words = ("malformed", "not a database", "disk image")
        return self.backend == "sqlite" and any(word in str(getattr(exc, "orig", exc)) for word in words)

    def _damaged(self, exc: BaseException) -> HarnessError:
        return HarnessError(
            f"the run store {self.where} is damaged or not a SQLite database ({first_line(exc)}): move it aside or "
            "restore a copy"
        )

    def _check_table(self) -> None:
        """A `harness_runs` table made by another program is named, never written to or read as ours (the migrations
        refuse one without the first release's columns; this catches the rest)."""
        have = {column["name"] for column in sa.inspect(self.engine).get_columns(runs_table.name)}
        missing = [column.name for column in runs_table.columns if column.name not in have]
        if missing:
            raise foreign_table(runs_table, self.where, missing)

    def _call(self, doing: str, operation: Callable[[], _T]) -> _T:
        """Run one database operation; whatever fails becomes one line that names the store.

        A statement whose server connection broke under it (a restart) is tried once more on a new connection: the
        engine waits for the server to come back, visibly and no longer than the wait limit (harness.store.database).
        """
        for attempt in (1, 2):
            try:
                return operation()
            except IntegrityError:
                raise  # a clash with a row that exists, not a store failure: callers tell a taken run id by it
            except DBAPIError as exc:
                if attempt == 1 and self.backend == "postgresql" and exc.connection_invalidated:
                    continue
                raise self._failure(doing, exc) from None
            except (ValueError, UnicodeDecodeError) as exc:
                if doing != "read":
                    raise
                # A stored value that no longer decodes (JSON, text): damage quick_check cannot see.
                raise HarnessError(f"cannot read the run store {self.where}: a damaged record ({exc})") from None
        raise AssertionError("unreachable")

    def _failure(self, doing: str, exc: DBAPIError) -> HarnessError:
        reason = first_line(exc)[:300]  # a damaged row's text can be long
        if self._is_damage(exc):
            return self._damaged(exc)
        if isinstance(exc, OperationalError):
            return StoreUnavailable(f"cannot {doing} the run store at {self.where}: {reason}")
        return HarnessError(f"cannot {doing} the run store at {self.where}: {reason}")

    def _write(self, statement: sa.Executable) -> None:
        def write() -> None:
            with self.engine.begin() as connection:
                connection.execute(statement)

        self._call("write to", write)

    def _stored(self, values: dict[str, Any]) -> dict[str, Any]:
        """Artifact paths as they are stored: relative to the results folder when inside it."""
        if self.root is None:
            return values
        root = self.root.resolve()
        for key in PATHS:
            if values.get(key):
                path = Path(values[key]).resolve()
                values[key] = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        return values

    def _record(self, row: Any) -> RunRecord:
        """A row as a record, its artifact paths found under this command's results folder."""
        record = RunRecord(**row)
        if self.root is None:
            return record
        return dataclasses.replace(
            record,
            artifacts=self._locate(record.artifacts, record.run_id),
            submission=self._locate(record.submission, record.run_id),
        )

    def _locate(self, stored: str | None, run_id: str) -> str | None:
        """Where an artifact is now: under the results folder first; older records hold absolute paths or paths
        relative to the folder harness ran from, so the part from `runs/<run_id>` on is looked for there too.

        A record names files of its own run only: a path that does not lie in a `runs/<run_id>` folder inside the
        results folder (absolute elsewhere, climbing out with `..`, or another run's) is not followed; it reads as no
        path, and `refused` says why.
        """
        if not stored or self.root is None:
            return stored
        path = Path(stored)
        own = self.root / "runs" / run_id
        candidates = [] if path.is_absolute() else [self.root / path]
        if run_id in path.parts:
            candidates.append(own / Path(*path.parts[path.parts.index(run_id) + 1 :]))
        trusted = [c for c in candidates if lexically_inside(self.root, c) and _names_run(self.root, c, run_id)]
        if not trusted:
            self.refused[run_id] = (
                f"run {run_id}: its record names {clip(stored)}, outside its folder runs/{run_id} in {self.root};"
                " not followed (an edited or damaged record)"
            )
            return None
        found = next((c for c in trusted if c.exists()), trusted[0])
        return str(found)

    def start(self, run_id: str, **values: Any) -> None:
        started = now()
        row = {"run_id": run_id, "status": "running", "host": socket.gethostname(), "pid": os.getpid()}
        row |= {"created_at": started, "updated_at": started, **self._stored(values)}

        def insert() -> None:
            try:
                with self.engine.begin() as connection:
                    connection.execute(runs_table.insert().values(**row))
            except IntegrityError:
                # Tried again after a lost connection, the first insert may have landed: that row is this one.
                mine = self._row(run_id)
                ours = (row["host"], row["pid"], started)
                if mine is None or (mine["host"], mine["pid"], mine["created_at"]) != ours:
                    raise

        self._call("write to", insert)

    def update(self, run_id: str, **values: Any) -> None:
        unknown = set(values) - COLUMNS
        if unknown:
            raise ValueError(f"unknown run record fields: {sorted(unknown)}")
        if "status" in values and values["status"] not in STATUSES:
            raise ValueError(f"unknown status {values['status']!r}")
        values = self._stored(values)
        self._write(runs_table.update().where(runs_table.c.run_id == run_id).values(updated_at=now(), **values))

    def _row(self, run_id: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(runs_table).where(runs_table.c.run_id == run_id)).mappings().first()

    def has(self, run_id: str) -> bool:
        def has() -> bool:
            with self.engine.connect() as connection:
                query = sa.select(runs_table.c.run_id).where(runs_table.c.run_id == run_id)
                return connection.execute(query).first() is not None

        return self._call("read", has)

    def get(self, run_id: str) -> RunRecord:
        row = self._call("read", lambda: self._row(run_id))
        if row is None:
            raise HarnessError(f"no run {run_id!r} in {redact(self.url)}")
        return self._record(row)

    def runs(self, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        self.reap_dead()
        query = sa.select(runs_table).order_by(runs_table.c.created_at)
        if study is not None:
            query = query.where(runs_table.c.study == study)
        if status is not None:
            query = query.where(runs_table.c.status == status)

        def read() -> list[RunRecord]:
            with self.engine.connect() as connection:
                return [self._record(row) for row in connection.execute(query).mappings()]

        return self._call("read", read)

    def fail_if_running(self, run_ids: list[str], error: str) -> int:
        """Mark these runs failed, but only those still 'running' (another process may have finished one)."""
        if not run_ids:
            return 0
        statement = (
            runs_table.update()
            .where(runs_table.c.run_id.in_(run_ids), runs_table.c.status == "running")
            .values(status="failed", error=error, updated_at=now())
        )

        def write() -> int:
            with self.engine.begin() as connection:
                return int(connection.execute(statement).rowcount or 0)

        return self._call("write to", write)

    def touch(self, run_id: str) -> None:
        """A running run's heartbeat: its updated_at is now (liveness.RunHeartbeat calls this while it trains)."""
        statement = (
            runs_table.update()
            .where(runs_table.c.run_id == run_id, runs_table.c.status == "running")
            .values(updated_at=now())
        )
        self._write(statement)

    def reap_dead(self) -> int:
        """End as failed the 'running' records whose process is gone: on this host, a pid that no longer exists; on
        any host, a record whose heartbeat stopped longer ago than the grace period (store.liveness); how many."""
        host = socket.gethostname()
        query = sa.select(runs_table.c.run_id, runs_table.c.pid, runs_table.c.host, runs_table.c.updated_at).where(
            runs_table.c.status == "running"
        )
        cutoff = stale_before(now())

        def read() -> list[tuple[str, str]]:
            dead = []
            with self.engine.connect() as connection:
                for r in connection.execute(query):
                    if r.host == host and r.pid is not None:
                        if not pid_alive(r.pid):
                            dead.append((r.run_id, "the process running it ended without finishing (killed?)"))
                    elif r.updated_at is not None and r.updated_at < cutoff:
                        dead.append((r.run_id, f"its process on {r.host} stopped sending heartbeats for over"
                                     f" {grace_seconds()} s (killed, or its machine was lost)"))  # fmt: skip
            return dead

        dead = self._call("read", read)
        for run_id, why in dead:
            self.fail_if_running([run_id], why)
        return len(dead)


def _names_run(root: Path, path: Path, run_id: str) -> bool:
    """Whether `path`, `..` resolved, lies in a folder runs/<run_id> under `root`."""
    parts = Path(os.path.normpath(os.path.abspath(path))).relative_to(os.path.abspath(root)).parts
    return any(parts[i : i + 2] == ("runs", run_id) for i in range(len(parts)))


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets readers (the leaderboard) work while a run writes.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()
