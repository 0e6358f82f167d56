"""The run store and Optuna's storage under hostile conditions: a damaged or foreign database, unreadable or unsupported
URLs, a server that never answers, freezes or stops in the middle of a trial, a results folder that moves. Each ends
in one line and exit code 2 within a bounded time, never a traceback or a silent wait; a stopped study resumes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import search_fixtures as sf
import sqlalchemy as sa
from hostile_helpers import refused
from postgres_fixture import PostgresServer, _as_server_user, find_bin_dir, throwaway_server
from worker_processes import FAST_HEARTBEAT, finish, search_argv, start_cli, wait_for

from harness.cli import main
from harness.errors import HarnessError
from harness.store.runs import RunStore, engine_url
from harness.tuning.optuna_engine import OptunaEngine

# Storage and rendering: the Keras backend cannot change the outcome (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free

CONNECT_SECONDS = 10  # the connect timeout the README documents (harness.store.database.CONNECT_SECONDS)

# --- SQLite files that are damaged or belong to another program -------------------------------------------------------


def filled_store(results: Path, runs: int = 60) -> Path:
    """A harness.db with some records, checkpointed into the main file (no WAL left beside it)."""
    store = RunStore(f"sqlite:///{results / 'harness.db'}")
    for i in range(runs):
        store.start(f"run{i:03d}", architecture="cnn", origin="baseline", spec={"pad": "y" * 200}, dataset="/d")
        store.update(f"run{i:03d}", status="complete", val_accuracy=0.5, val_auc=0.5)
    store.engine.dispose()
    with sqlite3.connect(results / "harness.db") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return results / "harness.db"


def page_of(db: Path, name: str) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])


def overwrite(db: Path, page: int, offset: int, data: bytes) -> None:
    with open(db, "r+b") as handle:
        handle.seek((page - 1) * 4096 + offset)
        handle.write(data)


def quick_check(db: Path) -> str:
    try:
        with sqlite3.connect(db) as connection:
            return str(connection.execute("PRAGMA quick_check").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        return str(exc)


def damage_index(db: Path) -> None:
    """Garbage in an index page: every query still works and a run would be written into the file, but it is damaged."""
    page = page_of(db, "ix_harness_runs_status")
    original = db.read_bytes()
    for offset in range(1000, 4000, 97):
        overwrite(db, page, offset, b"\xa5" * 64)
        with sqlite3.connect(db) as connection:
            readable = len(connection.execute("SELECT * FROM harness_runs").fetchall()) > 0
        if quick_check(db) != "ok" and readable:
            return
        db.write_bytes(original)
    raise AssertionError("no damage found that quick_check sees and queries do not")


def damage_table(db: Path) -> None:
    """A torn root page of the runs table: reading it raises DatabaseError."""
    overwrite(db, page_of(db, "harness_runs"), 0, b"\xff" * 64)


@pytest.mark.parametrize("damage", [damage_index, damage_table], ids=["index-page", "table-page"])
@pytest.mark.parametrize("command", ["leaderboard", "run"])
def test_damaged_sqlite_store_is_refused_before_anything_is_written(damage, command, kaggle_folder, tmp_path, capsys):
    results = tmp_path / "r"
    db = filled_store(results)
    damage(db)
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    argv = ["run", "cnn", "--epochs", "1", "--no-progress"] if command == "run" else [command]
    refused(capsys, *argv, "--data", str(kaggle_folder), "--results", str(results), expect=(str(db), "damaged"))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # nothing written into it
    assert not (results / "runs").exists()  # refused before training


def test_damaged_record_is_one_line_naming_the_file(tmp_path, capsys):
    """A record whose JSON no longer parses (quick_check cannot see it): one line, not a JSONDecodeError."""
    db = filled_store(tmp_path / "r", runs=3)
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE harness_runs SET spec = '{\"pad\": ' WHERE run_id = 'run001'")
    refused(capsys, "leaderboard", "--results", str(tmp_path / "r"), expect=(str(db), "damaged record"))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_harness_runs_table_of_another_program_is_named(backend, request, tmp_path, capsys):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/r/harness.db"
    (tmp_path / "r").mkdir()
    engine = sa.create_engine(engine_url(url))
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE harness_runs (id INTEGER PRIMARY KEY, name TEXT)")
        connection.exec_driver_sql("INSERT INTO harness_runs VALUES (1, 'theirs')")
    where = str(tmp_path / "r" / "harness.db") if backend == "sqlite" else "postgresql://harness:***@"
    line = refused(
        capsys, "leaderboard", "--storage", url, "--results", str(tmp_path / "r"), expect=("harness_runs", where)
    )
    assert "not made by harness" in line and "status" in line, line
    with engine.connect() as connection:  # their table, untouched
        assert connection.exec_driver_sql("SELECT * FROM harness_runs").fetchall() == [(1, "theirs")]
    engine.dispose()


# --- storage URLs -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["postgresql://u:s3cret@host:abc/db", "postgresql://u:s3cret@[::1/db"])
def test_unreadable_storage_url_names_the_flag_without_the_password(url, tmp_path, capsys):
    line = refused(
        capsys, "leaderboard", "--storage", url, "--results", str(tmp_path / "r"), expect=("--storage", "u:***@")
    )
    assert "s3cret" not in line and "port" in line, line


@pytest.mark.parametrize(
    "url", ["mysql://u:s3cret@h/db", "oracle+cx_oracle://u:s3cret@h/db", "postgresql+asyncpg://u:s3cret@h/db"]
)
def test_unsupported_back_end_says_which_are_supported(url, tmp_path, capsys):
    line = refused(capsys, "leaderboard", "--storage", url, "--results", str(tmp_path / "r"), expect=("--storage",))
    assert "not supported" in line and "sqlite:///" in line and "postgresql://" in line and "psycopg2" in line, line
    assert "s3cret" not in line
    with pytest.raises(HarnessError, match="not supported"):  # Optuna's storage is checked the same way
        OptunaEngine(url, "s")


# --- a server that never answers --------------------------------------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A loopback listener that accepts connections and never answers; its thread ends with the test."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)  # accept() wakes up to see the end of the test
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://u:s3cret@127.0.0.1:{listener.getsockname()[1]}/db"
    done.set()
    thread.join(timeout=5)
    listener.close()
    for connection in held:
        connection.close()


@pytest.mark.parametrize("command", [["leaderboard"], ["search", "--trials", "1"]], ids=["leaderboard", "search"])
def test_never_answering_server_is_given_up_after_the_connect_timeout(command, silent_server, tmp_path, capsys):
    started = time.monotonic()
    line = refused(capsys, *command, "--storage", silent_server, "--results", str(tmp_path / "r"))
    seconds = time.monotonic() - started
    assert CONNECT_SECONDS - 1 < seconds < CONNECT_SECONDS + 8, seconds  # once, not once per retry
    assert "no answer from 127.0.0.1:" in line and f"in {CONNECT_SECONDS} s" in line, line
    assert "s3cret" not in line


def test_optuna_storage_on_a_never_answering_server_is_given_up_after_the_connect_timeout(silent_server):
    started = time.monotonic()
    with pytest.raises(HarnessError) as info:
        OptunaEngine(silent_server, "s")
    seconds = time.monotonic() - started
    assert "cannot open Optuna storage" in str(info.value) and f"in {CONNECT_SECONDS} s" in str(info.value)
    assert CONNECT_SECONDS - 1 < seconds < CONNECT_SECONDS + 8, seconds


# --- a server that freezes or stops during `harness search` -----------------------------------------------------------


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module's own, since these tests freeze and stop it (the session's server is shared)."""
    bin_dir = find_bin_dir()
    if bin_dir is None or os.environ.get("HARNESS_POSTGRES_URL"):
        pytest.skip("needs PostgreSQL server binaries to start a server it may stop")
    with throwaway_server(bin_dir) as server:
        yield server


