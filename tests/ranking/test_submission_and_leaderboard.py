"""Submissions are validated before they are written; the leaderboard ranks complete runs by the chosen metric."""

from __future__ import annotations

import datetime as dt
import os

import numpy as np
import pandas as pd
import pytest

from harness.data.submission import build_submission, write_submission
from harness.errors import HarnessError
from harness.ranking.leaderboard import rank, render_text, write_best_submission
from harness.store.runs import RunRecord

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
    write_submission(build_submission(IDS, np.array([0.1, 0.2, 0.3]), IDS), path, IDS)
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    with pytest.raises(OSError):
        write_submission(build_submission(IDS, np.array([0.9, 0.9, 0.9]), IDS), path, IDS)
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
        write_submission(build_submission(IDS, np.full(3, p), IDS), paths[run_id], IDS)
    records = [
        _record("bad", acc=0.6, auc=0.6, submission=str(paths["bad"])),
        _record("good", acc=0.9, auc=0.9, submission=str(paths["good"])),
    ]
    destination = tmp_path / "results" / "submission.csv"
    assert write_best_submission(rank(records), destination, IDS) == "good"
    written = pd.read_csv(destination)
    assert written["id"].tolist() == IDS and np.allclose(written["label"], 0.9)


def test_holdout_labels_score_each_submission_like_kaggle(tmp_path):
    from harness.ranking import holdout as module
    from harness.ranking.holdout import Holdout, add_holdout

    labels = tmp_path / "test_labels.csv"
    pd.DataFrame({"id": IDS, "label": [1, 0, 1]}).to_csv(labels, index=False)
    perfect, inverted = tmp_path / "p.csv", tmp_path / "i.csv"
    write_submission(build_submission(IDS, np.array([0.9, 0.1, 0.8]), IDS), perfect, IDS)
    write_submission(build_submission(IDS, np.array([0.1, 0.9, 0.2]), IDS), inverted, IDS)
    frame = rank(
        [
            _record("p", acc=0.5, auc=0.5, submission=str(perfect)),
            _record("i", acc=0.6, auc=0.6, submission=str(inverted)),
        ]
    )
    scored = add_holdout(frame, Holdout.read(labels, "--test-labels")).set_index("run")
    assert scored.loc["p", "holdout_auc"] == 1.0 and scored.loc["i", "holdout_auc"] == 0.0
    assert scored.loc["p", "gap"] == pytest.approx(-0.5) and scored.loc["i", "gap"] == pytest.approx(0.6)
    header = render_text(add_holdout(frame, Holdout.read(labels)), "markdown").splitlines()[0]
    assert "| holdout_auc | gap |" in header and "test_auc" not in header
    assert not hasattr(module, "add_test_auc")  # one way to score a holdout: the twin column is gone
    pd.DataFrame({"id": IDS[:2], "label": [1, 0]}).to_csv(labels, index=False)
    with pytest.raises(HarnessError, match=f"--test-labels {labels} has no label for test id"):
        add_holdout(frame, Holdout.read(labels, "--test-labels"))


# ----------------------------------------------------------------------------- an honest leaderboard


def _data(sample, seed=101, folds=1, protocol="seed"):
    return {"protocol": protocol, "sample": sample, "seed": seed, "val_fraction": 0.15, "folds": folds}


def _on(run_id, acc, sample, n_val, origin="baseline", dataset="/data", **data):
    when = dt.datetime(2026, 1, 1)
    return RunRecord(
        run_id=run_id,
        status="complete",
        architecture="seed_model1",
        origin=origin,
        spec={"data": _data(sample, **data)},
        created_at=when,
        updated_at=when,
        val_accuracy=acc,
        val_auc=acc,
        n_val=n_val,
        dataset=dataset,
        submission=f"/results/runs/{run_id}/submission.csv",
    )


