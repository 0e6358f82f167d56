"""The CLI's class guard (an unexpected error is one line and a log file, never a traceback), seeds and one-label
validation sets."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.config import DataConfig, RunSpec
from harness.errors import ConfigError
from harness.registry import ARCHITECTURES
from harness.store.runs import RunStore

pytestmark = pytest.mark.smoke


@pytest.fixture
def exploding_architecture():
    """An architecture whose builder fails in a way no message of the harness foresees."""

    def exploding(input_shape=(96, 96, 3)):
        """Divides by zero while building."""
        return 1 / 0

    with ARCHITECTURES.override():
        ARCHITECTURES.register("exploding")(exploding)
        yield


def test_an_unexpected_error_is_one_line_naming_the_command_with_the_traceback_in_a_log(
    exploding_architecture, tmp_path, monkeypatch, capsys
):
    results = tmp_path / "results"
    monkeypatch.setenv("HARNESS_RESULTS", str(results))  # `list` has no --results flag
    code = main(["list"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: harness list failed: ZeroDivisionError: division by zero"), lines[0]
    logs = list((results / "logs").glob("error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in lines[0]
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "1 / 0" in text and text.startswith("harness list")


def test_debug_shows_the_traceback_instead(exploding_architecture, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path))
    with pytest.raises(ZeroDivisionError):
        main(["list", "--debug"])
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "list"])
    assert not (tmp_path / "logs").exists()


def test_the_log_falls_back_to_the_temp_folder_when_results_is_not_writable(
    exploding_architecture, tmp_path, monkeypatch, capsys
):
    blocker = tmp_path / "plain-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("HARNESS_RESULTS", str(blocker / "results"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and str(tmp_path / "tmp") in err, err
    assert len(list((tmp_path / "tmp").glob("error-*.log"))) == 1


@pytest.mark.parametrize("seed", ["-1", "4294967296", "1.5"])
def test_a_seed_out_of_range_is_refused_by_the_flag(seed, capsys, kaggle_folder, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "cnn", "--data", str(kaggle_folder), "--results", str(tmp_path), "--seed", seed])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "--seed" in err and "Traceback" not in err and "InvalidParameterError" not in err
    assert not (tmp_path / "harness.db").exists()  # refused before anything was opened


@pytest.mark.parametrize("seed", [-1, 2**32, True])
def test_a_seed_out_of_range_is_refused_by_the_library(seed):
    with pytest.raises(ConfigError, match="--seed must be a whole number from 0 to 4,294,967,295"):
        DataConfig(seed=seed)
    with pytest.raises(ConfigError, match="--seed"):
        RunSpec("cnn", seed=seed)


def test_the_largest_seed_is_accepted():
    assert DataConfig(seed=2**32 - 1).seed == 2**32 - 1


@pytest.mark.parametrize("protocol", ["stratified"])
def test_a_validation_set_of_one_label_is_refused_and_never_ranked(protocol, make_kaggle, tmp_path, capsys):
    data = make_kaggle()
    csv = data / "train_labels.csv"
    csv.write_text("".join(line.rsplit(",", 1)[0] + ",0\n" if i else line + "\n"
                           for i, line in enumerate(csv.read_text().splitlines())))  # fmt: skip
    results = tmp_path / "results"
    argv = ["run", "cnn", "--data", str(data), "--results", str(results), "--protocol", protocol, "--epochs", "1"]
    code = main([*argv, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the ") and "holds only label 0" in line and "both labels" in line, line
    assert "train_labels.csv" in line
    # Nothing was trained, nothing is stored as complete, and the leaderboard has nothing to rank.
    assert [r for r in RunStore(f"sqlite:///{results / 'harness.db'}").runs() if r.status == "complete"] == []
