"""Several `harness search` processes on one study: exactly --trials trials, none twice; a killed worker's trial is
released by Optuna's heartbeat and redone by the others, and the run store ends with nothing left 'running'."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState
from worker_processes import FAST_HEARTBEAT, finish, search_argv, start_cli, wait_for

from harness.cli import main
from harness.store.runs import RunStore, engine_url

STUDY = "shared"


def trials_of(url: str, study: str = STUDY) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=engine_url(url)).get_trials(deepcopy=False)


def leaderboard(capsys, url: str, results, study: str = STUDY) -> pd.DataFrame:
    argv = ["leaderboard", "--storage", url, "--results", str(results), "--study", study, "--format", "csv"]
    assert main([*argv, "--no-submission"]) == 0
    return pd.read_csv(io.StringIO(capsys.readouterr().out))


def test_two_search_processes_on_postgres_share_one_study(postgres_url, make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    argv = search_argv(data, results, postgres_url, STUDY, 4)
    workers = [start_cli(argv, TEST_TRIAL_SLEEP="2") for _ in range(2)]  # slow trials: the two overlap
    for worker in workers:
        code, output = finish(worker)
        assert code == 0, output[-3000:]

    trials = trials_of(postgres_url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4  # exactly N trials: none extra, none lost
    runs = RunStore(postgres_url).runs(study=STUDY)
    assert len(runs) == 4 and all(r.status == "complete" for r in runs), [(r.status, r.error) for r in runs]
    assert sorted(r.trial for r in runs) == [0, 1, 2, 3]  # one run per trial
    points = {json.dumps(r.hyperparameters, sort_keys=True) for r in runs}
    assert len(points) == 4  # no point run twice: each trial number seeds its own sample
    assert len({r.pid for r in runs}) == 2, "both processes should have run trials"
    board = leaderboard(capsys, postgres_url, results)
    assert sorted(board["run"]) == sorted(r.run_id for r in runs) and board["rank"].notna().all()


def test_killed_worker_trial_is_released_and_redone(postgres_url, make_kaggle, tmp_path, capsys):
    """kill -9 of a worker on "another machine" mid-trial: the heartbeat releases its trial, the survivor redoes it.

    The victim reports another host name, so `reap_dead` (local pids only) cannot see it: only the heartbeat path
    can mark its run failed. Prints the figures: seconds until the trial was released, trials completed and lost.
    """
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    argv = search_argv(data, results, postgres_url, STUDY, 3)
    victim = start_cli(argv, TEST_HANG="1", TEST_HOSTNAME="worker-elsewhere")
    store = RunStore(postgres_url)

    def victim_running():
        return [r for r in store.runs(study=STUDY) if r.host == "worker-elsewhere" and r.status == "running"]

    wait_for(victim_running, 180, "the victim's trial to start")
    survivor = start_cli(argv)
    wait_for(lambda: any(r.host != "worker-elsewhere" for r in store.runs(study=STUDY)), 180, "the survivor")
    os.kill(victim.pid, signal.SIGKILL)  # mid-trial: its run is recorded 'running' and its heartbeat beats
    killed_at = dt.datetime.now()
    assert finish(victim)[0] == -signal.SIGKILL
    code, output = finish(survivor)
    assert code == 0, output[-3000:]

    trials = trials_of(postgres_url)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(failed) == 1 and len(complete) == 3 and len(trials) == 4, [t.state for t in trials]
    retried = [t for t in complete if t.system_attrs.get("failed_trial") == failed[0].number]
    assert len(retried) == 1 and retried[0].params == failed[0].params  # the lost point is redone, once
    released_s = (failed[0].datetime_complete - killed_at).total_seconds()
    bound = int(FAST_HEARTBEAT["HARNESS_GRACE_SECONDS"]) + int(FAST_HEARTBEAT["HARNESS_HEARTBEAT_SECONDS"]) + 60
    assert 0 < released_s < bound  # grace + a beat + at most one survivor trial in progress

    runs = store.runs(study=STUDY)
    assert not [r for r in runs if r.status == "running"]
    lost = [r for r in runs if r.host == "worker-elsewhere"]
    # Optuna's release or the store's own liveness check (whichever reads first) ends the run; both say why.
    assert len(lost) == 1 and lost[0].status == "failed" and "stopped sending heartbeats" in (lost[0].error or "")
    assert sorted(r.trial for r in runs if r.status == "complete") == sorted(t.number for t in complete)
    board = leaderboard(capsys, postgres_url, results)
    assert board["rank"].notna().sum() == 3
    print(f"\nkill test: released after {released_s:.1f} s; {len(complete)} trials completed, 1 lost and redone")


def test_workers_flag_runs_k_processes_on_sqlite(make_kaggle, tmp_path):
    """`--workers 2` on the default SQLite store: two local processes, --trials shared exactly (the real CLI)."""
    data, results = make_kaggle(n_train=40, n_test=8), tmp_path / "results"
    argv = ["search", "--workers", "2", "--space", "optimizer", "--study", "w", "--trials", "2", "--epochs", "1"]
    argv += ["--protocol", "stratified", "--data", str(data), "--results", str(results), "--no-progress"]
    code, output = finish(start_cli(argv, tiny=False, TEST_TRIAL_SLEEP="0"))
    assert code == 0, output[-3000:]
    assert "2 of 2 trials done" in output and "2 workers ran the trials: exit codes 0, 0" in output, output[-3000:]
    runs = RunStore(f"sqlite:///{results / 'harness.db'}").runs(study="w")
    assert len(runs) == 2 and all(r.status == "complete" for r in runs), [(r.status, r.error) for r in runs]
    assert sorted(r.trial for r in runs) == [0, 1] and len({r.pid for r in runs}) == 2


def test_workers_flag_needs_optuna(tmp_path, capsys):
    argv = ["search", "--workers", "2", "--tuner", "keras-tuner", "--results", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "--workers needs --tuner optuna" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_opens_the_same_way_on_both_backends(backend, request, tmp_path):
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path}/h.db"
    store = RunStore(url)
    store.start("r1", architecture="cnn", origin="test", spec={"x": 1}, dataset="/" + "d" * 400)  # a long path
    store.update("r1", status="complete", val_auc=0.5)
    assert store.get("r1").status == "complete" and store.get("r1").dataset.endswith("d" * 400)
