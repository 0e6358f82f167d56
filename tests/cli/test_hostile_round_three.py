"""Hostile input, round three: nothing outside results is touched, no record or image is lost silently, no file is
trusted because the store or a checkpoint names it (each test here failed before its fix)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import keras
import pytest
from rich.console import Console

from harness.cli import main
from harness.config import DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data import load_dataset
from harness.store.runs import RunStore, default_storage
from harness.training.runner import Runner

TINY = ["--sample", "16", "--epochs", "1", "--batch-size", "8", "--protocol", "stratified", "--no-progress"]


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as stop:  # argparse refuses a flag's value itself: "harness run: error: argument ..."
        code = int(stop.code or 0)
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err[-3000:]
    return code, out, err


def tiny_spec(epochs: int = 3) -> RunSpec:
    return RunSpec(
        "cnn",
        arch_kwargs={"widths": [4], "convs": [1], "dense": [8]},
        training=TrainingConfig(epochs=epochs, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3)),
        data=DataConfig(protocol="stratified", seed=1),
        seed=1,
    )


def runner_for(data: Path, results: Path) -> Runner:
    store = RunStore(default_storage(results), root=results)
    dataset = load_dataset(data, results / "cache", progress=False)
    return Runner(dataset, store, results, progress=False, console=Console(quiet=True))


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. clean never deletes outside the results folder ------------------------------------------------------------


def test_clean_leaves_a_run_folder_moved_elsewhere_and_linked_back(make_kaggle, tmp_path, capsys):
    data, results, elsewhere = make_kaggle(n_train=24, n_test=4), tmp_path / "R", tmp_path / "elsewhere"
    for _ in range(2):
        code, _, err = cli(capsys, "run", "cnn", *TINY, "--keep-checkpoints", "--data", str(data), "--results",
                           str(results))  # fmt: skip
        assert code == 0, err
    moved = sorted((results / "runs").iterdir())[0]
    elsewhere.mkdir()
    shutil.move(str(moved), elsewhere / "x")
    os.symlink(elsewhere / "x", moved)
    before = files_under(elsewhere)
    assert any(name.endswith("model.keras") for name in before) and any("checkpoint" in n for n in before)

    argv = ["clean", "--results", str(results), "--models-outside-top", "0", "--checkpoints"]
    code, out, _ = cli(capsys, *argv)  # the dry run says so, by the real place
    assert code == 0 and "never removed" in out and str(elsewhere / "x") in out, out
    code, out, _ = cli(capsys, *argv, "--yes")
    assert code == 0, out
    assert files_under(elsewhere) == before  # nothing under the link's target changed
    other = next(p for p in (results / "runs").iterdir() if not p.is_symlink())
    assert not (other / "model.keras").exists() and not (other / "checkpoint").exists()  # the rest went


@pytest.mark.parametrize("where", ["absolute", "climbing", "another_run"])
def test_a_record_naming_a_folder_outside_its_run_is_not_followed(where, make_kaggle, tmp_path, capsys):
    data, results, victim = make_kaggle(n_train=24, n_test=4), tmp_path / "R", tmp_path / "victim"
    for _ in range(2):
        assert cli(capsys, "run", "cnn", *TINY, "--data", str(data), "--results", str(results))[0] == 0
    victim.mkdir()
    (victim / "model.keras").write_bytes(b"precious")
    (victim / "checkpoint").mkdir()
    (victim / "checkpoint" / "state.json").write_text("{}")
    store = RunStore(default_storage(results), root=results)
    first, second = (r.run_id for r in store.runs())
    named = {"absolute": str(victim), "climbing": f"runs/{first}/../../../victim", "another_run": f"runs/{second}"}
    store.engine.dispose()
    import sqlalchemy as sa

    engine = sa.create_engine(default_storage(results))
    with engine.begin() as connection:  # what a hand-edited or damaged store holds
        connection.execute(sa.text("UPDATE harness_runs SET artifacts = :a WHERE run_id = :r"),
                           {"a": named[where], "r": first})  # fmt: skip
    engine.dispose()
    code, out, err = cli(capsys, "clean", "--results", str(results), "--models-outside-top", "0", "--checkpoints",
                         "--yes")  # fmt: skip
    assert code == 0, err
    assert f"run {first}: its record names" in err and "not followed" in err, err
    assert (victim / "model.keras").read_bytes() == b"precious" and (victim / "checkpoint" / "state.json").exists()
    if where == "another_run":  # the second run's model goes for its own record's reason, not the first's
        assert f"model of run {first}" not in out


# --- 2. a store that cannot persist is refused before anything trains ---------------------------------------------


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite:///file::memory:?cache=shared"])
def test_an_in_memory_store_is_refused_before_training(url, make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=24, n_test=4), tmp_path / "R"
    code, _, err = cli(capsys, "run", "seed_model2", *TINY, "--data", str(data), "--results", str(results),
                       "--storage", url)  # fmt: skip
    assert code == 2 and "in-memory database" in err and "every run record would be lost" in err, err
    assert not (results / "runs").exists()  # nothing trained, nothing orphaned


def test_a_store_that_is_a_device_or_folder_is_refused(make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=24, n_test=4), tmp_path / "R"
    for url, words in (("sqlite:////dev/null", "not a regular file"), (f"sqlite:///{tmp_path}", "is a folder")):
        code, _, err = cli(capsys, "leaderboard", "--data", str(data), "--results", str(results), "--storage", url)
        assert code == 2 and words in err, err


# --- 3. a test image that is not a file never shrinks the submission ---------------------------------------------


@pytest.mark.parametrize("kind", ["dangling_symlink", "fifo"])
def test_run_refuses_a_test_image_that_is_not_a_file(kind, make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=24, n_test=4, sample_submission=False)
    image = sorted((data / "test").iterdir())[0]
    image.unlink()
    os.symlink(data / "test" / "gone.png", image) if kind == "dangling_symlink" else os.mkfifo(image)
    code, _, err = cli(capsys, "run", "cnn", *TINY, "--data", str(data), "--results", str(tmp_path / "R"))
    assert code == 2 and image.name in err and "regular file" in err, err
    assert not (tmp_path / "R" / "submission.csv").exists()


# --- 4. a tampered checkpoint finishes nothing ---------------------------------------------------------------------


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:  # as Ctrl-C after epoch 1 was checkpointed: the run is interrupted, its checkpoint kept
            raise KeyboardInterrupt


def interrupted_run(data: Path, results: Path) -> tuple[str, Path]:
    runner = runner_for(data, results)
    with pytest.raises(KeyboardInterrupt):
        runner.run(tiny_spec(3), callbacks=[StopAfterFirstEpoch()], run_id="20260101-000000-cnn-abcdef")
    record = runner.store.get("20260101-000000-cnn-abcdef")
    assert record.status == "interrupted"
    return record.run_id, Path(record.artifacts or "") / "checkpoint" / "state.json"


@pytest.mark.parametrize(
    "tamper,words",
    [
        (lambda s: s | {"epoch": 99}, "more than the run's 3 epochs"),
        (lambda s: s | {"finished": True}, "finished after epoch 1 of 3"),
        (lambda s: s | {"best": 0.99}, "its history's best"),
        (lambda s: s | {"epoch": 1.5}, "not a whole number"),
        (lambda s: s | {"rows": []}, "history rows"),
        (lambda s: s | {"surprise": 1}, "unknown key 'surprise'"),
        (lambda s: "not json", "not a readable fit state"),
    ],
    ids=["epoch_99", "finished_early", "best_not_in_history", "epoch_fraction", "no_rows", "unknown_key", "garbage"],
)
def test_a_tampered_checkpoint_is_refused_and_the_run_is_not_complete(tamper, words, make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=24, n_test=4), tmp_path / "R"
    run_id, state_file = interrupted_run(data, results)
    state = json.loads(state_file.read_text())
    changed = tamper(state)
    state_file.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    code, _, err = cli(capsys, "run", run_id, "--resume", "--data", str(data), "--results", str(results),
                       "--no-progress")  # fmt: skip
    assert code != 0 and words in err and "harness clean --checkpoints" in err, err
    record = RunStore(default_storage(results), root=results).get(run_id)
    assert record.status != "complete" and record.val_auc is None


def test_an_untampered_checkpoint_still_resumes(make_kaggle, tmp_path, capsys):
    data, results = make_kaggle(n_train=24, n_test=4), tmp_path / "R"
    run_id, _ = interrupted_run(data, results)
    code, _, err = cli(capsys, "run", run_id, "--resume", "--data", str(data), "--results", str(results),
                       "--no-progress")  # fmt: skip
    assert code == 0, err
    record = RunStore(default_storage(results), root=results).get(run_id)
    assert record.status == "complete" and record.epochs_run == 3


# --- 5. --out: symlinks followed, streams written through, never renamed over -----------------------------------------


def tiny_model_file(tmp_path: Path) -> Path:
    model = keras.Sequential([keras.Input((96, 96, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1,
                              activation="sigmoid")])  # fmt: skip
    model.save(tmp_path / "model.keras")
    return tmp_path / "model.keras"


def test_out_through_a_symlink_writes_its_target_and_keeps_the_link(make_kaggle, tmp_path, capsys):
    data, model = make_kaggle(n_train=10, n_test=4), tiny_model_file(tmp_path)
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    code, _, err = cli(capsys, "predict", str(model), "--data", str(data), "--results", str(tmp_path / "R"),
                       "--out", str(link))  # fmt: skip
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("id,label\n") and len(target.read_text().splitlines()) == 5


def test_out_to_a_fifo_is_written_through_and_one_without_a_reader_is_an_error(make_kaggle, tmp_path, capsys):
    data, model = make_kaggle(n_train=10, n_test=4), tiny_model_file(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    argv = ["predict", str(model), "--data", str(data), "--results", str(tmp_path / "R"), "--out", str(fifo)]
    code, _, err = cli(capsys, *argv)  # nobody reads it: refused at once, no hang
    assert code == 2 and "no process is reading" in err, err
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(Path(fifo).read_bytes()))
    reader.start()
    code, _, err = cli(capsys, *argv)
    reader.join(timeout=30)
    assert code == 0, err
    assert fifo.exists() and not fifo.is_file()  # still a FIFO: never renamed over
    assert received and received[0].startswith(b"id,label\n") and len(received[0].splitlines()) == 5


def test_out_dev_stdout_prints_the_submission(make_kaggle, tmp_path):
    data, model = make_kaggle(n_train=10, n_test=4), tiny_model_file(tmp_path)
    command = [sys.executable, "-m", "harness", "predict", str(model), "--data", str(data), "--results",
               str(tmp_path / "R"), "--out", "/dev/stdout"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env={**os.environ,
                          "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("id,label\n") and len(done.stdout.splitlines()) == 5
    assert Path("/dev/stdout").is_symlink() or Path("/dev/stdout").exists()  # the device node is still there


def test_out_to_a_folder_is_refused(make_kaggle, tmp_path, capsys):
    data, model = make_kaggle(n_train=10, n_test=4), tiny_model_file(tmp_path)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, _, err = cli(capsys, "predict", str(model), "--data", str(data), "--results", str(tmp_path / "R"),
                       "--out", str(folder))  # fmt: skip
    assert code == 2 and "is a folder" in err, err
    assert folder.is_dir() and not any(folder.iterdir())


# --- the classes: each rule on cases of its own ------------------------------------------------------------------


def refused_line(capsys, *argv: str) -> str:
    """The CLI refuses with exit code 2 and one error line (no traceback)."""
    code, _, err = cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines and "error: " in lines[-1], err[-2000:]
    return lines[-1]


@pytest.mark.parametrize(
    "flag,value,words",
    [
        ("--time-limit", "nan", "finite"),
        ("--time-limit", "inf", "finite"),
        ("--deadline", "-5", "duration"),
        ("--deadline", "15 parsecs", "duration"),
        ("--weight-decay", "nan", "weight-decay"),
        ("--label-smoothing", "inf", "label-smoothing"),
    ],
)
def test_numbers_that_are_not_finite_or_durations_that_are_not_are_refused(flag, value, words, tmp_path, capsys):
    line = refused_line(capsys, "run", "cnn", flag, value, "--results", str(tmp_path / "R"))
    assert words in line or flag in line, line


def test_max_gmacs_inf_and_timeout_nan_are_refused(tmp_path, capsys):
    for argv in (["--max-gmacs", "inf"], ["--timeout", "nan"]):
        code, _, err = cli(capsys, "search", *argv, "--results", str(tmp_path / "R"))
        assert (code == 2 and "finite" in err) or "duration" in err, err


def test_a_sample_larger_than_the_data_is_refused_not_recorded(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=24, n_test=4)
    line = refused_line(capsys, "run", "cnn", "--sample", "1000000", "--data", str(data), "--results",
                        str(tmp_path / "R"), "--epochs", "1", "--no-progress")  # fmt: skip
    assert "1,000,000 is more than the 24 labelled images" in line, line
    assert not (tmp_path / "R" / "runs").exists() or not any((tmp_path / "R" / "runs").iterdir())


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_a_config_file_that_is_not_a_small_regular_file_is_refused_without_blocking(kind, tmp_path, capsys):
    path = tmp_path / "exp.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_text("epochs = 1\n" + "# padding\n" * 200_000)
    line = refused_line(capsys, "run", "--config", str(path), "--results", str(tmp_path / "R"))
    expected = {"fifo": "FIFO", "device": "device", "folder": "a folder", "huge": "at most"}[kind]
    assert str(path) in line and expected in line, line


def test_a_spec_json_on_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    path = tmp_path / "spec.json"
    os.mkfifo(path)
    line = refused_line(capsys, "run", str(path), "--results", str(tmp_path / "R"))
    assert "FIFO" in line, line


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda s: s["training"].update(epoch=3), "unknown key 'epoch'; did you mean 'epochs'?"),
        (lambda s: s["training"].update(epochs=2.5), "--epochs must be a whole number, got 2.5"),
        (lambda s: s["training"].update(epochs=True), "--epochs must be a whole number, got True"),
        (lambda s: s["training"].update(batch_size="64"), "--batch-size must be a whole number"),
        (lambda s: s["training"]["optimizer"].update(learning_rate=float("inf")), "finite"),
        (lambda s: s["data"].update(protocol=7), "--protocol must be text"),
        (lambda s: s["training"]["augment"].update(dihedral="yes"), "--dihedral must be true or false"),
        (lambda s: s.update(surprise=1), "unknown key 'surprise'"),
        (lambda s: s.update(arch_kwargs=[1, 2]), "arch_kwargs must be a table"),
    ],
    ids=[
        "unknown_key",
        "fractional_epochs",
        "bool_epochs",
        "text_batch",
        "inf_rate",
        "number_protocol",
        "text_bool",
        "unknown_top_key",
        "kwargs_list",
    ],
)
def test_a_hand_edited_spec_json_is_checked_as_strictly_as_a_config(change, words, tmp_path, capsys):
    raw = tiny_spec(1).to_dict()
    change(raw)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    line = refused_line(capsys, "run", str(path), "--results", str(tmp_path / "R"))
    assert words in line and str(path) in line, line


def test_a_model_that_cannot_fit_in_memory_is_refused_before_anything_is_allocated(make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=24, n_test=4)
    raw = tiny_spec(1).to_dict()
    raw["arch_kwargs"] = {"widths": [4], "convs": [1], "dense": [2_000_000, 100_000]}  # 200 billion parameters
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(raw))
    line = refused_line(capsys, "run", str(path), "--data", str(data), "--results", str(tmp_path / "R"))
    assert "refused before anything is allocated" in line and "GB" in line, line
    assert not (tmp_path / "R" / "runs").exists()


@pytest.mark.parametrize("name", ["train_labels.csv", "sample_submission.csv"])
def test_a_data_csv_that_is_a_fifo_is_refused_not_read_or_ignored(name, make_kaggle, tmp_path, capsys):
    data = make_kaggle(n_train=24, n_test=4)
    (data / name).unlink()
    os.mkfifo(data / name)
    line = refused_line(capsys, "data", "check", "--data", str(data), "--results", str(tmp_path / "R"))
    assert name in line and "FIFO" in line, line


def test_a_closed_stdout_is_one_line_and_a_full_one_is_an_error_not_silence(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    closed = subprocess.run(f"{sys.executable} -m harness list >&-", shell=True, capture_output=True, text=True,
                            env=env, timeout=120)  # fmt: skip
    assert closed.returncode == 2 and "stdout is closed" in closed.stderr, closed.stderr
    full = subprocess.run(f"{sys.executable} -m harness list > /dev/full", shell=True, capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert full.returncode != 0 and "error:" in full.stderr and "Traceback" not in full.stderr, full.stderr


def test_markdown_cells_escape_what_markdown_reads():
    from harness.ranking.leaderboard import markdown_cell

    assert markdown_cell("a|b\nc") == "a\\|b c"


@pytest.mark.parametrize("text", ['=HYPERLINK("http://x")', "+1+cmd", "-2+3", "@SUM(A1)", "\tx"])
def test_csv_text_cells_that_a_spreadsheet_would_run_as_a_formula_stay_text(text):
    import pandas as pd

    from harness.ranking.leaderboard import render_text

    frame = pd.DataFrame({"run": [text, "plain-run"], "val_auc": [-0.5, 0.75]})
    rows = pd.read_csv(__import__("io").StringIO(render_text(frame, "csv", columns=["run", "val_auc"])))
    assert rows["run"].tolist() == [f"'{text}", "plain-run"]  # quoted, and ordinary text unchanged
    assert rows["val_auc"].tolist() == [-0.5, 0.75]  # a negative number is a number, not a formula
