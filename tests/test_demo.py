"""The synthetic demo: deterministic, Kaggle layout, marked synthetic, label decided by the centre 32x32."""

from __future__ import annotations

import re

import numpy as np
from sklearn.metrics import roc_auc_score

from harness.data import load_dataset
from harness.demo import DEMO_NOTICE, ensure_demo_dataset, write_demo_dataset


def tree_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_is_deterministic_and_in_kaggle_layout(tmp_path):
    a = write_demo_dataset(tmp_path / "a", n_train=40, n_test=10, seed=3)
    b = write_demo_dataset(tmp_path / "b", n_train=40, n_test=10, seed=3)
    assert tree_bytes(a) == tree_bytes(b)
    assert tree_bytes(a) != tree_bytes(write_demo_dataset(tmp_path / "c", n_train=40, n_test=10, seed=4))

    assert "synthetic" in (a / "HARNESS_SYNTHETIC").read_text()
    assert "synthetic" in DEMO_NOTICE and "not real tissue" in DEMO_NOTICE
    lines = (a / "train_labels.csv").read_text().splitlines()
    assert lines[0] == "id,label" and len(lines) == 41
    ids = [line.split(",")[0] for line in lines[1:]]
    assert all(re.fullmatch(r"[0-9a-f]{40}", i) for i in ids)
    assert sorted(p.name for p in (a / "train").iterdir()) == sorted(f"{i}.tif" for i in ids)
    assert [line.split(",")[1] for line in lines[1:]].count("1") == 20  # balanced
    assert len(list((a / "test").glob("*.tif"))) == 10
    assert (a / "sample_submission.csv").read_text().splitlines()[1].endswith(",0")


def test_demo_loads_and_label_is_decided_by_the_centre(tmp_path):
    root = write_demo_dataset(tmp_path / "demo", n_train=256, n_test=8, seed=0)
    ds = load_dataset(root, tmp_path / "cache", progress=False)
    assert ds.synthetic and len(ds.train) == 256 and len(ds.submission_ids) == 8
    gray = ds.train.images.astype(np.float32).mean(axis=-1)
    centre_darkness = 255 - gray[:, 32:64, 32:64].mean(axis=(1, 2))
    outside = np.ones((96, 96), bool)
    outside[24:72, 24:72] = False
    outside_darkness = 255 - gray[:, outside].mean(axis=1)
    assert roc_auc_score(ds.train.labels, centre_darkness) > 0.95
    assert 0.3 < roc_auc_score(ds.train.labels, outside_darkness) < 0.7  # the border carries no label


def test_ensure_demo_generates_once_and_repairs(tmp_path):
    path = ensure_demo_dataset(tmp_path / "results")
    assert path == tmp_path / "results" / "demo-data"
    assert len(list((path / "train").glob("*.tif"))) == 512 and len(list((path / "test").glob("*.tif"))) == 128
    marker = path / "HARNESS_SYNTHETIC"
    mtime = marker.stat().st_mtime_ns
    assert ensure_demo_dataset(tmp_path / "results") == path and marker.stat().st_mtime_ns == mtime  # reused
    next((path / "train").iterdir()).unlink()  # incomplete now
    ensure_demo_dataset(tmp_path / "results")
    assert len(list((path / "train").glob("*.tif"))) == 512
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["demo-data"]  # no temporary folders left
