"""A process killed mid-trial loses only that trial: it ends failed in both stores, and a rerun redoes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import search_fixtures as sf
from optuna.trial import TrialState
from worker_processes import CHILD_CWD

from harness.tuning import optuna_engine
from harness.tuning.study import run_search

# Starts a one-trial search and SIGKILLs itself once the trial's run is recorded as running (after a heartbeat).
KILLED = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import search_fixtures as sf
from worker_processes import CHILD_CWD
from harness.store.runs import RunStore
from harness.tuning import optuna_engine
optuna_engine.HEARTBEAT_SECONDS = 1
start = RunStore.start
def start_then_die(self, run_id, **values):
    start(self, run_id, **values)
    time.sleep(1.5)  # let the heartbeat thread beat at least once
    os.kill(os.getpid(), signal.SIGKILL)
RunStore.start = start_then_die
sf.register()
from harness.tuning.study import run_search
run_search(sf.workspace(Path({data!r}), Path({results!r})), sf.options(trials=1, tuner={tuner!r}))
"""


def kill_mid_trial(tuner: str, data: Path, results: Path) -> None:
    script = KILLED.format(tests=str(CHILD_CWD), data=str(data), results=str(results), tuner=tuner)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=CHILD_CWD, timeout=120)
    assert done.returncode == -9, "the search process should have been killed"


@pytest.mark.parametrize("tuner", ["optuna", "keras-tuner"])
def test_a_killed_trial_ends_failed_and_the_rerun_redoes_only_it(tuner, make_kaggle, tmp_path, monkeypatch):
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    kill_mid_trial(tuner, data, results)
    monkeypatch.setattr(optuna_engine, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(optuna_engine, "GRACE_SECONDS", 1)
    time.sleep(1.2)  # past the grace period since the dead process's last heartbeat
    with sf.registered():
        ws = sf.workspace(data, results)
        summary = run_search(ws, sf.options(trials=1, tuner=tuner))
    study = f"tiny-{tuner}" + ("-bayesian" if tuner == "keras-tuner" else "")
    killed, redone = ws.store().runs(study=study)
    assert killed.status == "failed" and "ended without finishing" in killed.error
    assert redone.status == "complete" and len(summary.results) == 1 and summary.after == 1
    assert redone.hyperparameters == killed.hyperparameters  # the same point, not a new one
    if tuner == "optuna":
        trials = optuna.load_study(study_name=study, storage=ws.storage_url).get_trials()
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
        assert trials[1].params == trials[0].params and redone.trial == 1
    else:
        assert redone.trial == killed.trial == 0  # KerasTuner retries the same trial id


@pytest.mark.parametrize("tuner", ["optuna", "keras-tuner"])
def test_timeout_stops_starting_trials_and_a_rerun_continues(tuner, make_kaggle, tmp_path):
    with sf.registered():
        ws = sf.workspace(make_kaggle(n_train=40, n_test=8), tmp_path / "results")
        quick = sf.options(space="tiny_invalid", tuner=tuner, trials=3)  # never-built trials: no training
        first = run_search(ws, replace(quick, timeout_minutes=1e-6))
        assert len(first.results) == 1 and first.after == 1 and "--timeout" in "\n".join(first.lines())
        second = run_search(ws, quick)
        assert len(second.results) == 2 and second.after == 3
