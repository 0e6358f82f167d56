"""Submissions are validated before they are written; the leaderboard ranks complete runs by the chosen metric."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.leaderboard import rank, render_text, write_best_submission
from harness.store import RunRecord
from harness.submission import build_submission, write_submission

IDS = ["b" * 40, "a" * 40, "c" * 40]


def test_submission_follows_the_expected_order_and_keeps_probabilities():
    frame = build_submission(["a" * 40, "b" * 40, "c" * 40], np.array([0.1, 0.7, 0.35]), IDS)
    assert frame["id"].tolist() == IDS
    assert frame["label"].tolist() == [0.7, 0.1, 0.35]


@pytest.mark.parametrize(
    ("ids", "probs", "message"),
    [
        (IDS[:2], [0.1, 0.2], "lacks 1 test ids"),
        ([*IDS, "d" * 40], [0.1, 0.2, 0.3, 0.4], "not test images"),
        ([IDS[0], IDS[0], IDS[2]], [0.1, 0.2, 0.3], "repeats id"),
        (IDS, [0.1, float("nan"), 0.3], "not a probability"),
        (IDS, [0.1, 1.5, 0.3], "not a probability"),
        (IDS, [0.1, -0.1, 0.3], "not a probability"),
    ],
)
def test_invalid_submissions_are_refused_with_one_line(ids, probs, message):
    with pytest.raises(HarnessError, match=message) as info:
        build_submission(ids, np.array(probs), IDS)
    assert "\n" not in str(info.value)


def test_a_failed_write_leaves_the_previous_submission_intact(tmp_path, monkeypatch):
    path = tmp_path / "submission.csv"
    write_submission(build_submission(IDS, np.array([0.1, 0.2, 0.3]), IDS), path)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError):
        write_submission(build_submission(IDS, np.array([0.9, 0.9, 0.9]), IDS), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["submission.csv"], "a temporary file was left behind"


def _record(run_id, status="complete", acc=None, auc=None, submission=None, minutes=0):
    when = dt.datetime(2026, 1, 1) + dt.timedelta(minutes=minutes)
    return RunRecord(
        run_id=run_id,
        status=status,
        architecture="seed_model1",
        origin="baseline",
        spec={},
        created_at=when,
        updated_at=when,
        val_accuracy=acc,
        val_auc=auc,
        submission=submission,
        parameters=1000,
    )


def test_rank_orders_complete_runs_by_the_chosen_metric_and_leaves_the_rest_unranked():
    records = [
        _record("r1", acc=0.80, auc=0.95, minutes=1),
        _record("r2", acc=0.90, auc=0.85, minutes=2),
        _record("r3", status="failed", minutes=3),
        _record("r4", acc=0.85, auc=0.90, minutes=4),
    ]
    by_acc = rank(records, "val_accuracy")
    assert by_acc["run"].tolist() == ["r2", "r4", "r1", "r3"]
    assert by_acc["rank"].tolist()[:3] == [1, 2, 3] and pd.isna(by_acc["rank"].iloc[3])
    assert rank(records, "val_auc")["run"].tolist()[:3] == ["r1", "r4", "r2"]


def test_rank_refuses_an_unknown_metric():
    with pytest.raises(HarnessError, match="--by"):
        rank([_record("r1", acc=0.5, auc=0.5)], "f1")


def test_markdown_and_csv_hold_every_run():
    frame = rank([_record("r1", acc=0.8, auc=0.9), _record("r2", acc=0.7, auc=0.8)])
    markdown = render_text(frame, "markdown").splitlines()
    assert markdown[0].startswith("| rank | run |") and len(markdown) == 4
    assert "| 1 | r1 |" in markdown[2]
    csv = pd.read_csv(__import__("io").StringIO(render_text(frame, "csv")))
    assert csv["run"].tolist() == ["r1", "r2"]


def test_best_submission_is_copied_from_the_top_run(tmp_path):
    paths = {}
    for run_id, p in (("good", 0.9), ("bad", 0.1)):
        paths[run_id] = tmp_path / f"{run_id}.csv"
        write_submission(build_submission(IDS, np.full(3, p), IDS), paths[run_id])
    records = [
        _record("bad", acc=0.6, auc=0.6, submission=str(paths["bad"])),
        _record("good", acc=0.9, auc=0.9, submission=str(paths["good"])),
    ]
    destination = tmp_path / "results" / "submission.csv"
    assert write_best_submission(rank(records), destination) == "good"
    written = pd.read_csv(destination)
    assert written["id"].tolist() == IDS and np.allclose(written["label"], 0.9)


def test_test_labels_add_a_test_auc_column_scored_like_kaggle(tmp_path):
    from harness.leaderboard import add_test_auc

    labels = tmp_path / "test_labels.csv"
    pd.DataFrame({"id": IDS, "label": [1, 0, 1]}).to_csv(labels, index=False)
    perfect, inverted = tmp_path / "p.csv", tmp_path / "i.csv"
    write_submission(build_submission(IDS, np.array([0.9, 0.1, 0.8]), IDS), perfect)
    write_submission(build_submission(IDS, np.array([0.1, 0.9, 0.2]), IDS), inverted)
    frame = rank(
        [
            _record("p", acc=0.5, auc=0.5, submission=str(perfect)),
            _record("i", acc=0.6, auc=0.6, submission=str(inverted)),
        ]
    )
    scored = add_test_auc(frame, labels).set_index("run")["test_auc"]
    assert scored["p"] == 1.0 and scored["i"] == 0.0
    assert "test_auc" in render_text(add_test_auc(frame, labels), "markdown").splitlines()[0]
    pd.DataFrame({"id": IDS[:2], "label": [1, 0]}).to_csv(labels, index=False)
    with pytest.raises(HarnessError, match="no label for test id"):
        add_test_auc(frame, labels)
