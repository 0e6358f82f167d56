"""The decode-once cache: reused when nothing changed, rebuilt when anything did, never half-valid."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from conftest import train_ids_of, write_image

import harness.data.decode_pool as decode_pool
from harness.data import load_dataset

# Data layer only: no model is built, so the outcome cannot depend on the Keras backend (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free


def load(root, cache_dir):
    return load_dataset(root, cache_dir, progress=False, workers=2)


def test_second_load_decodes_nothing(kaggle_folder, cache_dir, monkeypatch):
    first = load(kaggle_folder, cache_dir)
    assert not first.from_cache

    def no_decoding(path, out=None):
        raise AssertionError(f"decoded {path} although the cache is fresh")

    monkeypatch.setattr(decode_pool, "decode_image", no_decoding)
    second = load(kaggle_folder, cache_dir)
    assert second.from_cache
    assert second.fingerprint == first.fingerprint
    for a, b in ((first.train, second.train), (first.test, second.test)):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.digests, b.digests)
    np.testing.assert_array_equal(first.train.labels, second.train.labels)
    assert second.report == first.report


def test_cache_arrays_are_read_only_memmaps(kaggle_folder, cache_dir):
    for ds in (load(kaggle_folder, cache_dir), load(kaggle_folder, cache_dir)):
        for part in (ds.train, ds.test):
            assert isinstance(part.images, np.memmap)
            assert part.images.dtype == np.uint8 and part.images.shape[1:] == (96, 96, 3)
            assert not part.images.flags.writeable
        assert ds.train.labels.dtype == np.uint8
        assert (ds.cache_path / "train_images.npy").is_file()


def test_arrays_follow_csv_and_sorted_test_order(kaggle_folder, cache_dir):
    ids = train_ids_of(kaggle_folder)
    reordered = [ids[i] for i in np.random.default_rng(1).permutation(len(ids))]
    labels = dict(line.split(",") for line in (kaggle_folder / "train_labels.csv").read_text().splitlines()[1:])
    (kaggle_folder / "train_labels.csv").write_text("id,label\n" + "".join(f"{i},{labels[i]}\n" for i in reordered))
    ds = load(kaggle_folder, cache_dir)
    assert ds.train.ids.tolist() == reordered
    assert ds.train.labels.tolist() == [int(labels[i]) for i in reordered]
    assert ds.test.ids.tolist() == sorted(ds.test.ids.tolist())
    # sample_submission.csv order is kept as written.
    sub = [line.split(",")[0] for line in (kaggle_folder / "sample_submission.csv").read_text().splitlines()[1:]]
    assert ds.submission_ids == sub


def touch(path):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def add_test_image(root):
    write_image(root / "test" / f"{'ab' * 20}.tif", np.full((96, 96, 3), 60, np.uint8))
    (root / "sample_submission.csv").unlink()


def remove_test_image(root):
    next((root / "test").iterdir()).unlink()
    (root / "sample_submission.csv").unlink()


def edit_csv(root):
    path = root / "train_labels.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda root: touch(next((root / "train").iterdir())), id="touch-train"),
        pytest.param(lambda root: touch(next((root / "test").iterdir())), id="touch-test"),
        pytest.param(add_test_image, id="add"),
        pytest.param(remove_test_image, id="remove"),
        pytest.param(edit_csv, id="edit-csv"),
    ],
)
def test_any_change_invalidates(kaggle_folder, cache_dir, change):
    first = load(kaggle_folder, cache_dir)
    change(kaggle_folder)
    second = load(kaggle_folder, cache_dir)
    assert not second.from_cache
    assert second.fingerprint != first.fingerprint


def test_changed_pixels_are_decoded_again(kaggle_folder, cache_dir):
    load(kaggle_folder, cache_dir)
    path = next((kaggle_folder / "test").iterdir())
    write_image(path, np.full((96, 96, 3), 7, np.uint8))
    touch(path)
    ds = load(kaggle_folder, cache_dir)
    assert (ds.test.images[ds.test.ids.tolist().index(path.stem)] == 7).all()


def test_interrupted_build_leaves_no_valid_cache(kaggle_folder, cache_dir, monkeypatch):
    real = decode_pool.decode_image
    calls = []

    def crash_midway(path, out=None):
        calls.append(path)
        if len(calls) > 10:
            raise KeyboardInterrupt("simulated interruption")
        return real(path, out)

    monkeypatch.setattr(decode_pool, "decode_image", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        load(kaggle_folder, cache_dir)
    assert list(cache_dir.iterdir()) == []  # no finished cache and no temporary folder left

    monkeypatch.setattr(decode_pool, "decode_image", real)
    ds = load(kaggle_folder, cache_dir)
    assert not ds.from_cache and len(ds.train) == 20


def test_killed_build_leftovers_are_ignored_and_cleaned(kaggle_folder, cache_dir):
    fingerprint = load(kaggle_folder, cache_dir).fingerprint
    final = cache_dir / fingerprint
    # A build killed before its rename leaves only a temporary folder; one from a dead process is removed.
    dead = cache_dir / f".tmp-{fingerprint}-{socket.gethostname()}-999999999-abc"
    dead.mkdir()
    # A finished-looking folder without its meta.json (e.g. a copy cut short) is not trusted.
    (final / "meta.json").unlink()
    ds = load(kaggle_folder, cache_dir)
    assert not ds.from_cache
    assert not dead.exists()
    assert sorted(p.name for p in cache_dir.iterdir()) == [fingerprint]
    assert load(kaggle_folder, cache_dir).from_cache


def test_a_cache_written_past_the_page_cache_holds_the_same_pixels(make_kaggle, tmp_path):
    """page_cache=False (the data check's direct writes, where the file system allows them) builds the same cache:
    pixels, digests and report; the pixels start on a block boundary, as direct writes need."""
    root = make_kaggle(n_train=45, n_test=7)  # chunks of odd sizes: offsets not multiples of a page
    buffered = load_dataset(root, tmp_path / "a", progress=False, workers=2)
    direct = load_dataset(root, tmp_path / "b", progress=False, workers=2, page_cache=False)
    for part in ("train", "test"):
        a, b = getattr(buffered, part), getattr(direct, part)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.digests, b.digests)
        assert b.images.offset % 4096 == 0
    assert buffered.report == direct.report
    reread = load_dataset(root, tmp_path / "b", progress=False)
    assert reread.from_cache
