"""--holdout: each run's stored test predictions scored on an external labelled set, beside validation, with the gap."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.store.runs import RunStore

# Leaderboard and store only: no model is built, so the outcome cannot depend on the Keras backend.
pytestmark = pytest.mark.backend_free

# run id -> (val AUC, how well its test predictions separate the holdout's labels): validation flatters "a" most.
RUNS = {"20260101-000000-cnn-aaaaaa": (0.99, 0.2), "20260101-000001-cnn-bbbbbb": (0.90, 3.0),
        "20260101-000002-cnn-cccccc": (0.95, 1.0)}  # fmt: skip


@pytest.fixture
def board(make_kaggle, tmp_path) -> tuple[Path, Path]:
    """(results, holdout labels): three complete runs in a real SQLite store, each with a submission.csv."""
    root = make_kaggle(n_train=4, n_test=40)
    ids = pd.read_csv(root / "sample_submission.csv", dtype=str)["id"].tolist()
    truth = np.arange(len(ids)) % 2
    labels = tmp_path / "holdout.csv"
    pd.DataFrame({"id": ids, "label": truth}).to_csv(labels, index=False)
    results = tmp_path / "r"
    store = RunStore(f"sqlite:///{results / 'harness.db'}")
    rng = np.random.default_rng(0)
    for run_id, (val_auc, signal) in RUNS.items():
        folder = results / "runs" / run_id
        folder.mkdir(parents=True)
        probabilities = 1 / (1 + np.exp(-(signal * (truth - 0.5) + rng.normal(0, 1, len(ids)))))
        pd.DataFrame({"id": ids, "label": probabilities}).to_csv(folder / "submission.csv", index=False)
        store.start(run_id, architecture="cnn", origin="baseline", spec={}, dataset=str(root.resolve()),
                    artifacts=str(folder), synthetic=False)  # fmt: skip
        store.update(run_id, status="complete", val_accuracy=val_auc - 0.1, val_auc=val_auc,
                     submission=str(folder / "submission.csv"))  # fmt: skip
    return results, labels


def leaderboard_csv(capsys, results: Path, *flags: str) -> pd.DataFrame:
    argv = ["leaderboard", "--results", str(results), "--format", "csv", "--no-submission", *flags]
    assert main(argv) == 0, capsys.readouterr().err
    return pd.read_csv(StringIO(capsys.readouterr().out))


def test_holdout_shows_holdout_auc_and_the_gap_and_ranks_by_it(board, capsys):
    from sklearn.metrics import roc_auc_score

    results, labels = board
    frame = leaderboard_csv(capsys, results, "--holdout", str(labels), "--by", "holdout_auc")
    truth = pd.read_csv(labels, dtype={"id": str}).set_index("id")["label"]
    for _, row in frame.iterrows():
        submission = pd.read_csv(results / "runs" / row["run"] / "submission.csv", dtype={"id": str})
        expected = roc_auc_score(truth.loc[submission["id"]], submission["label"])
        assert row["holdout_auc"] == pytest.approx(expected)
        assert row["gap"] == pytest.approx(row["val_auc"] - expected)
    assert frame["holdout_auc"].is_monotonic_decreasing and frame["rank"].tolist() == [1, 2, 3]
    assert frame["run"].iloc[0].endswith("bbbbbb")  # best on the holdout, worst on validation
    by_val = leaderboard_csv(capsys, results, "--holdout", str(labels), "--by", "val_auc")
    assert by_val["run"].iloc[0].endswith("aaaaaa") and "gap" in by_val


def test_holdout_table_has_the_columns_and_a_rank_correlation_note(board, capsys):
    results, labels = board
    argv = ["leaderboard", "--results", str(results), "--holdout", str(labels), "--no-submission"]
    assert main([*argv, "--columns", "rank,run,val_auc,holdout_auc,gap"]) == 0
    captured = capsys.readouterr()
    assert "holdout AUC" in captured.out and "val-holdout" in captured.out
    assert "Spearman's rho between val AUC and holdout AUC is -1.000" in captured.err  # ranked backwards


def test_test_labels_is_the_older_name_of_holdout(board, capsys):
    results, labels = board
    old = leaderboard_csv(capsys, results, "--test-labels", str(labels), "--by", "holdout_auc")
    new = leaderboard_csv(capsys, results, "--holdout", str(labels), "--by", "holdout_auc")
    pd.testing.assert_frame_equal(old, new)


BAD = {
    "wrong header": ("id,target\n{id},1\n", "missing column 'label'"),
    "non-binary label": ("id,label\n{id},2\n", "is not 0 or 1"),
    "missing id": ("id,label\n{id},1\n{id2},0\n", "has no label for test id"),
    "unknown id": ("{all}0123456789abcdef0123456789abcdef01234567,1\n", "is not in the test set"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_holdout_files_are_one_line_naming_flag_and_file(case, board, capsys):
    results, labels = board
    ids = pd.read_csv(labels, dtype={"id": str})["id"].tolist()
    text, expect = BAD[case]
    labels.write_text(text.format(id=ids[0], id2=ids[1], all=labels.read_text()))
    assert main(["leaderboard", "--results", str(results), "--holdout", str(labels), "--no-submission"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--holdout" in err and str(labels) in err.replace("\n", "") and expect in err, err
    assert "Traceback" not in err


def test_by_holdout_auc_without_labels_is_one_line(board, capsys):
    results, _ = board
    assert main(["leaderboard", "--results", str(results), "--by", "holdout_auc", "--no-submission"]) != 0
    err = capsys.readouterr().err.strip()
    assert "--by holdout_auc needs --holdout" in err and "Traceback" not in err
