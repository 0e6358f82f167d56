"""Hostile and broken input through the CLI: each is refused with exit code 2 and one short line, never a crash."""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tifffile
from conftest import small_tmpfs, train_ids_of, write_image
from hostile_helpers import first_train_image, refused, tiny_model

from harness.cli import main
from harness.workspace import check_writable

pytestmark = pytest.mark.smoke


def labels(root: Path, text: str | bytes) -> None:
    path = root / "train_labels.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def rows(root: Path, label: Callable[[int], str] = lambda n: str(n % 2), ids: list[str] | None = None) -> str:
    return "".join(f"{i},{label(n)}\n" for n, i in enumerate(ids or train_ids_of(root)))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def huge_id(root: Path) -> None:
    labels(root, "id,label\n" + "a" * 10_000_000 + ",0\n" + rows(root))


def huge_label(root: Path) -> None:
    ids = train_ids_of(root)
    labels(root, f"id,label\n{ids[0]},{'7' * 10_000_000}\n" + rows(root, ids=ids[1:]))


def symlink_out(root: Path) -> None:
    outside = write_image(root.parent / "elsewhere.tif", np.zeros((96, 96, 3), np.uint8))
    path = first_train_image(root)
    path.unlink()
    path.symlink_to(outside)


def empty_test(root: Path) -> None:
    shutil.rmtree(root / "test")
    (root / "test").mkdir()
    (root / "sample_submission.csv").unlink()


def mismatched_submission(root: Path) -> None:
    path = root / "sample_submission.csv"
    lines = path.read_text().splitlines()
    lines[1] = "feedfacefeedfacefeedfacefeedfacefeedface,0"
    path.write_text("\n".join(lines) + "\n")


def first_test_image(root: Path) -> Path:
    return sorted((root / "test").iterdir())[0]


def replace(image: Path, make: Callable[[Path], object]) -> None:
    """Put something else under an image's name: `make(path)` creates it."""
    image.unlink()
    make(image)


def dangling(path: Path) -> None:
    """A symlink to a file inside the data folder that does not exist."""
    os.symlink(path.parent / "gone.png", path)


def image_is_a_folder(root: Path) -> None:
    path = first_train_image(root)
    path.unlink()
    path.mkdir()


