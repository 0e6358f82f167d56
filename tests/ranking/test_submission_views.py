"""results/submission.csv is never replaced in silence: each replacement names the old and the new run with their
scores and keeps the old file; a view of the board writes a file of its own; an accuracy pick that AUC would not
make is named, with the command that submits the AUC pick; a change of the ranked validation set is said."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_submission_and_leaderboard import _stored

from harness.cli import main

pytestmark = pytest.mark.backend_free

RUNS = [  # id, architecture, origin, sample, n_val, val acc, study (val AUC = val acc - 0.05 unless changed)
    ("20261201-000001-seed_model1-aaaaaa", "seed_model1", "baseline", 2000, 300, 0.80, None),
    ("20261201-000002-seed_model2-bbbbbb", "seed_model2", "baseline", 2000, 300, 0.78, None),
    ("20261201-000003-cnn-cccccc", "cnn", "search", 2000, 300, 0.70, "widen-optuna"),
]


def board(capsys, results, *flags: str) -> str:
    assert main(["leaderboard", "--results", str(results), "--format", "csv", *flags]) == 0
    return capsys.readouterr().err


def test_each_replacement_is_said_and_the_old_file_kept(make_kaggle, tmp_path, capsys):
    results = _stored(tmp_path, make_kaggle(n_train=8, n_test=5), RUNS)
    err = board(capsys, results)
    assert "submission.csv: run 20261201-000001-seed_model1-aaaaaa (val AUC 0.7500, val acc 0.8000), no earlier" in err
    first = (results / "submission.csv").read_bytes()
    err = board(capsys, results)  # nothing better: the file is already that run's, and says so
    assert "already holds run 20261201-000001-seed_model1-aaaaaa" in err
    assert (results / "submission.csv").read_bytes() == first
    err = board(capsys, results, "--by", "val_auc", "--submit")  # the same pick by AUC: nothing to replace
    assert "already holds run 20261201-000001-seed_model1-aaaaaa" in err
    index = pd.read_csv(results / "submissions" / "index.csv")
    assert index["run"].iloc[0] == "20261201-000001-seed_model1-aaaaaa"
    kept = results / "submissions" / index["file"].iloc[0]
    assert kept.read_bytes() == first  # the first submission is kept, byte for byte


def test_a_view_of_the_board_writes_its_own_file_and_leaves_the_boards_pick(make_kaggle, tmp_path, capsys):
    results = _stored(tmp_path, make_kaggle(n_train=8, n_test=5), RUNS)
    board(capsys, results)
    pick = (results / "submission.csv").read_bytes()
    err = board(capsys, results, "--study", "widen-optuna", "--by", "val_auc")  # the search's own "next:" hint
    assert (results / "submission.csv").read_bytes() == pick  # the whole board's pick stays
    assert (results / "submission-study-widen-optuna-by-val_auc.csv").is_file()
    assert "a view of the board" in err and "--submit" in err
    err = board(capsys, results, "--study", "widen-optuna", "--submit")
    assert "replaces run 20261201-000001-seed_model1-aaaaaa" in err  # asked for: replaced, and said
    current = json.loads((results / "submissions" / "current.json").read_text())
    assert current["run_id"] == "20261201-000003-cnn-cccccc"


def test_an_accuracy_pick_that_auc_would_not_make_is_named_with_the_command(make_kaggle, tmp_path, capsys,
                                                                              monkeypatch):  # fmt: skip
    results = _stored(tmp_path, make_kaggle(n_train=8, n_test=5), RUNS)
    from harness.store.runs import RunStore, default_storage

    store = RunStore(default_storage(results))
    store.update("20261201-000002-seed_model2-bbbbbb", val_auc=0.883)  # better AUC, lower accuracy
    err = board(capsys, results)
    line = next(line for line in err.splitlines() if "Kaggle's metric" in line)
    assert "20261201-000002-seed_model2-bbbbbb" in line and "harness leaderboard --by val_auc --submit" in line
    monkeypatch.setenv("HARNESS_RANK_BY", "val_auc")  # chosen once: the AUC pick is the board's
    err = board(capsys, results)
    assert "submission.csv: run 20261201-000002-seed_model2-bbbbbb" in err and "Kaggle's metric" not in err


def test_a_newer_run_on_another_validation_set_hiding_the_board_is_said(make_kaggle, tmp_path, capsys):
    kaggle = make_kaggle(n_train=8, n_test=5)
    results = _stored(tmp_path, kaggle, RUNS)
    board(capsys, results)
    newer = [("20261201-000004-cnn-dddddd", "cnn", "run", 600, 90, 0.95, None)]
    _stored(tmp_path, kaggle, newer)  # a better score on a smaller sample's validation set
    err = board(capsys, results)
    line = next(line for line in err.splitlines() if line.startswith("the board now ranks"))
    assert "sample 600 · val 90" in line and "3 runs on sample 2,000 · val 300" in line and "--all" in line
