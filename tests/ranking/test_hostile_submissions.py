"""Never a wrong submission: model outputs, damaged run submissions, test labels and archives, through the CLI."""

from __future__ import annotations

import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from hostile_helpers import refused, tiny_model

from harness.cli import main
from harness.data.submission import write_submission
from harness.errors import HarnessError
from harness.store.runs import RunStore
from harness.training.inference import predict_probabilities

RUN_ID = "20260101-000000-cnn-abc123"


def sample_ids(root: Path) -> list[str]:
    return pd.read_csv(root / "sample_submission.csv", dtype=str)["id"].tolist()


def predict_argv(model: Path, root: Path | None, results: Path, out: Path) -> list[str]:
    data = ["--data", str(root)] if root is not None else []
    return ["predict", str(model), *data, "--results", str(results), "--out", str(out)]


# ----------------------------------------------------------------------------- model outputs


def head_model(head: Callable[[keras.KerasTensor], object]) -> keras.Model:
    inputs = keras.Input((96, 96, 3))
    return keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))))


def test_two_class_softmax_is_read_as_its_column_1(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    model = head_model(lambda x: keras.layers.Dense(2, activation="softmax")(x))
    model.save(tmp_path / "softmax.keras")
    out = tmp_path / "sub.csv"
    assert main(predict_argv(tmp_path / "softmax.keras", root, tmp_path / "r", out)) == 0, capsys.readouterr().err
    written = pd.read_csv(out, dtype={"id": str})
    assert written["id"].tolist() == sample_ids(root)
    from harness.data import load_dataset

    dataset = load_dataset(root, tmp_path / "r" / "cache", progress=False)
    by_id = dict(zip(dataset.test.ids, np.asarray(model.predict_on_batch(dataset.test.images))[:, 1], strict=True))
    assert np.allclose(written["label"], [by_id[i] for i in written["id"]], atol=2e-6)


@pytest.mark.parametrize(
    ("head", "expect"),
    [
        (lambda x: keras.layers.Dense(10, activation="sigmoid")(x), "(N, 10)"),
        (lambda x: [keras.layers.Dense(1, activation="sigmoid")(x), keras.layers.Dense(1)(x)], "2 outputs"),
        # Two sigmoids have the softmax's shape, but column 1 of them is not p(tumour): the rows must sum to 1.
        (lambda x: keras.layers.Dense(2, activation="sigmoid", bias_initializer="ones")(x), "do not sum to 1"),
    ],
    ids=["dense10_sigmoid", "two_outputs", "dense2_sigmoid"],
)
def test_model_without_one_probability_per_image_is_refused(head, expect, make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    head_model(head).save(tmp_path / "m.keras")
    out = tmp_path / "sub.csv"
    refused(capsys, *predict_argv(tmp_path / "m.keras", root, tmp_path / "r", out), expect=("m.keras", expect))
    assert not out.exists()


def test_per_pixel_model_is_refused_before_predicting(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    inputs = keras.Input((96, 96, 3))
    keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs)).save(tmp_path / "pixels.keras")
    out = tmp_path / "sub.csv"
    argv = predict_argv(tmp_path / "pixels.keras", root, tmp_path / "r", out)
    refused(capsys, *argv, expect=("pixels.keras", "(N, 96, 96, 1)"))
    assert not out.exists()
    assert not (tmp_path / "r" / "cache").exists()  # refused from the model's output_shape, before any decoding


def test_predict_probabilities_never_flattens_several_values_per_image():
    """The runner's own path (no softmax allowance): a (N, 2) or (N, 3) output is an error, never 2N values."""
    images = np.zeros((5, 96, 96, 3), np.uint8)
    for width in (2, 3):
        model = head_model(lambda x, w=width: keras.layers.Dense(w, activation="softmax")(x))
        with pytest.raises(HarnessError, match=rf"\(N, {width}\)"):
            predict_probabilities(model, images, np.arange(5), batch_size=4)


def test_unbuilt_sequential_model_is_refused(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    with pytest.warns(UserWarning):  # Keras warns that the model is not built: that is the hostile input
        keras.Sequential([keras.layers.Dense(1, activation="sigmoid")]).save(tmp_path / "unbuilt.keras")
    argv = predict_argv(tmp_path / "unbuilt.keras", root, tmp_path / "r", tmp_path / "sub.csv")
    refused(capsys, *argv, expect=("unbuilt.keras", "no input shape"))


# ----------------------------------------------------------------------------- model archives that inflate


def rewrite_archive(source: Path, target: Path, config_padding: int = 0, extra_member: int = 0) -> None:
    """Copy a .keras archive, deflated: config.json padded with whitespace (still valid JSON), or an extra member of
    zeros. Both inflate to `padding` bytes from a few hundred kB."""
    chunk = b" " * (1 << 20)

    def deflated(name: str) -> zipfile.ZipInfo:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        return info

    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            with dst.open(deflated(info.filename), "w", force_zip64=True) as member:
                member.write(data)
                for _ in range(config_padding // len(chunk) if info.filename == "config.json" else 0):
                    member.write(chunk)
        if extra_member:
            with dst.open(deflated("assets/blob.bin"), "w", force_zip64=True) as member:
                for _ in range(extra_member // len(chunk)):
                    member.write(bytes(len(chunk)))


@pytest.mark.parametrize(
    ("padding", "expect"),
    [
        ({"config_padding": 48 << 20}, ("config.json would inflate to 48.0 MB", "at most 8 MB")),
        ({"extra_member": 400 << 20}, ("would inflate to 400.0 MB", "64 MB + 16x the archive's size")),
    ],
    ids=["config_json_48_mb", "archive_400_mb"],
)
def test_model_archive_that_inflates_is_refused_fast_in_bounded_memory(padding, expect, make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    tiny_model().save(tmp_path / "plain.keras")
    rewrite_archive(tmp_path / "plain.keras", tmp_path / "bomb.keras", **padding)
    assert (tmp_path / "bomb.keras").stat().st_size < 2 << 20
    argv = predict_argv(tmp_path / "bomb.keras", root, tmp_path / "r", tmp_path / "sub.csv")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        refused(capsys, *argv, expect=("bomb.keras", "refused", *expect))
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 5 and peak < 16 << 20, (seconds, peak)


# ----------------------------------------------------------------------------- predict: which test set


def make_run(results: Path, root: Path, model: keras.Model | None = None, run_id: str = RUN_ID) -> Path:
    """A complete run in a real SQLite store, trained on `root`: its model.keras and a valid submission.csv."""
    folder = results / "runs" / run_id
    folder.mkdir(parents=True)
    (model or tiny_model()).save(folder / "model.keras")
    ids = sample_ids(root)
    probabilities = np.random.default_rng(0).random(len(ids))
    pd.DataFrame({"id": ids, "label": probabilities}).to_csv(
        folder / "submission.csv", index=False, float_format="%.6f"
    )
    store = RunStore(f"sqlite:///{results / 'harness.db'}")
    store.start(
        run_id,
        architecture="cnn",
        origin="baseline",
        spec={},
        dataset=str(root.resolve()),
        artifacts=str(folder),
        synthetic=False,
    )
    store.update(run_id, status="complete", val_accuracy=0.9, val_auc=0.95, submission=str(folder / "submission.csv"))
    return folder


def test_predict_without_data_uses_the_data_of_the_models_run(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    folder = make_run(tmp_path / "r", root)
    out = tmp_path / "sub.csv"
    assert main(predict_argv(folder / "model.keras", None, tmp_path / "r", out)) == 0, capsys.readouterr().err
    assert str(root.resolve()) in capsys.readouterr().err
    assert pd.read_csv(out, dtype={"id": str})["id"].tolist() == sample_ids(root)
    assert not (tmp_path / "r" / "demo-data").exists()  # the demo was never built, let alone predicted


def test_predict_without_data_needs_it_for_a_model_of_no_known_run(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=6)
    make_run(tmp_path / "r", root)
    tiny_model().save(tmp_path / "model.keras")
    # A run's layout, but no such run in the store (copied from another results folder, say).
    stray = tmp_path / "r" / "runs" / "20260101-000000-cnn-ffffff" / "model.keras"
    stray.parent.mkdir()
    tiny_model().save(stray)
    for model in (tmp_path / "model.keras", stray):
        out = tmp_path / "sub.csv"
        refused(capsys, *predict_argv(model, None, tmp_path / "r", out), expect=(str(model), "needs --data"))
        assert not out.exists()
    assert not (tmp_path / "r" / "demo-data").exists()


# ----------------------------------------------------------------------------- leaderboard: damaged run submissions


def rows_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def cut_rows(path: Path) -> None:
    path.write_text("".join(rows_of(path)[:11]))  # the header and 10 of 50 rows


def cut_mid_line(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) - 4])  # the last probability loses its last digits and the line end


def foreign_id(path: Path) -> None:
    path.write_text(path.read_text() + "f" * 40 + ",0.5\n")


def label_abc(path: Path) -> None:
    lines = rows_of(path)
    lines[7] = lines[7].split(",")[0] + ",abc\n"
    path.write_text("".join(lines))


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(3000))


def header_only(path: Path) -> None:  # a case of its own: today it becomes an empty results/submission.csv
    path.write_text("id,label\n")


def repeated_id(path: Path) -> None:  # a case of its own: every test id, and one of them twice
    lines = rows_of(path)
    path.write_text("".join([*lines, lines[3]]))


def nan_label(path: Path) -> None:  # a case of its own
    lines = rows_of(path)
    lines[2] = lines[2].split(",")[0] + ",nan\n"
    path.write_text("".join(lines))


DAMAGE = {
    "cut_to_10_rows": (cut_rows, "lacks 40 test ids of 50"),
    "cut_mid_line": (cut_mid_line, "does not end with a line end"),
    "id_not_in_test_set": (foreign_id, "1 ids that are not test images"),
    "label_abc": (label_abc, "line 8: label 'abc'"),
    "zero_bytes": (zero_bytes, "is empty (0 bytes)"),
    "directory": (directory, "is not a regular file"),
    "random_bytes": (random_bytes, "not a UTF-8 id,label CSV"),
    "header_only": (header_only, "has a header but no rows"),
    "repeated_id": (repeated_id, "repeats id"),
    "nan_label": (nan_label, "line 3: label 'nan'"),
}


@pytest.fixture
def ranked_run(make_kaggle, tmp_path, capsys) -> tuple[Path, Path, Path]:
    """(data, results, the run's submission.csv), after a first leaderboard wrote results/submission.csv."""
    root = make_kaggle(n_train=4, n_test=50)
    results = tmp_path / "r"
    folder = make_run(results, root)
    assert main(["leaderboard", "--results", str(results)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert (results / "submission.csv").read_bytes() == (folder / "submission.csv").read_bytes()
    return root, results, folder / "submission.csv"


@pytest.mark.parametrize("case", DAMAGE, ids=list(DAMAGE))
def test_damaged_run_submission_never_becomes_results_submission(case, ranked_run, capsys):
    _, results, source = ranked_run
    before = (results / "submission.csv").read_bytes()
    damage, expect = DAMAGE[case]
    damage(source)
    argv = ["leaderboard", "--results", str(results), "--format", "csv"]  # the table would come before the error
    refused(capsys, *argv, expect=(RUN_ID, str(source), expect, "is unchanged"))
    assert (results / "submission.csv").read_bytes() == before
    assert sorted(p.name for p in results.iterdir() if p.name.startswith(".submission")) == []


def test_run_submission_is_not_copied_when_its_test_set_is_gone(ranked_run, capsys):
    root, results, _ = ranked_run
    (results / "submission.csv").write_text("id,label\n")  # not the pick's file: the board must copy it again
    before = (results / "submission.csv").read_bytes()
    root.rename(root.with_name("moved"))
    argv = ["leaderboard", "--results", str(results), "--format", "csv"]
    refused(capsys, *argv, expect=(RUN_ID, str(root.resolve()), "cannot be checked", "is unchanged", "--no-submission"))
    assert (results / "submission.csv").read_bytes() == before


def test_run_submission_in_another_order_is_written_in_sample_submission_order(ranked_run, capsys):
    root, results, source = ranked_run
    lines = rows_of(source)
    source.write_text("".join([lines[0], *reversed(lines[1:])]))
    (results / "submission.csv").unlink()
    assert main(["leaderboard", "--results", str(results)]) == 0, capsys.readouterr().err
    written = pd.read_csv(results / "submission.csv", dtype={"id": str})
    assert written["id"].tolist() == sample_ids(root)
    original = pd.read_csv(source, dtype={"id": str}).set_index("id")["label"]
    assert np.allclose(written["label"], original.loc[written["id"]])


def test_every_submission_write_is_checked_against_the_test_set(tmp_path):
    """The one writer (runner, ensemble, predict, leaderboard): a frame with a repeated id or a NaN never reaches the
    file, and the previous file stays as it was."""
    ids = ["a" * 40, "b" * 40, "c" * 40]
    path = tmp_path / "submission.csv"
    write_submission(pd.DataFrame({"id": ids, "label": [0.1, 0.2, 0.3]}), path, ids)
    before = path.read_bytes()
    bad = {
        "repeats id": pd.DataFrame({"id": [*ids, ids[0]], "label": [0.1, 0.2, 0.3, 0.4]}),
        "not a probability": pd.DataFrame({"id": ids, "label": [0.1, float("nan"), 0.3]}),
        "lacks 1 test ids": pd.DataFrame({"id": ids[:2], "label": [0.1, 0.2]}),
        "columns id,label": pd.DataFrame({"id": ids, "p0": [0.9] * 3, "p1": [0.1] * 3}),
    }
    for message, frame in bad.items():
        with pytest.raises(HarnessError, match=message):
            write_submission(frame, path, ids)
        assert path.read_bytes() == before


# ----------------------------------------------------------------------------- --test-labels


def labels_text(ids: list[str], change: Callable[[list[str]], list[str]] = lambda rows: rows) -> str:
    return "id,label\n" + "".join(change([f"{i},{n % 2}\n" for n, i in enumerate(ids)]))


def set_row(k: int, text: str) -> Callable[[list[str]], list[str]]:
    return lambda rows: [text.format(id=row.split(",")[0]) if n == k else row for n, row in enumerate(rows)]


LABELS = {
    "nan_label": (set_row(3, "{id},nan\n"), "line 5: label 'nan'"),
    "empty_label": (set_row(3, "{id},\n"), "line 5: label ''"),
    "fractional_label": (set_row(0, "{id},0.5\n"), "line 2: label '0.5'"),
    "repeated_id": (lambda rows: [*rows, rows[4]], "listed more than once"),
    "id_not_in_test_set": (lambda rows: [*rows, "f" * 40 + ",1\n"], "is not in the test set of run"),
    "one_class_only": (lambda rows: [row.split(",")[0] + ",1\n" for row in rows], "needs both classes"),
}


@pytest.mark.parametrize("case", LABELS, ids=list(LABELS))
def test_bad_test_labels_are_one_line_naming_the_file(case, ranked_run, capsys):
    root, results, _ = ranked_run
    change, expect = LABELS[case]
    labels = results.parent / "test_labels.csv"
    labels.write_text(labels_text(sample_ids(root), change))
    argv = ["leaderboard", "--results", str(results), "--test-labels", str(labels), "--no-submission"]
    refused(capsys, *argv, expect=("--test-labels", str(labels), expect))


def test_test_labels_without_a_label_column_are_one_line(ranked_run, capsys):
    root, results, _ = ranked_run
    labels = results.parent / "test_labels.csv"
    labels.write_text(labels_text(sample_ids(root)).replace("id,label", "id,target", 1))
    argv = ["leaderboard", "--results", str(results), "--test-labels", str(labels)]
    refused(capsys, *argv, expect=("--test-labels", str(labels), "missing column 'label'"))


@pytest.mark.parametrize("case", ["zero_bytes", "random_bytes", "directory"])
def test_ensemble_of_a_run_whose_files_are_damaged_is_one_line(case, make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=4, n_test=10)
    results = tmp_path / "r"
    folders = [make_run(results, root, run_id=f"{RUN_ID}-{k}") for k in (1, 2)]
    for folder in folders:
        pd.DataFrame({"id": ["a", "b"], "label": [0, 1], "probability": [0.2, 0.8]}).to_csv(
            folder / "val_predictions.csv", index=False
        )
    DAMAGE[case][0](folders[1] / "submission.csv")
    line = refused(capsys, "ensemble", "--top", "2", "--data", str(root), "--results", str(results))
    assert f"run {RUN_ID}-2: cannot read its predictions" in line, line
