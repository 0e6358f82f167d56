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
pytestmark = [pytest.mark.backend_free, pytest.mark.smoke]


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


# Files the plain CSV reader takes or leaves to pandas: header variants, quotes, a BOM, line ends, blank lines,
# spaces, labels pandas reads as numbers, repeated and empty ids, ragged rows, undecodable bytes.
CSV_VARIANTS = [
    b"id,label\na,0\nb,1\n",
    b"id,label\r\na,0\r\nb,1\r\n",
    b"id,label\na,0\nb,1",
    b"\xef\xbb\xbfid,label\na,0\nb,1\n",
    b'id,label\n"a",0\nb,"1"\n',
    b"id,label\na,0\n\nb,1\n\n",
    b"id,label\na,0\rb,1\n",
    b"id,label\na ,0\n b,1\n",
    b"id,label\na,1.0\nb, 0\n",
    b"id,label\na,2\nb,1\n",
    b"id,label\na,0\na,1\n",
    b"id,label\n,0\nb,1\n",
    b"id,label\na,0,\nb,1\n",
    b"id,label\na\nb,1\n",
    b"label,id\n0,a\n1,b\n",
    b"id, label\na,0\n",
    b"id,label,extra\na,0,x\n",
    b"id,label\n",
    b"id,label\n\xff,0\n",
    b"id,label\n\xc3\xa9,0\n",
    b"id,label\n../a,0\n",
]


@pytest.mark.parametrize("raw", CSV_VARIANTS, ids=range(len(CSV_VARIANTS)))
def test_plain_csv_reader_agrees_with_pandas(tmp_path, raw):
    """Whatever the file, read_labels gives what the pandas reader gives: the same ids and labels, or the same
    message. The plain reader skips pandas only for files it reads exactly as pandas would."""
    from harness.data import labels

    path = tmp_path / "train_labels.csv"
    path.write_bytes(raw)

    def outcome(read):
        try:
            ids, values = read()
            return ids, values.dtype.str, values.tolist()
        except HarnessError as e:
            return str(e)

    fast = outcome(lambda: labels.read_labels(path, raw))
    assert fast == outcome(lambda: labels._read_labels_pandas(path)), raw
    submission = tmp_path / "sample_submission.csv"
    submission.write_bytes(raw)
    ids = fast[0] if isinstance(fast, tuple) else ["a", "b"]

    def ids_outcome(read):
        try:
            return read()
        except HarnessError as e:
            return str(e).replace("train_labels", "x")

    pandas_ids = ids_outcome(lambda: labels.read_submission_ids(submission, ids, b'"force pandas"'))
    assert ids_outcome(lambda: labels.read_submission_ids(submission, ids, raw)) == pandas_ids, raw


def test_the_check_says_near_duplicates_were_not_computed(kaggle_folder, cache_dir):
    """The check hashes no near-duplicates (only the splits that need them do): its report says so, and how."""
    lines = load_dataset(kaggle_folder, cache_dir, progress=False).report.lines()
    note = [line for line in lines if line.startswith("near-duplicates")]
    assert len(note) == 1 and "not computed" in note[0] and "--protocol stratified" in note[0]
