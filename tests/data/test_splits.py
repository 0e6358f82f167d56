"""Splits: the seed protocol equals the notebook's code; the stratified split keeps duplicates together."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split
from sklearn.utils import shuffle

from harness.config import DataConfig
from harness.data import load_dataset
from harness.data.splits import (
    SEED_DROPPED_IDS,
    make_split,
    sample_indices,
    seed_protocol_split,
    stratified_split,
)
from harness.errors import HarnessError

# Data layer only: no model is built, so the outcome cannot depend on the Keras backend (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free


def fake_labels(n0: int, n1: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([hashlib.sha1(f"{seed}-{i}".encode()).hexdigest() for i in range(n0 + n1)])
    labels = np.random.default_rng(seed).permutation(np.r_[np.zeros(n0, int), np.ones(n1, int)])
    return ids, labels.astype(np.uint8)


def notebook_prepare_data(csv_path, seed):
    """The notebook's PrepareData.__init__, verbatim but for the np.random.seed call before shuffle."""
    df_label = pd.read_csv(csv_path)
    df_label = df_label[df_label["id"] != "9369c7278ec8bcc6c880d99194de09fc2bd4efbe"]
    df_label = df_label[df_label["id"] != "3147e34a392cc94d7071dc31fb56c76c8c7a4d87"]
    df_0 = df_label[df_label["label"] == 0].sample(df_label["label"].value_counts()[1], random_state=101)
    df_1 = df_label[df_label["label"] == 1].sample(df_label["label"].value_counts()[1], random_state=101)
    df_label = pd.concat([df_0, df_1], axis=0).reset_index(drop=True)
    np.random.seed(seed)
    df_label = shuffle(df_label)
    df_train, df_val = train_test_split(df_label, test_size=0.15, random_state=101)
    return df_train, df_val


@pytest.mark.parametrize("seed", [0, 101, 2024])
def test_seed_protocol_equals_notebook(tmp_path, seed):
    ids, labels = fake_labels(700, 300, seed=seed)
    ids[5], ids[600] = SEED_DROPPED_IDS  # both dropped ids present, as in Kaggle's CSV
    csv = tmp_path / "train_labels.csv"
    pd.DataFrame({"id": ids, "label": labels}).to_csv(csv, index=False)
    state = np.random.get_state()
    try:
        nb_train, nb_val = notebook_prepare_data(csv, seed)
    finally:
        np.random.set_state(state)

    split = seed_protocol_split(ids, labels, seed)
    assert ids[split.train].tolist() == nb_train["id"].tolist()  # same ids, same order
    assert ids[split.val].tolist() == nb_val["id"].tolist()
    assert labels[split.val].tolist() == nb_val["label"].tolist()
    assert not set(SEED_DROPPED_IDS) & set(ids[np.r_[split.train, split.val]])
    assert split.protocol == "seed" and any("dropped 2 ids" in n for n in split.notes)


def test_seed_protocol_does_not_touch_global_rng():
    ids, labels = fake_labels(60, 40)
    np.random.seed(5)
    before = np.random.random()
    np.random.seed(5)
    seed_protocol_split(ids, labels, 3)
    assert np.random.random() == before


def test_seed_protocol_needs_enough_label_0():
    ids, labels = fake_labels(30, 40)
    with pytest.raises(HarnessError, match="--protocol stratified"):
        seed_protocol_split(ids, labels, 0)


def test_stratified_keeps_duplicate_groups_on_one_side():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000).astype(np.uint8)
    groups = np.arange(2000)
    # 150 groups of 2-5 identical images, each group sharing one label
    start = 0
    for _ in range(150):
        size = int(rng.integers(2, 6))
        groups[start : start + size] = groups[start]
        labels[start : start + size] = labels[start]
        start += size
    perm = rng.permutation(2000)
    labels, groups = labels[perm], groups[perm]

    split = stratified_split(labels, groups, 0.2, seed=7)
    assert len(np.intersect1d(split.train, split.val)) == 0
    assert len(split.train) + len(split.val) == 2000
    assert not set(groups[split.train]) & set(groups[split.val])
    assert abs(len(split.val) / 2000 - 0.2) < 0.01
    for c in (0, 1):
        share = (labels[split.val] == c).sum() / (labels == c).sum()
        assert abs(share - 0.2) < 0.01, c
    again = stratified_split(labels, groups, 0.2, seed=7)
    np.testing.assert_array_equal(again.val, split.val)
    assert not np.array_equal(stratified_split(labels, groups, 0.2, seed=8).val, split.val)


def test_sample_indices_stratified_and_deterministic():
    labels = np.r_[np.zeros(900), np.ones(300)].astype(np.uint8)
    a = sample_indices(labels, 200, seed=3)
    np.testing.assert_array_equal(a, sample_indices(labels, 200, seed=3))
    assert not np.array_equal(a, sample_indices(labels, 200, seed=4))
    assert len(a) == 200 and len(np.unique(a)) == 200
    assert (labels[a] == 1).sum() == 50
    np.testing.assert_array_equal(sample_indices(labels, None, 0), np.arange(1200))
    np.testing.assert_array_equal(sample_indices(labels, 1200, 0), np.arange(1200))
    with pytest.raises(HarnessError, match="5,000 is more than the 1,200 labelled images"):
        sample_indices(labels, 5000, 0)  # never recorded as a sample that was not drawn
    with pytest.raises(HarnessError, match="both classes"):
        sample_indices(labels, 1, 0)


def test_sample_indices_keeps_groups_whole():
    labels = np.ones(100, np.uint8)
    labels[:50] = 0
    groups = np.arange(100)
    groups[60:64] = 60  # one group of 4 identical label-1 images
    for seed in range(20):
        chosen = sample_indices(labels, 20, seed, groups)
        assert len(chosen) == 20
        inside = np.isin(np.arange(60, 64), chosen)
        assert inside.all() or not inside.any()


def test_make_split_on_a_dataset(make_kaggle, tmp_path):
    root = make_kaggle(n_train=40, n_test=2)
    # Make images 0..2 identical copies so the stratified split must keep them together.
    train = sorted((root / "train").iterdir())
    ids = [line.split(",")[0] for line in (root / "train_labels.csv").read_text().splitlines()[1:]]
    source = root / "train" / f"{ids[0]}.tif"
    for i in (2, 4):
        (root / "train" / f"{ids[i]}.tif").write_bytes(source.read_bytes())
    assert len(train) == 40
    ds = load_dataset(root, tmp_path / "cache", progress=False)
    groups = ds.duplicate_group_of_train()
    assert groups[0] == groups[2] == groups[4] and len(set(groups.tolist())) == 38

    split = make_split(ds, DataConfig(protocol="stratified", sample=None, seed=1, val_fraction=0.25))
    sides = {0 if i in set(split.train.tolist()) else 1 for i in (0, 2, 4)}
    assert len(sides) == 1
    assert sorted(np.r_[split.train, split.val].tolist()) == list(range(40))

    sampled = make_split(ds, DataConfig(protocol="seed", sample=20, seed=1))
    assert len(sampled.train) + len(sampled.val) == 20
    assert set(np.r_[sampled.train, sampled.val].tolist()) <= set(range(40))
    assert any("sampled 20 of 40" in n for n in sampled.notes)