def test_runs_share_a_validation_set_only_when_dataset_protocol_sample_seed_folds_and_images_match():
    from harness.ranking.leaderboard import comparable

    base = _on("base", 0.9, 2000, 300)
    same = [_on("same", 0.5, 2000, 300)]
    other = [
        _on("sample", 0.8, 1000, 150),
        _on("seed", 0.8, 2000, 300, seed=7),
        _on("folds", 0.8, 2000, 2000, folds=5, protocol="stratified"),
        _on("protocol", 0.8, 2000, 300, protocol="stratified"),
        _on("dataset", 0.8, 2000, 300, dataset="/elsewhere"),
        _on("subset", 0.8, 2000, 150, origin="ensemble"),  # an ensemble scored on fewer images
    ]
    board = comparable(rank([base, *same, *other]))
    assert board.frame["run"].tolist() == ["base", "same"] and board.frame["rank"].tolist() == [1, 2]
    assert sorted(board.left_out["run"]) == sorted(r.run_id for r in other)
    (note,) = board.notes()
    assert "left out 6 on other validation sets" in note and "--all" in note and "sample 2,000 · val 300" in note
    mixed = comparable(rank([base, *same, *other]), mix=True)
    assert len(mixed.frame) == 8 and mixed.left_out.empty and mixed.frame["val_set"].nunique() == 7
    assert "6" not in mixed.frame.loc[mixed.frame["run"] == "seed", "val_set"].item().split(" · ")[:2]


def test_an_ensemble_validated_on_a_subset_is_never_ranked_against_the_full_validation_set():
    from harness.ranking.leaderboard import comparable

    records = [
        _on("baseline", 0.85, 2000, 300),
        _on("ensemble", 0.83, 1000, 150, origin="ensemble"),
        _on("trial", 0.80, 1000, 150),
    ]
    board = comparable(rank(records))
    assert board.frame["run"].tolist() == ["baseline"]
    assert sorted(board.left_out["run"]) == ["ensemble", "trial"]
    records[1] = _on("ensemble", 0.90, 1000, 150, origin="ensemble")
    board = comparable(rank(records))  # the best run now is the ensemble: only its own validation set is ranked
    assert board.frame["run"].tolist() == ["ensemble", "trial"] and board.left_out["run"].tolist() == ["baseline"]


def test_ensemble_members_share_the_best_runs_validation_set_and_the_skipped_are_named_with_the_reason():
    from harness.ranking.ensemble import select_members

    records = [
        _on("t1", 0.81, 1000, 150),
        _on("b1", 0.78, 2000, 300),
        _on("b2", 0.76, 2000, 300),
        _on("t2", 0.70, 1000, 150),
        _on("b3", 0.55, 2000, 300),
        _on("ens", 0.95, 1000, 150, origin="ensemble"),
    ]
    selection = select_members(records, top=2, by="val_accuracy")
    assert [m.run_id for m in selection.members] == ["t1", "t2"]
    named = [line for line in selection.skipped if line.startswith("skipped b")]
    assert [line.split()[1] for line in named] == ["b1", "b2"]
    assert "validated on sample 2,000 · val 300, not on the best run's sample 1,000 · val 150" in named[0]
    assert any("skipped 1 more runs" in line for line in selection.skipped)  # b3, below the members
    assert any("1 ensembles" in line for line in selection.skipped)


def _stored(tmp_path, kaggle, runs):
    """A results folder whose store holds `runs` (id, architecture, origin, sample, n_val, val acc, study) with
    their submissions and validation predictions on disk."""
    from harness.data.submission import expected_test_ids
    from harness.store.runs import RunStore, default_storage

    results = tmp_path / "results"
    store = RunStore(default_storage(results))
    test_ids = expected_test_ids(kaggle)
    rng = np.random.default_rng(0)
    for run_id, arch, origin, sample, n_val, acc, study in runs:
        folder = results / "runs" / run_id
        folder.mkdir(parents=True)
        submission = pd.DataFrame({"id": test_ids, "label": rng.random(len(test_ids))})
        submission.to_csv(folder / "submission.csv", index=False)
        pd.DataFrame(
            {"id": [f"v{i}" for i in range(n_val)], "label": np.arange(n_val) % 2, "probability": rng.random(n_val)}
        ).to_csv(folder / "val_predictions.csv", index=False)
        store.start(
            run_id, architecture=arch, origin=origin, study=study, spec={"architecture": arch, "data": _data(sample)},
            n_val=n_val, n_train=sample - n_val, dataset=str(kaggle), synthetic=False, artifacts=str(folder),
        )  # fmt: skip
        store.update(
            run_id, status="complete", val_accuracy=acc, val_auc=acc - 0.05, parameters=1000, seconds=1.0,
            epochs_run=1, submission=str(folder / "submission.csv"),
        )  # fmt: skip
    return results


