"""The submission keeper on its own: a run offered again with the very file it gave before writes nothing."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from harness.data.submission import expected_test_ids, write_submission
from harness.ranking.keeper import HISTORY, SubmissionKeeper
from harness.store.runs import RunRecord

pytestmark = pytest.mark.backend_free


def test_the_same_run_with_the_same_file_writes_nothing_and_a_changed_file_replaces_it(make_kaggle, tmp_path):
    data = make_kaggle(n_train=8, n_test=4)
    ids = expected_test_ids(data)
    source = tmp_path / "run" / "submission.csv"
    source.parent.mkdir()
    write_submission(pd.DataFrame({"id": ids, "label": 0.25}), source, ids)
    now = dt.datetime.now(dt.timezone.utc)
    record = RunRecord("r1", "complete", "cnn", "search", {}, now, now, val_auc=0.9, dataset=str(data),
                       submission=str(source))  # fmt: skip
    said: list[str] = []
    keeper = SubmissionKeeper(tmp_path / "R", said.append)
    assert keeper.offer(record, "k") and len(said) == 1
    # A clocked search's leg that kept its best epoch predicts the same file again: no copy, no line.
    assert not keeper.offer(record, "k")
    assert len(said) == 1 and len(list((tmp_path / "R" / HISTORY).glob("*-r1.csv"))) == 1
    # New predictions of the same run (a leg that raised its score) do replace it.
    write_submission(pd.DataFrame({"id": ids, "label": 0.75}), source, ids)
    assert keeper.offer(record, "k") and "the same run, updated" in said[-1]
    assert (tmp_path / "R" / "submission.csv").read_text() == source.read_text()
