"""A 'running' record still runs only while its process lives (this host) or its heartbeat is fresh (any host): a
point or trial claimed by a process killed on another machine is freed, and nothing that still beats is."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time

import pytest
import sqlalchemy as sa

from harness.store.liveness import RunHeartbeat
from harness.store.runs import RunStore, runs_table

pytestmark = pytest.mark.backend_free


def store_with(tmp_path, rows: list[dict]) -> RunStore:
    store = RunStore(f"sqlite:///{tmp_path / 'harness.db'}")
    for row in rows:
        store.start(row["run_id"], architecture="cnn", origin="scale", spec={}, study="s", trial=0)
        with store.engine.begin() as connection:
            connection.execute(runs_table.update().where(runs_table.c.run_id == row["run_id"]).values(**row))
    return store


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(seconds=seconds)


def test_a_silent_run_on_another_host_is_failed_and_a_beating_one_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_GRACE_SECONDS", "60")
    store = store_with(
        tmp_path,
        [
            {"run_id": "silent", "host": "other-machine", "pid": 1, "updated_at": ago(600)},
            {"run_id": "beating", "host": "other-machine", "pid": 1, "updated_at": ago(5)},
            {"run_id": "alive-here", "host": socket.gethostname(), "pid": os.getpid(), "updated_at": ago(600)},
        ],
    )
    assert store.reap_dead() == 1
    silent = store.get("silent")
    assert silent.status == "failed" and "other-machine" in (silent.error or "") and "heartbeats" in silent.error
    assert store.get("beating").status == "running"
    assert store.get("alive-here").status == "running"  # on this host the process itself is checked


def test_a_dead_process_on_this_host_is_failed_however_fresh_its_record(tmp_path):
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)  # a pid that no longer exists
    store = store_with(tmp_path, [{"run_id": "dead", "host": socket.gethostname(), "pid": child}])
    assert store.reap_dead() == 1 and store.get("dead").status == "failed"


def test_the_heartbeat_keeps_a_running_record_fresh(tmp_path):
    store = store_with(tmp_path, [{"run_id": "r", "host": "other-machine", "pid": 1, "updated_at": ago(600)}])
    with RunHeartbeat(lambda: store.touch("r"), every=0.05):
        time.sleep(0.5)
    with store.engine.connect() as connection:
        stamp = connection.execute(sa.select(runs_table.c.updated_at).where(runs_table.c.run_id == "r")).scalar()
    assert stamp > ago(5)


def test_a_finished_record_is_never_touched_by_a_late_beat(tmp_path):
    store = store_with(tmp_path, [{"run_id": "r", "host": "x", "pid": 1}])
    store.update("r", status="complete")
    before = store.get("r").updated_at
    time.sleep(0.01)
    store.touch("r")
    assert store.get("r").updated_at == before and store.get("r").status == "complete"
