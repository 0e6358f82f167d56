"""Run records in a SQL database (SQLAlchemy): the same URL that Optuna's studies use."""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import socket
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from harness.errors import HarnessError

STATUSES = ("running", "complete", "pruned", "failed", "interrupted")

metadata = sa.MetaData()
runs_table = sa.Table(
    "harness_runs",
    metadata,
    sa.Column("run_id", sa.String(120), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("architecture", sa.String(120), nullable=False),
    sa.Column("origin", sa.String(32), nullable=False),
    sa.Column("study", sa.String(200), index=True),
    sa.Column("trial", sa.Integer),
    sa.Column("tuner", sa.String(32)),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("hyperparameters", sa.JSON),
    sa.Column("val_accuracy", sa.Float),
    sa.Column("val_auc", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_accuracy_std", sa.Float),
    sa.Column("val_auc_std", sa.Float),
    sa.Column("folds", sa.Integer),
    sa.Column("tta", sa.Integer),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("epochs_run", sa.Integer),
    sa.Column("seconds", sa.Float),
    sa.Column("images_per_second", sa.Float),
    sa.Column("parameters", sa.BigInteger),
    sa.Column("n_train", sa.Integer),
    sa.Column("n_val", sa.Integer),
    sa.Column("dataset", sa.Text),  # a path: PostgreSQL enforces VARCHAR lengths, SQLite does not
    sa.Column("synthetic", sa.Boolean),
    sa.Column("backend", sa.String(32)),
    sa.Column("environment", sa.JSON),
    sa.Column("artifacts", sa.Text),
    sa.Column("submission", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
)


@dataclass(frozen=True)
class RunRecord:
    """One row of `harness_runs`."""

    run_id: str
    status: str
    architecture: str
    origin: str
    spec: dict[str, Any]
    created_at: dt.datetime
    updated_at: dt.datetime
    study: str | None = None
    trial: int | None = None
    tuner: str | None = None
    hyperparameters: dict[str, Any] | None = None
    val_accuracy: float | None = None
    val_auc: float | None = None
    val_loss: float | None = None
    val_accuracy_std: float | None = None
    val_auc_std: float | None = None
    folds: int | None = None
    tta: int | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    seconds: float | None = None
    images_per_second: float | None = None
    parameters: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    dataset: str | None = None
    synthetic: bool | None = None
    backend: str | None = None
    environment: dict[str, Any] | None = None
    artifacts: str | None = None
    submission: str | None = None
    error: str | None = None
    host: str | None = None
    pid: int | None = None


_COLUMNS = {f.name for f in fields(RunRecord)}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def default_storage(results_dir: str | Path) -> str:
    return f"sqlite:///{Path(results_dir).resolve() / 'harness.db'}"


def redact(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def engine_url(url: str) -> str:
    """A bare postgresql:// URL gets the installed driver (SQLAlchemy 2.0 defaults to psycopg2, 2.1 to psycopg 3)."""
    parsed = make_url(url)
    if parsed.drivername != "postgresql":
        return url
    for module in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(module) is not None:
            return parsed.set(drivername=f"postgresql+{module}").render_as_string(hide_password=False)
    return url


def engine_connect_args(url: str) -> dict[str, Any]:
    """Lock waits for SQLite (several local writers), a connect timeout for servers (an unreachable host)."""
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"timeout": 60}
    return {"connect_timeout": 10} if backend == "postgresql" else {}


def open_error(url: str, exc: BaseException) -> str:
    """Why a database could not be opened, in one line, never with the password."""
    if isinstance(exc, ModuleNotFoundError):
        return f"no database driver for {redact(url)} ({exc.name}): pip install 'harness[postgres]'"
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunStore:
    """Create, update and query run records. Every write is one transaction, so a crash leaves whole rows."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise HarnessError(
                f"--storage {redact(url)!s} is not a database URL (e.g. sqlite:///results/harness.db)"
            ) from None
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            # Several processes may write: SQLite waits for the lock instead of failing at once.
            self.engine = sa.create_engine(engine_url(url), connect_args=engine_connect_args(url), pool_pre_ping=True)
            if parsed.get_backend_name() == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            for attempt in range(5):
                try:
                    metadata.create_all(self.engine)
                    break
                except (IntegrityError, ProgrammingError, OperationalError):
                    # Processes starting together on a new database race to create the table (PostgreSQL raises
                    # IntegrityError/ProgrammingError, SQLite "table already exists" or "locked"): look again.
                    if attempt == 4:
                        raise
                    time.sleep(0.5)
        except (SQLAlchemyError, ModuleNotFoundError) as exc:
            raise HarnessError(f"cannot open the run store at {redact(url)}: {open_error(url, exc)}") from None

    def _write(self, statement: sa.Executable) -> None:
        try:
            with self.engine.begin() as connection:
                connection.execute(statement)
        except OperationalError as exc:
            raise HarnessError(f"cannot write to the run store at {redact(self.url)}: {exc.orig}") from None

    def start(self, run_id: str, **values: Any) -> None:
        now = _now()
        row = {"run_id": run_id, "status": "running", "host": socket.gethostname(), "pid": os.getpid()}
        row |= {"created_at": now, "updated_at": now, **values}
        self._write(runs_table.insert().values(**row))

    def update(self, run_id: str, **values: Any) -> None:
        unknown = set(values) - _COLUMNS
        if unknown:
            raise ValueError(f"unknown run record fields: {sorted(unknown)}")
        if "status" in values and values["status"] not in STATUSES:
            raise ValueError(f"unknown status {values['status']!r}")
        self._write(runs_table.update().where(runs_table.c.run_id == run_id).values(updated_at=_now(), **values))

    def has(self, run_id: str) -> bool:
        with self.engine.connect() as connection:
            query = sa.select(runs_table.c.run_id).where(runs_table.c.run_id == run_id)
            return connection.execute(query).first() is not None

    def get(self, run_id: str) -> RunRecord:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(runs_table).where(runs_table.c.run_id == run_id)).mappings().first()
        if row is None:
            raise HarnessError(f"no run {run_id!r} in {redact(self.url)}")
        return RunRecord(**row)

    def runs(self, study: str | None = None, status: str | None = None) -> list[RunRecord]:
        self.reap_dead()
        query = sa.select(runs_table).order_by(runs_table.c.created_at)
        if study is not None:
            query = query.where(runs_table.c.study == study)
        if status is not None:
            query = query.where(runs_table.c.status == status)
        with self.engine.connect() as connection:
            return [RunRecord(**row) for row in connection.execute(query).mappings()]

    def fail_if_running(self, run_ids: list[str], error: str) -> int:
        """Mark these runs failed, but only those still 'running' (another process may have finished one)."""
        if not run_ids:
            return 0
        statement = (
            runs_table.update()
            .where(runs_table.c.run_id.in_(run_ids), runs_table.c.status == "running")
            .values(status="failed", error=error, updated_at=_now())
        )
        try:
            with self.engine.begin() as connection:
                return int(connection.execute(statement).rowcount or 0)
        except OperationalError as exc:
            raise HarnessError(f"cannot write to the run store at {redact(self.url)}: {exc.orig}") from None

    def reap_dead(self) -> int:
        """Mark 'running' records of processes that no longer exist on this host as failed; returns how many."""
        host = socket.gethostname()
        query = sa.select(runs_table.c.run_id, runs_table.c.pid).where(
            runs_table.c.status == "running", runs_table.c.host == host
        )
        with self.engine.connect() as connection:
            dead = [r.run_id for r in connection.execute(query) if r.pid is not None and not _pid_alive(r.pid)]
        for run_id in dead:
            self.update(run_id, status="failed", error="the process running it ended without finishing (killed?)")
        return len(dead)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets readers (the leaderboard) work while a run writes.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()