def data_directory(server: PostgresServer) -> Path:
    engine = sa.create_engine(engine_url(server.admin_url))
    with engine.connect() as connection:
        folder = Path(connection.exec_driver_sql("SHOW data_directory").scalar())
    engine.dispose()
    return folder


def server_pids(folder: Path) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int((folder / "postmaster.pid").read_text().split()[0])
    children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()
    return [postmaster, *map(int, children)]


def search_until_a_trial_runs(server: PostgresServer, data: Path, results: Path, study: str, wait_s: int):
    """A `harness search` process whose first trial has started (its run is recorded 'running')."""
    url = server.create_database(study)
    argv = search_argv(data, results, url, study, 2)
    worker = start_cli(argv, TEST_TRIAL_SLEEP="3", HARNESS_DB_WAIT_SECONDS=str(wait_s))
    store = RunStore(url)
    wait_for(lambda: store.runs(study=study), 180, "the first trial to start")
    store.engine.dispose()
    engine = sa.create_engine(engine_url(url))

    def beating() -> bool:  # Optuna recovers only a trial that has beaten once
        with engine.connect() as connection:
            return bool(connection.exec_driver_sql("SELECT count(*) FROM trial_heartbeats").scalar())

    wait_for(beating, 60, "the trial's first heartbeat")
    engine.dispose()
    return worker, url, argv


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error")]


def resumes(url: str, argv: list[str], capsys, monkeypatch, study: str) -> None:
    """The same search again, once the server is back: the lost trial is recovered and the study completes."""
    for name, value in FAST_HEARTBEAT.items():
        monkeypatch.setenv(name, value)
    time.sleep(int(FAST_HEARTBEAT["HARNESS_GRACE_SECONDS"]) + 1)  # the lost trial's heartbeat is stale by now
    with sf.registered():
        assert main([*argv, "--timeout", "2"]) == 0  # a trial never recovered fails the test instead of hanging it
    assert "2 of 2 trials done" in capsys.readouterr().out
    runs = RunStore(url).runs(study=study)
    assert not [r for r in runs if r.status == "running"], [(r.run_id, r.status) for r in runs]
    trials = optuna.load_study(study_name=study, storage=engine_url(url)).get_trials()
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 2


