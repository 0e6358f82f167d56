"""A process killed mid-trial loses only that trial: it ends failed in both stores, and a rerun redoes it."""

from __future__ import annotations

import datetime as dt
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
from harness.tuning.search import run_search

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
from harness.tuning.search import run_search
run_search(sf.workspace(Path({data!r}), Path({results!r})), sf.options(trials=1, tuner={tuner!r}))
"""


# Starts a one-trial Optuna search and SIGKILLs itself right after `study.ask()` made the trial RUNNING: before the
# trial's heartbeat thread starts, so the trial has no heartbeat at all.
KILLED_BEFORE_HEARTBEAT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
import search_fixtures as sf
from harness.tuning import optuna_engine
slot_asker = optuna_engine.OptunaEngine._slot_asker
def slot_asker_then_die(self, *args, **kwargs):
    ask = slot_asker(self, *args, **kwargs)
    def ask_then_die(*a, **k):
        ask(*a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
    return ask_then_die
optuna_engine.OptunaEngine._slot_asker = slot_asker_then_die
sf.register()
from harness.tuning.search import run_search
run_search(sf.workspace(Path({data!r}), Path({results!r})), sf.options(trials=1))
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
        first = run_search(ws, replace(quick, stop_starting_after=1e-4))
        assert len(first.results) == 1 and first.after == 1 and "--timeout" in "\n".join(first.lines())
        second = run_search(ws, quick)
        assert len(second.results) == 2 and second.after == 3


def _add_running_trial(study: optuna.Study, started: dt.datetime, run_id: str | None = None) -> int:
    """A RUNNING trial as a worker's `study.ask()` leaves it, started at `started`, with no heartbeat row."""
    trial = optuna.trial.create_trial(state=TrialState.RUNNING)
    trial.datetime_start = started
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=trial)
    if run_id:
        study._storage.set_trial_user_attr(trial_id, "run_id", run_id)
    return trial_id


@pytest.mark.backend_free
def test_a_trial_that_never_beat_is_failed_after_the_grace_period_with_its_run(tmp_path, monkeypatch):
    from harness.store.runs import RunStore, default_storage

    monkeypatch.setattr(optuna_engine, "GRACE_SECONDS", 60)
    url = default_storage(tmp_path)
    engine = optuna_engine.OptunaEngine(url, "ghosts")
    engine.open({"space": "tiny"})
    study = engine.study
    assert study is not None
    store = RunStore(url)
    store.start("ghost-run", architecture="cnn", origin="search", spec={}, study="ghosts", trial=0)
    now = dt.datetime.now()
    # Its process died between ask and the first heartbeat, 5 minutes ago (its run was recorded: a first heartbeat
    # that could not reach the database is skipped, see optuna_storage._Storage.record_heartbeat).
    ghost = _add_running_trial(study, now - dt.timedelta(minutes=5), run_id="ghost-run")
    young = _add_running_trial(study, now)  # just asked: its heartbeat thread is about to start
    beating = _add_running_trial(study, now - dt.timedelta(minutes=5))  # a long trial of a live worker
    engine.storage.record_heartbeat(beating)

    assert engine.release_lost_trials(store, study) == 1
    states = {t._trial_id: t.state for t in study.get_trials(deepcopy=False)}
    assert states[ghost] == TrialState.FAIL
    assert states[young] == states[beating] == TrialState.RUNNING
    assert list(states.values()).count(TrialState.WAITING) == 1  # re-queued once, as a stale trial is
    assert store.get("ghost-run").status == "failed" and store.get("ghost-run").error == optuna_engine.LOST_WORKER


def test_a_trial_killed_before_its_first_heartbeat_is_recovered_and_redone(make_kaggle, tmp_path, monkeypatch):
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    script = KILLED_BEFORE_HEARTBEAT.format(tests=str(CHILD_CWD), data=str(data), results=str(results))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=CHILD_CWD, timeout=120)
    assert done.returncode == -9, "the search process should have been killed"
    with sf.registered():
        ws = sf.workspace(data, results)
        (ghost,) = optuna.load_study(study_name="tiny-optuna", storage=ws.storage_url).get_trials()
        assert ghost.state == TrialState.RUNNING and ws.store().runs() == []  # killed before it trained
        monkeypatch.setattr(optuna_engine, "HEARTBEAT_SECONDS", 1)
        monkeypatch.setattr(optuna_engine, "GRACE_SECONDS", 1)
        time.sleep(1.2)  # past the grace period since the trial started
        # The ghost holds the study's one slot until it is recovered; the timeout bounds the wait if it never is.
        summary = run_search(ws, sf.options(trials=1, stop_starting_after=12.0))
        (redone,) = ws.store().runs(study="tiny-optuna")
    assert redone.status == "complete" and len(summary.results) == 1 and summary.after == 1
    trials = optuna.load_study(study_name="tiny-optuna", storage=ws.storage_url).get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE] and redone.trial == 1
