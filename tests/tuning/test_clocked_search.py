"""`--deadline`: the clock is honoured inside a trial, a promoted trial goes on from its checkpoint, a too costly
candidate is skipped with a line, the endgame never reads test labels, and a kill -9 leaves a valid submission."""

from __future__ import annotations

import builtins
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from harness.cli import main
from harness.clock import Deadline
from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data.submission import expected_test_ids, read_submission
from harness.registry import SEARCH_SPACES
from harness.store.runs import RunStore, default_storage
from harness.tuning.space import Sample, Suggest

pytestmark = pytest.mark.needs_backend

FIRST = {"width": 4, "learning_rate": 3e-3}
COSTLY = {"width": 512}  # its first rung is predicted at over 100 times the first point's


def clocked_tiny(s: Suggest) -> Sample:
    """One conv of 4 to 512 filters with a warming, decaying recipe (so the clock's schedule replaces it)."""
    width = s.suggest_int("width", 4, 512, step=4)
    learning_rate = s.suggest_float("learning_rate", 1e-3, 1e-2, log=True)
    recipe = {"lr_schedule": "cosine", "warmup_fraction": 0.1}
    kwargs = {"widths": [width], "convs": [1], "dense": [8]}
    return Sample("cnn", kwargs, OptimizerConfig("adam", learning_rate), batch_size=8, recipe=recipe)


def tiny_spec(epochs: int) -> RunSpec:
    training = TrainingConfig(epochs=epochs, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3))
    return RunSpec("cnn", {"widths": [4], "convs": [1], "dense": [8]}, training, DataConfig("stratified", seed=1), 1)


def runner_on(data: Path, results: Path):
    from harness.data import load_dataset
    from harness.training.runner import Runner

    store = RunStore(default_storage(results), root=results)
    return Runner(load_dataset(data, results / "cache", progress=False), store, results, progress=False,
                  console=Console(quiet=True))  # fmt: skip


def test_the_deadline_stops_a_run_inside_its_epochs(make_kaggle, tmp_path):
    runner = runner_on(make_kaggle(n_train=64, n_test=8), tmp_path / "R")
    runner.run(tiny_spec(1))  # traced once, so the clocked run below times training, not start-up
    runner.deadline = Deadline(6.0)
    started = time.monotonic()
    record = runner.run(tiny_spec(1000))
    took = time.monotonic() - started
    assert record.status == "complete" and 1 <= record.epochs_run < 1000
    assert took < 6.0 + 5.0, took  # the clock, and the few seconds a stop inside an epoch and saving take
    state = pd.read_csv(Path(record.artifacts) / "history.csv")
    assert len(state) == record.epochs_run


def test_a_trial_that_goes_on_continues_from_its_checkpoint_and_is_not_trained_again(make_kaggle, tmp_path):
    runner = runner_on(make_kaggle(n_train=48, n_test=8), tmp_path / "R")
    runner.keep_checkpoints = True
    first = runner.run(tiny_spec(2))
    before = pd.read_csv(Path(first.artifacts) / "history.csv")
    spec = tiny_spec(4)
    more = runner.extend(first.run_id, spec)
    after = pd.read_csv(Path(more.artifacts) / "history.csv")
    assert more.run_id == first.run_id and more.status == "complete" and more.epochs_run == 4
    assert list(after["epoch"]) == [1, 2, 3, 4]
    pd.testing.assert_frame_equal(after.iloc[:2].reset_index(drop=True), before)  # epochs 1-2 kept, not retrained
    assert more.seconds == pytest.approx(after["seconds"].sum(), rel=1e-6)


