"""Schema migrations of the run store: a first-release store (tests/fixtures/store_schema_v1.sql) is brought forward and
read, once, by one of several processes opening it together; a kill mid-migration leaves the old schema; a newer store
is refused in one line. On SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from hostile_helpers import refused

from harness.cli import main
from harness.store.migrations import V1_COLUMNS, VERSION, VERSION_TABLE
from harness.store.runs import RunStore, engine_url, runs_table

pytestmark = pytest.mark.backend_free

V1_SQL = Path(__file__).parents[1] / "fixtures" / "store_schema_v1.sql"
V1_RUNS = ("20261127-221635-cnn-fb6348", "20261127-221756-cnn-365a3f")
BACKENDS = ["sqlite", "postgresql"]


def v1_store(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Path]:
    """A database holding the first release's table and rows; returns its URL and a results folder."""
    results = tmp_path / "results"
    results.mkdir()
    sql = V1_SQL.read_text()
    if backend == "sqlite":
        url = f"sqlite:///{results / 'harness.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        sql = sql.replace(" DATETIME ", " TIMESTAMP WITHOUT TIME ZONE ")  # what SQLAlchemy's DateTime is there
    engine = sa.create_engine(engine_url(url))
    raw = engine.raw_connection()
    try:
        if backend == "sqlite":
            raw.driver_connection.executescript(sql)  # type: ignore[union-attr]
        else:
            with raw.cursor() as cursor:
                cursor.execute(sql)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()
    return url, results