# name -> (what makes the folder bad, fragments the one-line error must hold). The table in docs/hostile-input.md
# names these cases; keep the two in step.
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...]]] = {
    "no_data_folder": (lambda r: shutil.rmtree(r), ("does not exist",)),
    "no_labels_csv": (lambda r: (r / "train_labels.csv").unlink(), ("train_labels.csv", "missing")),
    "empty_csv": (lambda r: labels(r, ""), ("empty",)),
    "header_only_csv": (lambda r: labels(r, "id,label\n"), ("no rows",)),
    "malformed_csv": (lambda r: labels(r, "id,label\na,0\nb,1,extra,fields\n"), ("not a readable CSV",)),
    "not_utf8_csv": (lambda r: labels(r, b"id,label\n\xff\xfe\xfa,0\n"), ("not a readable CSV",)),
    "missing_label_column": (lambda r: labels(r, "id,target\n" + rows(r)), ("'label'",)),
    "extra_column": (lambda r: labels(r, "id,label,x\n" + rows(r, lambda n: "0,1")), ("unexpected column",)),
    "no_header": (lambda r: labels(r, rows(r)), ("'id'", "header")),
    "label_not_binary": (lambda r: labels(r, "id,label\n" + rows(r, lambda n: "2" if n == 3 else "0")), ("'2'",)),
    "label_not_a_number": (lambda r: labels(r, "id,label\n" + rows(r, lambda n: "yes")), ("'yes'", "not 0 or 1")),
    "duplicate_ids": (lambda r: labels(r, "id,label\n" + rows(r) + rows(r).splitlines()[0]), ("more than once",)),
    "id_with_separator": (lambda r: labels(r, "id,label\nsub/evil,0\n"), ("path separator",)),
    "id_path_traversal": (lambda r: labels(r, "id,label\n../../etc/passwd,0\n"), ("not a plain file name",)),
    "id_dot_dot": (lambda r: labels(r, "id,label\n..,0\n"), ("not a plain file name",)),
    "id_absolute_path": (lambda r: labels(r, "id,label\n/etc/passwd,0\n"), ("path separator",)),
    "id_control_character": (lambda r: labels(r, "id,label\nab\x07c,0\n"), ("control character",)),
    "id_10_mb_long": (huge_id, ("10,000,000 characters", "at most 255")),
    "label_10_mb_long": (huge_label, ("10,000,000 characters", "not 0 or 1")),
    "image_missing": (lambda r: first_train_image(r).unlink(), ("missing",)),
    "image_is_a_folder": (image_is_a_folder, ("is a folder", "regular file")),
    # Round three: an entry named as a test image that is not a file was dropped, and the submission came out
    # an id short with exit 0; in train/ a listed one read as "missing".
    "test_image_dangling_symlink": (lambda r: replace(first_test_image(r), dangling), ("does not exist",)),
    "test_image_fifo": (lambda r: replace(first_test_image(r), os.mkfifo), ("FIFO",)),
    "test_image_folder": (lambda r: replace(first_test_image(r), Path.mkdir), ("is a folder",)),
    "train_image_fifo": (lambda r: replace(first_train_image(r), os.mkfifo), ("FIFO",)),
    "stray_fifo_in_test": (lambda r: os.mkfifo(r / "test" / "stray.tif"), ("stray.tif", "FIFO")),
    "image_garbage": (lambda r: first_train_image(r).write_bytes(os.urandom(3000)), ("not a readable image",)),
    "image_0_bytes": (lambda r: first_train_image(r).write_bytes(b""), ("0 bytes",)),
    "tiff_truncated": (lambda r: truncate(first_train_image(r)), ("truncated",)),
    "image_wrong_size": (lambda r: write_image(first_train_image(r), np.zeros((64, 64, 3), np.uint8)), ("64, 64",)),
    "image_grayscale": (lambda r: write_image(first_train_image(r), np.zeros((96, 96), np.uint8)), ("grayscale",)),
    "tiff_16_bit": (
        lambda r: tifffile.imwrite(first_train_image(r), np.full((96, 96, 3), 999, np.uint16), photometric="rgb"),
        ("16-bit",),
    ),
    "tiff_4_channels": (
        lambda r: tifffile.imwrite(first_train_image(r), np.zeros((96, 96, 4), np.uint8), photometric="rgb"),
        ("4 channels",),
    ),
    "symlink_out_of_folder": (symlink_out, ("symlink", "outside the data folder")),
    "hidden_test_file": (
        lambda r: write_image(r / "test" / ".hidden.tif", np.zeros((96, 96, 3), np.uint8)),
        ("not a plain file name",),
    ),
    "two_files_one_id": (
        lambda r: shutil.copy(first_train_image(r), first_train_image(r).with_suffix(".png")),
        ("two image files",),
    ),
    "no_test_folder": (lambda r: shutil.rmtree(r / "test"), ("test", "missing")),
    "empty_test_folder": (empty_test, ("no images",)),
    "sample_submission_mismatch": (mismatched_submission, ("sample_submission.csv", "feedface")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_data_folder_is_refused_in_one_line(case, make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=10, n_test=4)
    mutate, expect = CASES[case]
    mutate(root)
    refused(capsys, "data", "check", "--data", str(root), "--results", str(tmp_path / "results"), expect=expect)


def test_truncated_jpeg_is_refused(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=10, n_test=4, ext=".jpg")
    path = first_train_image(root)
    path.write_bytes(path.read_bytes()[:-200])
    refused(capsys, "data", "check", "--data", str(root), "--results", str(tmp_path / "r"), expect=("truncated",))


def test_predict_writes_a_valid_submission(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=10, n_test=4)
    tiny_model().save(tmp_path / "model.keras")
    out = tmp_path / "sub.csv"
    argv = ["predict", str(tmp_path / "model.keras"), "--data", str(root), "--results", str(tmp_path / "r")]
    assert main([*argv, "--out", str(out), "--tta", "2"]) == 0, capsys.readouterr().err
    frame = pd.read_csv(out)
    assert frame["id"].tolist() == pd.read_csv(root / "sample_submission.csv")["id"].tolist()
    assert frame["label"].between(0, 1).all()


def test_model_with_a_lambda_layer_is_refused_and_never_run(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=10, n_test=4)
    marker = str(tmp_path / "payload-ran")
    payload = keras.layers.Lambda(lambda x: (open(marker, "w").close(), x)[1])  # stands for any code in a file
    model = keras.Sequential([keras.Input((96, 96, 3)), payload, keras.layers.Flatten(), keras.layers.Dense(1)])
    model.save(tmp_path / "evil.keras")
    assert os.path.exists(marker)  # building the model ran it: the payload is live
    os.unlink(marker)
    argv = ["predict", str(tmp_path / "evil.keras"), "--data", str(root), "--results", str(tmp_path / "r")]
    refused(capsys, *argv, expect=("Lambda", "refused", "evil.keras"))
    assert not os.path.exists(marker)
    assert not (tmp_path / "r" / "submission.csv").exists()


def zip_without_a_model() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "a zip, but no config.json")
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x00" * 100, zip_without_a_model()])
def test_model_file_that_is_not_a_model_is_refused(content, tmp_path, capsys):
    (tmp_path / "bad.keras").write_bytes(content)
    refused(capsys, "predict", str(tmp_path / "bad.keras"), "--results", str(tmp_path / "r"), expect=("bad.keras",))


def test_model_for_other_inputs_is_refused(tmp_path, capsys):
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    model.save(tmp_path / "small.keras")
    refused(capsys, "predict", str(tmp_path / "small.keras"), "--results", str(tmp_path / "r"), expect=("(32, 32, 3)",))


def test_results_folder_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "plain-file").write_text("")
    results = tmp_path / "plain-file" / "results"
    refused(capsys, "leaderboard", "--results", str(results), expect=("not writable", "plain-file"))


