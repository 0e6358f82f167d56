"""Test helpers: `harness` CLI processes with the tiny search spaces, optionally slow, hung or on another host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Child processes start here, not in the repository root: `python -c`/`-m` put their working folder first on
# sys.path, and the checkout's `harness/` would shadow the installed package that tox tests.
CHILD_CWD = ROOT / "tests"

# `python -c WORKER args...` is `harness args...` with the tiny spaces registered. TEST_TRIAL_SLEEP makes each
# trial last that much longer (so that workers overlap); TEST_HANG hangs the first trial (a kill target);
# TEST_HOSTNAME makes the process report another machine's name (its pid then means nothing to reap_dead).
WORKER = """
import os, socket, sys, time
sys.path.insert(0, {tests!r})
if os.environ.get("TEST_HOSTNAME"):
    socket.gethostname = lambda: os.environ["TEST_HOSTNAME"]
import search_fixtures as sf
from harness.store.runs import RunStore
start = RunStore.start
def start_then_wait(self, run_id, **values):
    start(self, run_id, **values)
    time.sleep(3600 if os.environ.get("TEST_HANG") else float(os.environ.get("TEST_TRIAL_SLEEP", "0")))
RunStore.start = start_then_wait
sf.register()
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Every process on one study must agree on these; short, so a dead worker is found in seconds.
FAST_HEARTBEAT = {"HARNESS_HEARTBEAT_SECONDS": "1", "HARNESS_GRACE_SECONDS": "3"}


def start_cli(argv: Sequence[str], tiny: bool = True, **env: str) -> subprocess.Popen:
    """Start `harness argv...` (with the tiny spaces when `tiny`); output is collected for the assertions."""
    if tiny:
        command = [sys.executable, "-c", WORKER.format(tests=str(ROOT / "tests"))]
    else:
        command = [sys.executable, "-m", "harness.cli"]
    environment = {**os.environ, **FAST_HEARTBEAT, **env}
    return subprocess.Popen(
        [*command, *argv], env=environment, cwd=CHILD_CWD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(process: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    """Wait for a process; its exit code and its output (stdout then stderr)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out + err


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.2) -> object:
    """Poll until `condition()` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def search_argv(data: Path, results: Path, storage: str | None, study: str, trials: int, *extra: str) -> list[str]:
    argv = ["search", "--space", "tiny", "--study", study, "--trials", str(trials), "--epochs", "1"]
    argv += ["--protocol", "stratified", "--seed", "1", "--data", str(data), "--results", str(results), "--no-progress"]
    return argv + (["--storage", storage] if storage else []) + list(extra)
