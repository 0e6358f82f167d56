"""The harness command end to end on tiny data: baselines, leaderboard, a valid submission, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.cli import main
from harness.store.runs import RunStore, default_storage

pytestmark = [pytest.mark.needs_backend, pytest.mark.smoke]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # trains seed_model1 (36M parameters) end to end
def test_baselines_then_leaderboard_then_a_valid_submission(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=40, n_test=8)
    results = tmp_path / "results"
    where = ["--data", str(data), "--results", str(results)]
    code, out, err = run_cli(capsys, "run", "baselines", "--epochs", "1", "--no-progress", *where)
    assert code == 0, err

    records = RunStore(default_storage(results)).runs()
    assert sorted(r.architecture for r in records) == ["seed_model1", "seed_model2", "seed_model3"]
    assert all(r.status == "complete" and r.epochs_run == 1 for r in records), [r.error for r in records]
    assert sorted(r.parameters for r in records) == [1_846_817, 3_510_913, 36_350_881]
    assert all(r.spec["data"]["protocol"] == "seed" for r in records)
    assert {r.origin for r in records} == {"baseline"}

    # --by val_auc is a view of the board (its default is val accuracy): --submit makes its pick the submission.
    code, out, err = run_cli(capsys, "leaderboard", "--by", "val_auc", "--submit", "--format", "csv", *where)
    assert code == 0, err
    board = pd.read_csv(__import__("io").StringIO(out))
    assert board["rank"].tolist() == [1, 2, 3]
    assert board["val_auc"].is_monotonic_decreasing
    best = board.iloc[0]["run"]
    assert f"submission.csv: run {best}" in err and "submission-by-val_auc.csv" not in err, err

    submission = pd.read_csv(results / "submission.csv")
    expected = pd.read_csv(data / "sample_submission.csv")["id"].tolist()
    assert submission["id"].tolist() == expected
    assert submission["label"].between(0, 1).all() and submission["label"].notna().all()
    best_record = next(r for r in records if r.run_id == best)
    assert submission.equals(pd.read_csv(best_record.submission))


def test_leaderboard_table_shows_each_run_and_markdown_is_a_table(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=40, n_test=8)
    where = ["--data", str(data), "--results", str(tmp_path / "r")]
    assert run_cli(capsys, "run", "cnn", "--epochs", "1", "--no-progress", *where)[0] == 0
    # A run of a registered architecture that is not one of the notebook's is no baseline (a report would count it).
    assert [r.origin for r in RunStore(default_storage(tmp_path / "r")).runs()] == ["run"]
    code, out, _ = run_cli(capsys, "leaderboard", "--format", "markdown", "--no-submission", *where)
    assert code == 0 and out.splitlines()[0].startswith("| rank | run | architecture |")
    assert "| 1 |" in out and "cnn" in out
    assert not (tmp_path / "r" / "submission.csv").exists()
    code, out, _ = run_cli(capsys, "leaderboard", *where)
    assert code == 0 and "leaderboard by val_accuracy" in out and "cnn" in out


def test_list_shows_true_parameter_counts(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for name, count in (("seed_model1", "36,350,881"), ("seed_model2", "1,846,817"), ("seed_model3", "3,510,913")):
        line = next(line for line in out.splitlines() if name in line)
        assert count in line


def test_data_check_on_the_builtin_demo_says_it_is_synthetic(tmp_path, capsys):
    code, _, err = run_cli(capsys, "data", "check", "--results", str(tmp_path / "r"))
    assert code == 0, err
    assert "synthetic" in err
    assert (tmp_path / "r" / "demo-data" / "train_labels.csv").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "baselines", "--data", "/nonexistent/kaggle"], "/nonexistent/kaggle"),
        (["run", "resnet9000"], "resnet9000"),
        (["leaderboard", "--storage", "notaurl"], "--storage"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, needle, tmp_path, capsys):
    code, _, err = run_cli(capsys, *argv, "--results", str(tmp_path / "r"))
    assert code == 2
    assert err.startswith("error:") and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_flag_values_exit_non_zero(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "baselines", "--epochs", "0"])
    assert info.value.code == 2
    assert "--epochs" in capsys.readouterr().err


def test_a_stored_run_can_be_trained_again_with_changed_flags(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=40, n_test=8)
    where = ["--data", str(data), "--results", str(tmp_path / "r"), "--no-progress"]
    assert run_cli(capsys, "run", "cnn", "--epochs", "1", "--protocol", "stratified", "--seed", "7", *where)[0] == 0
    store = RunStore(default_storage(tmp_path / "r"))
    (first,) = store.runs()
    assert run_cli(capsys, "run", first.run_id, "--tta", "2", "--dihedral", *where)[0] == 0
    again = next(r for r in store.runs() if r.run_id != first.run_id)
    assert again.origin == f"rerun:{first.run_id}" and again.status == "complete"
    assert again.spec["arch_kwargs"] == first.spec["arch_kwargs"] and again.spec["data"] == first.spec["data"]
    assert again.tta == 2 and again.spec["training"]["augment"]["dihedral"] is True
    assert again.spec["training"]["epochs"] == 1