def test_server_frozen_during_search_is_waited_for_visibly_then_one_line(
    own_server, make_kaggle, tmp_path, capsys, monkeypatch
):
    """SIGSTOP on every server process mid-trial: "waiting for the database (N s)" lines, then one error line after
    the wait limit (here 6 s), never a silent hang; after SIGCONT the study resumes and recovers the trial."""
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    worker, url, argv = search_until_a_trial_runs(own_server, data, results, "frozen", wait_s=6)
    pids = server_pids(data_directory(own_server))
    started = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        code, output = finish(worker, timeout=120)
        seconds = time.monotonic() - started
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert code == 2, output[-3000:]
    assert seconds < 60, seconds  # the wait limit, a connect timeout and the trial's own seconds, not forever
    assert "waiting for the database at 127.0.0.1:" in output, output[-3000:]
    errors = error_lines(output)
    assert len(errors) == 1 and "stopped answering" in errors[0] and "Traceback" not in output, output[-3000:]
    assert own_server.password not in output
    resumes(url, argv, capsys, monkeypatch, "frozen")


def test_server_stopped_during_a_trial_is_one_line_and_the_rerun_recovers(
    own_server, make_kaggle, tmp_path, capsys, monkeypatch
):
    """`pg_ctl -m immediate stop` mid-trial used to print 319 lines, 7 chained tracebacks ending in Optuna's
    UnboundLocalError. Now: waiting lines, one error line after the wait limit (4 s); after a restart the rerun
    recovers the trial."""
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    worker, url, argv = search_until_a_trial_runs(own_server, data, results, "stopped", wait_s=4)
    folder = data_directory(own_server)
    # The test server runs with synchronous_commit=off, so a crash may drop the last commits (such as the trial's
    # first heartbeat) that a real server would keep: a checkpoint first makes them as durable as they would be.
    engine = sa.create_engine(engine_url(own_server.admin_url))
    with engine.connect() as connection:
        connection.exec_driver_sql("CHECKPOINT")
    engine.dispose()
    started = time.monotonic()
    owner = "postgres" if os.geteuid() == 0 else None
    stop = [str(find_bin_dir() / "pg_ctl"), "-D", str(folder), "-m", "immediate", "-w", "stop"]
    subprocess.run(_as_server_user(stop, owner), check=True, capture_output=True, timeout=60)
    try:
        code, output = finish(worker, timeout=120)
        seconds = time.monotonic() - started
    finally:
        # restart reads the options the server was started with (postmaster.opts)
        start = [str(find_bin_dir() / "pg_ctl"), "-D", str(folder), "-l", str(folder.parent / "server.log"), "-w"]
        subprocess.run(_as_server_user([*start, "restart"], owner), check=True, capture_output=True, timeout=60)
    assert code == 2, output[-3000:]
    assert seconds < 60, seconds
    errors = error_lines(output)
    assert len(errors) == 1 and "stopped answering" in errors[0], output[-3000:]
    assert "Traceback" not in output and "UnboundLocalError" not in output, output[-3000:]
    assert "waiting for the database at 127.0.0.1:" in output, output[-3000:]
    resumes(url, argv, capsys, monkeypatch, "stopped")


# --- a results folder that moves --------------------------------------------------------------------------------------


def test_moved_results_folder_and_relative_results_from_elsewhere_keep_their_artifacts(
    kaggle_folder, tmp_path, capsys, monkeypatch
):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    argv = ["run", "cnn", "--epochs", "1", "--data", str(kaggle_folder), "--results", "r_flags", "--no-progress"]
    assert main(argv) == 0
    db = tmp_path / "a" / "r_flags" / "harness.db"
    with sqlite3.connect(db) as connection:
        run_id, artifacts, submission = connection.execute(
            "SELECT run_id, artifacts, submission FROM harness_runs"
        ).fetchone()
    assert (artifacts, submission) == (f"runs/{run_id}", f"runs/{run_id}/submission.csv")  # relative to the folder
    expected = (tmp_path / "a" / "r_flags" / "runs" / run_id / "submission.csv").read_text()

    monkeypatch.chdir(tmp_path / "b")  # a relative --results from another directory
    capsys.readouterr()
    assert main(["leaderboard", "--results", "../a/r_flags"]) == 0, capsys.readouterr().err
    assert (tmp_path / "a" / "r_flags" / "submission.csv").read_text() == expected

    moved = tmp_path / "moved"
    shutil.move(tmp_path / "a" / "r_flags", moved)  # the whole folder moved
    (moved / "submission.csv").unlink()
    assert main(["leaderboard", "--results", str(moved)]) == 0, capsys.readouterr().err
    assert (moved / "submission.csv").read_text() == expected

    # Records written before this change hold absolute paths, or paths relative to where harness ran: both still work.
    for old in (str(tmp_path / "a" / "r_flags" / "runs" / run_id), f"r_flags/runs/{run_id}"):
        with sqlite3.connect(moved / "harness.db") as connection:
            connection.execute("UPDATE harness_runs SET artifacts = ?, submission = ?", (old, f"{old}/submission.csv"))
        (moved / "submission.csv").unlink()
        assert main(["leaderboard", "--results", str(moved)]) == 0, capsys.readouterr().err
        assert (moved / "submission.csv").read_text() == expected
