"""Ctrl-C: the message names the run it interrupted and the command that goes on with it; the run is recorded
interrupted, its checkpoint kept for --resume."""

from __future__ import annotations

import re

import pytest

from harness.cli import main
from harness.store.runs import RunStore, default_storage
from harness.training.runner import Runner

pytestmark = pytest.mark.backend_free


def test_ctrl_c_names_the_run_and_its_resume_command(make_kaggle, tmp_path, capsys, monkeypatch):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "_cross_validate", interrupted)
    results = tmp_path / "R"
    code = main(["run", "cnn", "--epochs", "1", "--data", str(make_kaggle(n_train=16, n_test=4)), "--results",
                 str(results), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 130
    run = re.search(r"run (\S+) is marked interrupted", err)
    assert run is not None, err
    assert f"`harness run {run.group(1)} --resume` goes on from its last completed epoch" in err
    assert RunStore(default_storage(results)).get(run.group(1)).status == "interrupted"


SWALLOWING = """
import time
from pathlib import Path


def test_swallows_ctrl_c_as_the_cli_does():
    Path("started").write_text("")
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        pass  # harness.cli.main turns Ctrl-C into one line and exit code 130, in-process too


def test_never_reached():
    Path("reached").write_text("")
"""


def test_ctrl_c_stops_the_test_session_even_when_a_test_swallows_it(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    (tmp_path / "test_swallow.py").write_text(SWALLOWING)
    tests = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(tests)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider", "test_swallow.py"]
    # A shell's background job (`cmd &`) starts with SIGINT ignored, and a child inherits that: Python then installs
    # no KeyboardInterrupt handler. The child gets Ctrl-C's default back, as in a terminal.
    child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, _ = child.communicate(timeout=30)
    assert time.monotonic() - sent < 10, out.decode()[-2000:]
    assert not (tmp_path / "reached").exists(), out.decode()[-2000:]  # the session stopped after that test
    assert b"interrupted (Ctrl-C)" in out, out.decode()[-2000:]