@pytest.fixture(scope="module")
def clocked(tmp_path_factory):
    """One clocked search of 50 s on a tiny folder (with a test_labels.csv the endgame must never read), its
    output, wall time and every file opened whose name holds 'test_labels'."""
    from conftest import make_kaggle_folder

    root = tmp_path_factory.mktemp("clocked")
    data = make_kaggle_folder(root / "data", n_train=60, n_test=10)
    (data / "test_labels.csv").write_text("id,label\n" + "".join(f"{i},1\n" for i in expected_test_ids(data)))
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def watched_open(file, *args, **kwargs):
        if "test_labels" in str(file):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    def watched_os_open(path, *args, **kwargs):
        if "test_labels" in str(path):
            opened.append(str(path))
        return real_os_open(path, *args, **kwargs)

    out, err = io.StringIO(), io.StringIO()
    with SEARCH_SPACES.override():
        SEARCH_SPACES.register("clocked_tiny", widens="cnn", first=FIRST, portfolio=(COSTLY, {"learning_rate": 1e-3}),
                               test=True)(clocked_tiny)  # fmt: skip
        argv = ["search", "--space", "clocked_tiny", "--deadline", "50s", "--data", str(data), "--results",
                str(root / "R"), "--no-progress", "--protocol", "stratified"]  # fmt: skip
        builtins.open, os.open = watched_open, watched_os_open
        started = time.monotonic()
        try:
            import contextlib

            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        finally:
            builtins.open, os.open = real_open, real_os_open
        took = time.monotonic() - started
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "took": took, "data": data,
            "results": root / "R", "opened": opened}  # fmt: skip


def test_a_clocked_search_ends_on_time_with_a_valid_submission(clocked):
    assert clocked["code"] == 0, clocked["err"][-3000:]
    assert clocked["took"] < 50 + 30, clocked["took"]  # the deadline plus 2% or 30 s, whichever is larger
    submission = clocked["results"] / "submission.csv"
    read_submission(submission, expected_test_ids(clocked["data"]))  # every test id once, a probability each


def test_a_too_costly_candidate_is_skipped_with_a_line(clocked):
    text = clocked["err"] + clocked["out"]
    assert "skipped: its first rung is predicted to take" in text and "over 10% of the clock" in text, text[-3000:]


def test_trials_go_on_past_their_first_rung_and_the_endgame_runs(clocked):
    store = RunStore(default_storage(clocked["results"]), root=clocked["results"])
    trials = [r for r in store.runs() if r.origin == "search" and r.status == "complete"]
    assert max(int(r.epochs_run or 0) for r in trials) >= 3, [(r.trial, r.epochs_run) for r in trials]
    assert "endgame:" in clocked["err"] + clocked["out"]
    assert "rungs at 1, 3, 9, ... virtual epochs" in clocked["err"] + clocked["out"]  # the ladder says it is the one
    assert all(r.spec["training"]["lr_schedule"] == "wsd" for r in trials)  # one schedule across the rungs


def test_the_endgame_never_reads_the_test_labels(clocked):
    assert clocked["code"] == 0
    assert clocked["opened"] == []


@pytest.mark.backend_free  # the clock's logic; the search fixture above runs a clocked fit on every backend
def test_a_clock_too_short_to_share_trains_the_first_point_alone_sized_to_it(
    make_kaggle, tmp_path, capsys, monkeypatch
):
    from harness.tuning import clock_plan

    monkeypatch.setattr(clock_plan, "SINGLE_RUN_PASSES", 1e9)  # any clock is "too short" here
    data = make_kaggle(n_train=60, n_test=8)
    results = tmp_path / "R"
    with SEARCH_SPACES.override():
        SEARCH_SPACES.register("clocked_tiny", widens="cnn", first=FIRST, portfolio=({"learning_rate": 1e-3},),
                               test=True)(clocked_tiny)  # fmt: skip
        started = time.monotonic()
        code = main(["search", "--space", "clocked_tiny", "--deadline", "40s", "--data", str(data), "--results",
                     str(results), "--no-progress", "--protocol", "stratified"])  # fmt: skip
        took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "so the first point trains alone" in out + err, (out + err)[-3000:]
    assert "rungs at" not in out + err and "budget per trial: the first point alone" in out + err  # no ladder here
    assert took < 40 + 30, took
    store = RunStore(default_storage(results), root=results)
    trials = [r for r in store.runs() if r.origin == "search"]
    assert len(trials) == 1 and trials[0].status == "complete", [(r.trial, r.status) for r in trials]
    (alone,) = trials
    assert alone.spec["training"]["lr_schedule"] == "cosine"  # its own schedule, annealed over its sized epochs
    assert int(alone.epochs_run or 0) == alone.spec["training"]["epochs"] > 1
    read_submission(results / "submission.csv", expected_test_ids(data))