def schema(url: str) -> tuple[dict[str, str], list[int] | None, list[tuple[object, ...]]]:
    """Column name -> type, the recorded versions (None: no version table), and the rows (first release's columns)."""
    engine = sa.create_engine(engine_url(url))
    try:
        inspector = sa.inspect(engine)
        columns = {c["name"]: repr(c["type"]) for c in inspector.get_columns(runs_table.name)}
        with engine.connect() as connection:
            versions = None
            if inspector.has_table(VERSION_TABLE):
                versions = [r[0] for r in connection.exec_driver_sql(f"SELECT version FROM {VERSION_TABLE}")]
            names = ", ".join(sorted(V1_COLUMNS))
            query = f"SELECT {names} FROM {runs_table.name} ORDER BY run_id"
            rows = [tuple(r) for r in connection.exec_driver_sql(query)]
    finally:
        engine.dispose()
    return columns, versions, rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_first_release_store_is_migrated_and_its_runs_ranked(backend, request, tmp_path, capsys):
    url, results = v1_store(backend, request, tmp_path)
    _, versions, rows_before = schema(url)
    assert versions is None  # the first release recorded no version
    assert (
        main(
            ["leaderboard", "--all", "--format", "csv", "--no-submission", "--storage", url, "--results", str(results)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert all(run_id in out for run_id in V1_RUNS), out
    _, versions, rows_after = schema(url)
    assert versions == [VERSION] and rows_after == rows_before
    records = {r.run_id: r for r in RunStore(url, root=results).runs()}
    assert sorted(records) == list(V1_RUNS)
    first = records[V1_RUNS[0]]
    assert (first.val_accuracy, first.val_auc, first.parameters) == (0.4935064935064935, 0.5, 36350881)
    assert first.spec["training"]["batch_size"] == 50 and first.synthetic is True
    # Columns added later: one split and one view, as every run of the first release was; no spread over folds.
    assert all((r.folds, r.tta, r.val_accuracy_std, r.val_auc_std) == (1, 1, None, None) for r in records.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrated_store_has_the_table_a_new_store_gets(backend, request, tmp_path):
    """Guards the next schema change: a column added to runs_table without a migration fails here."""
    url, _ = v1_store(backend, request, tmp_path)
    RunStore(url)
    migrated, _, _ = schema(url)
    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    RunStore(fresh_url)
    fresh, versions, _ = schema(fresh_url)
    assert versions == [VERSION]
    assert sorted(migrated) == sorted(fresh) == sorted(c.name for c in runs_table.columns)
    if backend == "postgresql":  # SQLite keeps a column's declared type (it enforces none): names suffice there
        assert migrated == fresh


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_runs_once_and_reopening_changes_nothing(backend, request, tmp_path):
    url, _ = v1_store(backend, request, tmp_path)
    assert RunStore(url).schema_before == 1
    once = schema(url)
    again = RunStore(url)
    assert again.schema_before == VERSION and schema(url) == once
    assert [r.folds for r in again.runs()] == [1, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_of_a_newer_harness_is_refused_in_one_line(backend, request, tmp_path, capsys):
    url = (
        f"sqlite:///{tmp_path / 'r' / 'harness.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    )
    RunStore(url).engine.dispose()
    engine = sa.create_engine(engine_url(url))
    with engine.begin() as connection:
        connection.exec_driver_sql(f"UPDATE {VERSION_TABLE} SET version = {VERSION + 1}")
    where = str(tmp_path / "r" / "harness.db") if backend == "sqlite" else "postgresql://harness:***@"
    line = refused(
        capsys,
        *("leaderboard", "--storage", url, "--results", str(tmp_path / "r")),
        expect=(where, f"schema version {VERSION + 1}", f"version {VERSION})", "upgrade harness"),
    )
    assert "***" in line or backend == "sqlite"
    with engine.connect() as connection:  # left as it was
        assert connection.exec_driver_sql(f"SELECT version FROM {VERSION_TABLE}").scalar_one() == VERSION + 1
    engine.dispose()


# Each process opens the store as soon as a shared "go" file appears, so the openings overlap.
OPEN_TOGETHER = """
import json, os, sys, time
from harness.store.runs import RunStore
go = sys.argv[2]
open(sys.argv[3], "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
store = RunStore(sys.argv[1])
print(json.dumps({"before": store.schema_before, "runs": len(store.runs())}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_processes_opening_an_old_store_together_migrate_it_once(backend, request, tmp_path):
    url, _ = v1_store(backend, request, tmp_path)
    go = tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_TOGETHER, url, str(go), str(tmp_path / f"ready{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(3)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outcomes = [worker.communicate(timeout=120) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), outcomes
    opened = [json.loads(out) for out, _ in outcomes]
    assert sorted(o["before"] for o in opened) == [1, VERSION, VERSION], opened  # one migrated, two found it done
    assert all(o["runs"] == 2 for o in opened)
    columns, versions, _ = schema(url)
    assert versions == [VERSION] and sorted(columns) == sorted(c.name for c in runs_table.columns)


# Opens the store with the first migration slowed: it signals once its ALTER TABLE has run, then waits to be killed.
KILLED_MIDWAY = """
import dataclasses, pathlib, sys, time
import harness.store.migrations as migrations
first = migrations.MIGRATIONS[0]
def apply(connection, table):
    first.apply(connection, table)
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(120)
migrations.MIGRATIONS = (dataclasses.replace(first, apply=apply), *migrations.MIGRATIONS[1:])
from harness.store.runs import RunStore
RunStore(sys.argv[1])
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_in_the_middle_of_a_migration_leaves_the_old_schema(backend, request, tmp_path):
    url, _ = v1_store(backend, request, tmp_path)
    before = schema(url)
    altered = tmp_path / "altered"
    worker = subprocess.Popen([sys.executable, "-c", KILLED_MIDWAY, url, str(altered)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not altered.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert altered.exists(), worker.stderr.read() if worker.poll() is not None else "no ALTER TABLE within 60 s"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    worker.stderr.close()
    after = schema(url)
    assert after == before and "val_accuracy_std" not in after[0]  # no column, no version: as it was
    store = RunStore(url)  # and the next opening migrates it whole
    assert store.schema_before == 1 and [r.folds for r in store.runs()] == [1, 1]