def test_read_only_results_folder_is_refused(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    if os.geteuid() != 0:
        results.chmod(0o555)
        try:
            refused(capsys, "leaderboard", "--results", str(results), expect=("not writable", "Permission denied"))
        finally:
            results.chmod(0o755)
        return
    # Root writes anywhere: check as user nobody, in a forked child (the interpreter may be unreadable to nobody).
    shared = Path(tempfile.mkdtemp(prefix="harness-ro-"))  # under /tmp, which every user may traverse
    shared.chmod(0o555)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no TensorFlow, only the check, then leave without running pytest's exit handlers
        try:
            os.setgid(65534)
            os.setuid(65534)
            check_writable(shared)
            message = "no error"
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(writer, message.encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    with os.fdopen(reader) as pipe:
        message = pipe.read()
    shutil.rmtree(shared, ignore_errors=True)
    assert message.startswith("HarnessError: ") and "\n" not in message, message
    assert "not writable" in message and "Permission denied" in message and str(shared) in message, message


def previous_submission(root: Path, path: Path) -> str:
    ids = pd.read_csv(root / "sample_submission.csv")["id"].tolist()
    text = "id,label\n" + "".join(f"{i},0.5\n" for i in ids)
    path.write_text(text)
    return text


def test_full_disk_keeps_the_previous_submission_simulated(make_kaggle, tmp_path, capsys, monkeypatch):
    root = make_kaggle(n_train=10, n_test=4)
    tiny_model().save(tmp_path / "model.keras")
    out = tmp_path / "sub" / "submission.csv"
    out.parent.mkdir()
    before = previous_submission(root, out)

    def half_then_enospc(frame, path, *args, **kwargs):
        Path(path).write_text("id,label\nhalf")  # the disk fills part way through the file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_enospc)
    argv = ["predict", str(tmp_path / "model.keras"), "--data", str(root), "--results", str(tmp_path / "r")]
    refused(capsys, *argv, "--out", str(out), expect=("No space left on device", "previous file is unchanged"))
    assert out.read_text() == before
    assert [p.name for p in out.parent.iterdir()] == ["submission.csv"]  # no temporary file left behind


def test_full_disk_keeps_the_previous_submission_on_a_real_full_tmpfs(make_kaggle, tmp_path, capsys):
    root = make_kaggle(n_train=10, n_test=4)
    tiny_model().save(tmp_path / "model.keras")
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "submission.csv"
        before = previous_submission(root, out)
        with open(disk / "filler", "wb", buffering=0) as filler:  # fill the disk to the last byte
            with pytest.raises(OSError) as full:
                while True:
                    filler.write(b"\0" * 4096)
            assert full.value.errno == errno.ENOSPC
        argv = ["predict", str(tmp_path / "model.keras"), "--data", str(root), "--results", str(tmp_path / "r")]
        refused(capsys, *argv, "--out", str(out), expect=("No space left on device", "previous file is unchanged"))
        assert out.read_text() == before
        assert sorted(p.name for p in disk.iterdir()) == ["filler", "submission.csv"]
