"""Every kind of bad Kaggle folder fails with one HarnessError line that names the file, id or column."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import train_ids_of, write_image

from harness.data import load_dataset
from harness.errors import HarnessError

# Data layer only: no model is built, so the outcome cannot depend on the Keras backend (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free


def expect_error(root: Path, cache_dir: Path, *fragments: str) -> str:
    with pytest.raises(HarnessError) as info:
        load_dataset(root, cache_dir, progress=False, workers=2)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def rewrite_labels(root: Path, text: str) -> None:
    (root / "train_labels.csv").write_text(text)


def first_train_image(root: Path) -> Path:
    return next((root / "train").glob(f"{train_ids_of(root)[0]}.*"))


def test_good_folder_loads(kaggle_folder, cache_dir):
    ds = load_dataset(kaggle_folder, cache_dir, progress=False)
    assert len(ds.train) == 20 and len(ds.test) == 6


def test_missing_data_folder(tmp_path, cache_dir):
    expect_error(tmp_path / "nowhere", cache_dir, "nowhere")


def test_missing_csv(kaggle_folder, cache_dir):
    (kaggle_folder / "train_labels.csv").unlink()
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "missing")


def test_empty_csv(kaggle_folder, cache_dir):
    rewrite_labels(kaggle_folder, "")
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "empty")


def test_header_only_csv(kaggle_folder, cache_dir):
    rewrite_labels(kaggle_folder, "id,label\n")
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "no rows")


def test_malformed_csv(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    rewrite_labels(kaggle_folder, f"id,label\n{ids[0]},0\n{ids[1]},1,extra,fields\n")
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "not a readable CSV")


def test_missing_label_column(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    rewrite_labels(kaggle_folder, "id,target\n" + "".join(f"{i},0\n" for i in ids))
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "'label'")


def test_missing_header(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    rewrite_labels(kaggle_folder, "".join(f"{i},{n % 2}\n" for n, i in enumerate(ids)))
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "'id'", "header")


def test_label_not_binary(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    rewrite_labels(kaggle_folder, "id,label\n" + "".join(f"{i},{2 if n == 3 else n % 2}\n" for n, i in enumerate(ids)))
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", ids[3], "'2'", "line 5")


def test_duplicate_ids(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    rewrite_labels(kaggle_folder, "id,label\n" + "".join(f"{i},0\n" for i in [*ids, ids[4]]))
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", ids[4], "more than once")


def test_id_with_path_separator(kaggle_folder, cache_dir):
    rewrite_labels(kaggle_folder, "id,label\nsub/evil,0\n")
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "'sub/evil'", "path separator")


def test_id_path_traversal(kaggle_folder, cache_dir):
    # A file that exists outside train/ must not be reachable through an id.
    write_image(kaggle_folder / "outside.tif", np.zeros((96, 96, 3), np.uint8))
    rewrite_labels(kaggle_folder, "id,label\n../outside,0\n")
    expect_error(kaggle_folder, cache_dir, "train_labels.csv", "'../outside'", "not a plain file name")


def test_id_dot_dot(kaggle_folder, cache_dir):
    rewrite_labels(kaggle_folder, "id,label\n..,0\n")
    expect_error(kaggle_folder, cache_dir, "'..'", "not a plain file name")


def test_images_listed_but_missing(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    for i in (2, 7, 9):
        next((kaggle_folder / "train").glob(f"{ids[i]}.*")).unlink()
    expect_error(kaggle_folder, cache_dir, ids[2], "missing", "3 of 20")


def test_garbage_image(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    path.write_bytes(os.urandom(3000))
    expect_error(kaggle_folder, cache_dir, str(path), "not a readable image")


def test_zero_byte_image(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    path.write_bytes(b"")
    expect_error(kaggle_folder, cache_dir, str(path), "0 bytes")


def test_truncated_image(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect_error(kaggle_folder, cache_dir, str(path), "truncated")


def test_truncated_jpeg(make_kaggle, cache_dir):
    root = make_kaggle(ext=".jpg")
    path = first_train_image(root)
    path.write_bytes(path.read_bytes()[:-200])
    expect_error(root, cache_dir, str(path), "truncated")


def test_wrong_size(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    write_image(path, np.zeros((64, 64, 3), np.uint8) + 128)
    expect_error(kaggle_folder, cache_dir, str(path), "(64, 64, 3)")


def test_grayscale_image(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    write_image(path, np.zeros((96, 96), np.uint8) + 128)
    expect_error(kaggle_folder, cache_dir, str(path), "grayscale", "(96, 96)")


def test_rgba_image(make_kaggle, cache_dir):
    root = make_kaggle(ext=".png")
    path = first_train_image(root)
    write_image(path, np.zeros((96, 96, 4), np.uint8) + 128)
    expect_error(root, cache_dir, str(path), "4 channels")


def test_16_bit_tiff(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    tifffile.imwrite(path, np.full((96, 96, 3), 1000, np.uint16), photometric="rgb")
    expect_error(kaggle_folder, cache_dir, str(path), "uint16", "16-bit")


def test_missing_test_folder(kaggle_folder, cache_dir):
    shutil.rmtree(kaggle_folder / "test")
    expect_error(kaggle_folder, cache_dir, str(kaggle_folder / "test"), "missing")


def test_empty_test_folder(kaggle_folder, cache_dir):
    for path in (kaggle_folder / "test").iterdir():
        path.unlink()
    (kaggle_folder / "sample_submission.csv").unlink()
    (kaggle_folder / "test" / "notes.txt").write_text("not an image")
    expect_error(kaggle_folder, cache_dir, str(kaggle_folder / "test"), "no images")


def test_test_file_with_leading_dot(kaggle_folder, cache_dir):
    write_image(kaggle_folder / "test" / ".hidden.tif", np.zeros((96, 96, 3), np.uint8))
    expect_error(kaggle_folder, cache_dir, ".hidden.tif", "not a plain file name")


def test_symlink_out_of_data_folder(kaggle_folder, cache_dir, tmp_path):
    outside = write_image(tmp_path / "elsewhere.tif", np.zeros((96, 96, 3), np.uint8))
    path = first_train_image(kaggle_folder)
    path.unlink()
    path.symlink_to(outside)
    expect_error(kaggle_folder, cache_dir, str(path), "symlink", "outside")


def test_symlink_inside_data_folder_is_allowed(kaggle_folder, cache_dir):
    inside = write_image(kaggle_folder / "spare.tif", np.zeros((96, 96, 3), np.uint8))
    path = first_train_image(kaggle_folder)
    path.unlink()
    path.symlink_to(inside)
    ds = load_dataset(kaggle_folder, cache_dir, progress=False)
    assert not ds.train.images[0].any()


def test_sample_submission_mismatch(kaggle_folder, cache_dir):
    sub = kaggle_folder / "sample_submission.csv"
    lines = sub.read_text().splitlines()
    lines[2] = "feedfacefeedfacefeedfacefeedfacefeedface,0"
    sub.write_text("\n".join(lines) + "\n")
    expect_error(kaggle_folder, cache_dir, "sample_submission.csv", "feedfacefeedfacefeedfacefeedfacefeedface")


def test_two_files_for_one_id(kaggle_folder, cache_dir):
    path = first_train_image(kaggle_folder)
    shutil.copy(path, path.with_suffix(".png"))
    expect_error(kaggle_folder, cache_dir, path.stem, "two image files")


def test_stray_files_are_ignored(kaggle_folder, cache_dir):
    (kaggle_folder / "train" / "README.txt").write_text("hello")
    (kaggle_folder / "test" / "Thumbs.db").write_bytes(b"\0\1")
    (kaggle_folder / "train" / "subfolder").mkdir()
    ds = load_dataset(kaggle_folder, cache_dir, progress=False)
    assert len(ds.test) == 6