@pytest.mark.backend_free  # the clock's logic; the search fixture above runs a clocked fit on every backend
def test_a_kill_minus_nine_mid_search_leaves_a_valid_submission(make_kaggle, tmp_path):
    data = make_kaggle(n_train=60, n_test=10)
    results = tmp_path / "R"
    command = [sys.executable, "-m", "harness", "search", "--space", "modern", "--deadline", "3", "--data", str(data),
               "--results", str(results), "--no-progress", "--protocol", "stratified"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not (results / "submission.csv").exists() and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.2)
        time.sleep(1.0)  # into the next leg: a kill now lands mid-training, or mid-write
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        err = process.stderr.read().decode() if process.stderr else ""
    assert (results / "submission.csv").exists(), err[-3000:]
    read_submission(results / "submission.csv", expected_test_ids(data))


@pytest.mark.backend_free  # the clock's logic; the search fixture above runs a clocked fit on every backend
def test_the_keras_tuner_path_honours_the_deadline_and_leaves_a_submission(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=60, n_test=10)
    with SEARCH_SPACES.override():
        SEARCH_SPACES.register("clocked_tiny", widens="cnn", first=FIRST, test=True)(clocked_tiny)
        started = time.monotonic()
        code = main(["search", "--space", "clocked_tiny", "--tuner", "keras-tuner", "--algorithm", "random",
                     "--deadline", "40s", "--epochs", "2", "--data", str(data), "--results", str(tmp_path / "R"),
                     "--no-progress", "--protocol", "stratified"])  # fmt: skip
        took = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    assert took < 40 + 30, took
    read_submission(tmp_path / "R" / "submission.csv", expected_test_ids(data))
    assert "endgame" in captured.err + captured.out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_every_search_process_on_one_study_keeps_the_clock_and_the_endgame_runs_once(
    backend, make_kaggle, tmp_path, request
):
    """Two `harness search --deadline` processes on one study (on PostgreSQL, as workers on two machines share one):
    both end on time, and exactly one runs the endgame."""
    data = make_kaggle(n_train=60, n_test=10)
    results = tmp_path / "R"
    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else default_storage(results)
    command = [sys.executable, "-m", "harness", "search", "--space", "modern", "--deadline", "1.5", "--data",
               str(data), "--results", str(results), "--no-progress", "--protocol", "stratified", "--study", "s",
               "--storage", storage]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    started = time.monotonic()
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in "ab"]
    outputs = [p.communicate(timeout=400)[0].decode() for p in processes]
    took = time.monotonic() - started
    assert all(p.returncode == 0 for p in processes), outputs
    assert took < 90 + 30 + 15, took  # each its own clock; the second starts a moment later
    ran = sum("endgame: " in text and "greedy ensemble" in text for text in outputs)
    assert ran == 1, outputs
    read_submission(results / "submission.csv", expected_test_ids(data))


@pytest.mark.slow
def test_a_clocked_search_works_on_the_grouped_protocol(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=240, n_test=8)
    with SEARCH_SPACES.override():
        SEARCH_SPACES.register("clocked_tiny", widens="cnn", first=FIRST, test=True)(clocked_tiny)
        code = main(["search", "--space", "clocked_tiny", "--deadline", "40s", "--data", str(data), "--results",
                     str(tmp_path / "R"), "--no-progress", "--protocol", "grouped", "--group-size", "8"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    store = RunStore(default_storage(tmp_path / "R"), root=tmp_path / "R")
    trials = [r for r in store.runs() if r.origin == "search" and r.status == "complete"]
    assert trials and all(r.spec["data"]["protocol"] == "grouped" for r in trials)
    read_submission(tmp_path / "R" / "submission.csv", expected_test_ids(data))


@pytest.mark.backend_free  # the clock's logic; the search fixture above runs a clocked fit on every backend
def test_harness_run_on_a_clock_sizes_a_decaying_schedule_to_it_and_submits(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=60, n_test=8)
    results = tmp_path / "R"
    started = time.monotonic()
    code = main(["run", "cnn", "--deadline", "45s", "--lr-schedule", "cosine", "--data", str(data), "--results",
                 str(results), "--no-progress", "--protocol", "stratified", "--batch-size", "8"])  # fmt: skip
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert took < 45 + 30, took  # the deadline plus 2% or 30 s
    assert "fit its" in out + err, (out + err)[-2000:]  # the line that says how many epochs fit the clock
    (record,) = RunStore(default_storage(results), root=results).runs()
    planned = record.spec["training"]["epochs"]
    assert record.status == "complete" and planned > 1 and int(record.epochs_run or 0) >= planned - 1
    read_submission(results / "submission.csv", expected_test_ids(data))
