"""Concurrent writers lose no run records: SQLite waits for its lock (WAL, 60 s timeout), PostgreSQL takes them all."""

from __future__ import annotations

import subprocess
import sys

import pytest
from worker_processes import CHILD_CWD, finish, start_cli

from harness.store.runs import RunStore

# Each process writes `n` records as fast as it can, each a start and two updates: three transactions apiece.
WRITER = """
import sys
from harness.store.runs import RunStore
store, tag, n = RunStore(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    store.start(f"{tag}-{i}", architecture="cnn", origin="test", spec={"i": i})
    store.update(f"{tag}-{i}", epochs_run=1)
    store.update(f"{tag}-{i}", status="complete", val_auc=i / n)
"""


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_writers_lose_no_records(backend, request, tmp_path):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/h.db"
    RunStore(url)  # the table exists before the race starts
    n, tags = 150, ("a", "b", "c")
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, tag, str(n)], cwd=CHILD_CWD, stderr=subprocess.PIPE, text=True
        )
        for tag in tags
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err[-2000:]
    runs = RunStore(url).runs()
    assert len(runs) == n * len(tags) and {r.status for r in runs} == {"complete"}
    assert all(r.epochs_run == 1 for r in runs)


def test_two_harness_run_processes_on_one_sqlite_store(make_kaggle, tmp_path):
    """Two `harness run` at once on the default store (and on one data cache, built by whichever is first)."""
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    argv = ["run", "seed_model2", "--epochs", "1", "--protocol", "stratified", "--no-progress"]
    argv += ["--data", str(data), "--results", str(results)]
    processes = [start_cli([*argv, "--seed", str(seed)], tiny=False) for seed in (1, 2)]
    for process in processes:
        code, output = finish(process)
        assert code == 0, output[-3000:]
    runs = RunStore(f"sqlite:///{results / 'harness.db'}").runs()
    assert len(runs) == 2 and all(r.status == "complete" for r in runs), [(r.status, r.error) for r in runs]
    assert len({r.pid for r in runs}) == 2
