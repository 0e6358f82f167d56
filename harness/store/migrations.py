"""Schema versions of the run store: an older store is brought forward in one locked transaction, a newer one refused.

Why a short list of migrations here and not Alembic (which Optuna installs):
- The database is shared with Optuna, whose own Alembic history owns the `alembic_version` table; ours would need a
  second version table, an env.py and a script folder shipped inside the wheel, for a handful of ALTER statements.
- The whole history is three versions of one table. Each step below is a few lines, in the order it happened.
- What matters most is the lock and the transaction around the steps (below), which Alembic leaves to its env.py.

The version lives in the one-row table `harness_schema`. Stores made before versions were recorded have no such
table: their version is read off their columns (`_unversioned`). To change `runs_table` (harness/store/runs.py), add a
Migration that makes the same change: tests/store/test_migrations.py checks that a migrated first-release store has the
columns a new store gets.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa

from harness.errors import HarnessError

VERSION_TABLE = "harness_schema"
_LOCK_KEY = 0x6861726E657373  # "harness": PostgreSQL's advisory lock that serialises migrations of one database

_schema = sa.MetaData()
version_table = sa.Table(VERSION_TABLE, _schema, sa.Column("version", sa.Integer, nullable=False))

# The columns of the first released table (commit de1d1b2): an unversioned table without them is not ours.
V1_COLUMNS = frozenset(
    (  # noqa: SIM905
        "run_id status architecture origin study trial tuner spec hyperparameters val_accuracy val_auc val_loss "
        "best_epoch epochs_run seconds images_per_second parameters n_train n_val dataset synthetic backend "
        "environment artifacts submission error host pid created_at updated_at"
    ).split()
)


@dataclass(frozen=True)
class Migration:
    """One step: `apply` turns a store of version `version - 1` into `version`, inside the caller's transaction."""

    version: int
    what: str
    apply: Callable[[sa.Connection, str], None]  # (connection, table name)


def _add_columns(*columns: sa.Column[object]) -> Callable[[sa.Connection, str], None]:
    def apply(connection: sa.Connection, table: str) -> None:
        preparer = connection.dialect.identifier_preparer
        for column in columns:
            kind = column.type.compile(dialect=connection.dialect)
            name = preparer.quote(column.name)
            connection.exec_driver_sql(f"ALTER TABLE {preparer.quote(table)} ADD COLUMN {name} {kind}")

    return apply


def _v2(connection: sa.Connection, table: str) -> None:
    _add_columns(
        sa.Column("val_accuracy_std", sa.Float),
        sa.Column("val_auc_std", sa.Float),
        sa.Column("folds", sa.Integer),
        sa.Column("tta", sa.Integer),
    )(connection, table)
    # Every run before K-fold and TTA existed had one split and one view: what a run today records as 1 and 1.
    connection.exec_driver_sql(f"UPDATE {table} SET folds = 1, tta = 1")


def _v3(connection: sa.Connection, table: str) -> None:
    # PostgreSQL enforces VARCHAR(200) and a long dataset path failed the insert; SQLite never enforced a length
    # (and cannot change a column's declared type without rebuilding the table), so there is nothing to do there.
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN dataset TYPE TEXT")


MIGRATIONS = (
    Migration(2, "K-fold and TTA columns: val_accuracy_std, val_auc_std, folds, tta (commit 0caacfc)", _v2),
    Migration(3, "dataset is TEXT, not VARCHAR(200) (commit 9ce3aa9)", _v3),
)
VERSION = MIGRATIONS[-1].version  # the schema this code reads and writes


def migrate(engine: sa.Engine, table: sa.Table, where: str) -> int:
    """Create or bring forward the run store behind `engine`; returns the version it had (0: a new database).

    `where` names the store in messages (the file, or the URL without its password). Nothing is locked when the store
    is already current, so opening one costs one small read.
    """
    with engine.connect() as connection:
        found = _stamped(connection)
    if found == VERSION:
        return found
    _refuse_newer(found, where)
    with _locked(engine) as connection:
        # Under the lock, read again: another process may have migrated the store while this one waited.
        found = _stamped(connection)
        _refuse_newer(found, where)
        if found is None:
            found = _unversioned(connection, table, where)
            if found == 0:
                table.create(connection)  # a new database gets today's table (and its indexes) as it is
            version_table.create(connection, checkfirst=True)  # checkfirst: an emptied version table
            connection.execute(version_table.insert().values(version=found))
        for step in MIGRATIONS:
            if found < step.version and found != 0:
                step.apply(connection, table.name)
        connection.execute(version_table.update().values(version=VERSION))
    return found


def _stamped(connection: sa.Connection) -> int | None:
    """The recorded version, or None where none is recorded (a new database, or a store from before versions)."""
    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    versions = connection.execute(sa.select(version_table.c.version)).scalars().all()
    return max(versions) if versions else None


def _refuse_newer(found: int | None, where: str) -> None:
    if found is not None and found > VERSION:
        raise HarnessError(
            f"the run store {where} has schema version {found}, newer than this harness understands (version "
            f"{VERSION}): upgrade harness (pip install -U harness), or point --storage at another database"
        )


def _unversioned(connection: sa.Connection, table: sa.Table, where: str) -> int:
    """The version of a store from before versions were recorded, read off its columns; 0 where there is no table."""
    inspector = sa.inspect(connection)
    if not inspector.has_table(table.name):
        return 0
    columns = {column["name"]: column for column in inspector.get_columns(table.name)}
    if not set(columns) >= V1_COLUMNS:
        raise foreign_table(table, where, [c.name for c in table.columns if c.name not in columns])
    if "val_accuracy_std" not in columns:
        return 1
    dataset = columns["dataset"]["type"]
    return 2 if isinstance(dataset, sa.String) and dataset.length is not None else 3


def foreign_table(table: sa.Table, where: str, missing: list[str]) -> HarnessError:
    """A `harness_runs` table that another program made: named, never migrated, written to or read as ours."""
    more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
    return HarnessError(
        f"table {table.name} in {where} was not made by harness (it has no column {', '.join(missing[:4])}{more}): "
        "point --storage at another database"
    )


@contextlib.contextmanager
def _locked(engine: sa.Engine) -> Iterator[sa.Connection]:
    """One transaction that holds the database's migration lock: it commits whole or, on any error or a kill, leaves
    the old schema as it was (SQLite and PostgreSQL both roll DDL back). A second process waits here, then finds the
    store migrated."""
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        driver = connection.connection.driver_connection
        if sqlite:
            # Python's sqlite3 opens a transaction only before INSERT/UPDATE/DELETE, so an ALTER TABLE would commit
            # on its own: take over the transaction, and take the write lock at once (BEGIN IMMEDIATE) so two
            # processes do not both read the old version and then collide.
            level = driver.isolation_level  # type: ignore[union-attr]
            driver.isolation_level = None  # type: ignore[union-attr]
        try:
            if sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield connection
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            if sqlite:
                driver.isolation_level = level  # type: ignore[union-attr]
