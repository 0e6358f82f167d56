"""Real PCam JPEG patches (the shared pcam-sample): mixed extensions, RGB order and duplicates on real data."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.data import load_dataset

SAMPLE = Path(
    os.environ.get("HARNESS_PCAM_SAMPLE")
    or Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "pcam-sample"
)
pytestmark = [
    pytest.mark.backend_free,  # the data layer only: run once, on TensorFlow
    pytest.mark.skipif(
        not (SAMPLE / "train_labels.csv").is_file(),
        reason=f"pcam-sample not found at {SAMPLE} (set HARNESS_PCAM_SAMPLE to its folder)",
    ),
]


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """~200 real train JPEGs (with 5 duplicate pairs), 50 test JPEGs, 10 of them converted to .tif; copied."""
    labels = pd.read_csv(SAMPLE / "train_labels.csv", dtype={"id": str})
    by_bytes = defaultdict(list)
    for id_ in labels["id"]:
        by_bytes[hashlib.md5((SAMPLE / "train" / f"{id_}.jpg").read_bytes()).digest()].append(id_)
    pairs = [ids[:2] for ids in by_bytes.values() if len(ids) > 1][:5]
    assert len(pairs) == 5, "the sample is documented to hold duplicates"
    dup_ids = [i for p in pairs for i in p]
    any_dup = [i for ids in by_bytes.values() if len(ids) > 1 for i in ids]
    others = labels[~labels["id"].isin(any_dup)].groupby("label").head(95)["id"].tolist()
    chosen = labels[labels["id"].isin(dup_ids + others)]

    root = tmp_path_factory.mktemp("pcam") / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    tif_ids = set(others[:10])
    for id_ in chosen["id"]:
        source = SAMPLE / "train" / f"{id_}.jpg"
        if id_ in tif_ids:
            cv2.imwrite(str(root / "train" / f"{id_}.tif"), cv2.imread(str(source), cv2.IMREAD_UNCHANGED))
        else:
            shutil.copy(source, root / "train")
    chosen.to_csv(root / "train_labels.csv", index=False)
    test_ids = sorted(p.stem for p in (SAMPLE / "test").glob("*.jpg"))[:50]
    for id_ in test_ids:
        shutil.copy(SAMPLE / "test" / f"{id_}.jpg", root / "test")
    return root, chosen, pairs, sorted(tif_ids)


def test_real_subset_loads(subset, tmp_path):
    root, chosen, pairs, tif_ids = subset
    ds = load_dataset(root, tmp_path / "cache", progress=False)
    assert ds.train.images.shape == (len(chosen), 96, 96, 3) and ds.train.images.dtype == np.uint8
    assert ds.test.images.shape == (50, 96, 96, 3)
    assert ds.train.ids.tolist() == chosen["id"].tolist()
    assert ds.train.labels.tolist() == chosen["label"].tolist()
    assert not ds.synthetic
    assert ds.submission_ids == sorted(ds.test.ids.tolist())  # no sample_submission.csv here

    # RGB order: PIL decodes in RGB. The two JPEG decoders may differ by a unit or two, never by a channel swap.
    jpg = ds.train.ids.tolist().index(pairs[0][0])
    pil = np.asarray(Image.open(root / "train" / f"{pairs[0][0]}.jpg").convert("RGB")).astype(int)
    ours = ds.train.images[jpg].astype(int)
    assert np.abs(ours - pil).mean() < 1.0 < np.abs(ours[..., ::-1] - pil).mean()
    # The .tif copies are lossless, so PIL must agree exactly.
    k = ds.train.ids.tolist().index(tif_ids[0])
    np.testing.assert_array_equal(ds.train.images[k], np.asarray(Image.open(root / "train" / f"{tif_ids[0]}.tif")))
    # H&E stains: red above green on average.
    mean = ds.train.images[:50].reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1]

    groups = [sorted(g) for g in ds.report.duplicate_groups]
    for pair in pairs:
        assert sorted(pair) in groups
    dup = ds.duplicate_group_of_train()
    for a, b in pairs:
        ids = ds.train.ids.tolist()
        assert dup[ids.index(a)] == dup[ids.index(b)]
    assert any("exact duplicates in train: 5 groups" in line for line in ds.report.lines())
