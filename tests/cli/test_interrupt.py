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