ISSUE_RUNS = [  # the issue's session: baselines on sample 2000, trials on sample 1000
    ("20261127-173747-seed_model1-54fda3", "seed_model1", "baseline", 2000, 300, 0.78, None),
    ("20261127-173802-seed_model2-a890ce", "seed_model2", "baseline", 2000, 300, 0.76, None),
    ("20261127-173822-seed_model3-bfd14c", "seed_model3", "baseline", 2000, 300, 0.55, None),
    ("20261127-183054-cnn-8a4c90", "cnn", "search", 1000, 150, 0.81, "pcam-cpu"),
    ("20261127-183154-cnn-77aa00", "cnn", "search", 1000, 150, 0.70, "pcam-cpu"),
]


def test_leaderboard_ranks_the_best_runs_validation_set_says_what_it_left_out_and_submits_from_it(
    make_kaggle, tmp_path, capsys
):
    from harness.cli import main

    kaggle = make_kaggle(n_train=8, n_test=5)
    results = _stored(tmp_path, kaggle, ISSUE_RUNS)
    assert main(["leaderboard", "--format", "csv", "--results", str(results)]) == 0
    out, err = capsys.readouterr()
    board = pd.read_csv(__import__("io").StringIO(out))
    assert board["run"].tolist() == ["20261127-183054-cnn-8a4c90", "20261127-183154-cnn-77aa00"]
    assert board["rank"].tolist() == [1, 2] and set(board["val_set"]) == {"1,000 · 150"}
    assert "left out 3 on other validation sets (sample 2,000 · val 300: 3)" in err
    assert "submission.csv: run 20261127-183054-cnn-8a4c90" in err  # the submission comes from the ranked set
    written = pd.read_csv(results / "submission.csv")
    source = pd.read_csv(results / "runs" / "20261127-183054-cnn-8a4c90" / "submission.csv")
    assert written["id"].tolist() == source["id"].tolist() and np.allclose(written["label"], source["label"], atol=1e-6)

    assert main(["leaderboard", "--all", "--format", "csv", "--no-submission", "--results", str(results)]) == 0
    out, err = capsys.readouterr()
    board = pd.read_csv(__import__("io").StringIO(out))
    assert board["rank"].tolist() == [1, 2, 3, 4, 5] and board["val_set"].nunique() == 2
    assert "runs on 2 validation sets ranked together" in err


def test_ensemble_says_which_runs_it_skipped_and_blends_only_one_validation_set(make_kaggle, tmp_path, capsys):
    from harness.cli import main

    kaggle = make_kaggle(n_train=8, n_test=5)
    results = _stored(tmp_path, kaggle, ISSUE_RUNS)
    assert main(["ensemble", "--top", "2", "--mean", "--results", str(results)]) == 0
    out, err = capsys.readouterr()
    assert "of 2 runs: 20261127-183054-cnn-8a4c90, 20261127-183154-cnn-77aa00" in out
    for baseline in ("20261127-173747-seed_model1-54fda3", "20261127-173802-seed_model2-a890ce"):
        line = next(line for line in err.splitlines() if baseline in line)
        assert line.startswith("skipped") and "validated on sample 2,000 · val 300" in line


@pytest.mark.parametrize("command", ["leaderboard", "ensemble"])
def test_an_unknown_study_is_a_one_line_error_that_lists_the_studies(command, make_kaggle, tmp_path, capsys):
    from harness.cli import main

    results = _stored(tmp_path, make_kaggle(n_train=8, n_test=5), ISSUE_RUNS)
    assert main([command, "--study", "nope", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "'nope'" in err and "known studies: pcam-cpu" in err
    assert not (results / "submission.csv").exists()


@pytest.mark.parametrize("command", ["leaderboard", "ensemble"])
def test_leaderboard_and_ensemble_rank_by_validation_accuracy_then_auc_and_say_so(command, capsys):
    from harness.cli import build_parser, main
    from harness.ranking.board_pick import default_by

    assert build_parser().parse_args([command]).by is None and default_by() == "val_accuracy"  # unless chosen
    tied = [_on("low-auc", 0.8, 2000, 300), _on("high-auc", 0.8, 2000, 300)]
    tied[1] = RunRecord(**{**tied[1].__dict__, "val_auc": 0.95})
    assert rank(tied)["run"].tolist() == ["high-auc", "low-auc"]  # the tie on val_accuracy goes to val_auc
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default val_accuracy" in text and "ties are broken by the other metric, val_auc" in text
