"""--protocol grouped: approximate slide groups from stain statistics, split whole, near-duplicates never straddling."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from harness.config import DataConfig
from harness.data import load_dataset
from harness.data.slide_groups import join, slide_groups
from harness.data.splits import duplicate_groups, grouped_split, make_split, make_splits
from harness.errors import ConfigError, HarnessError

# Data layer only: no model is built, so the outcome cannot depend on the Keras backend (run once, on TensorFlow).
pytestmark = pytest.mark.backend_free


def fake_slides(n_slides: int, per_slide: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny patches whose slide is their stain: each slide tints its texture with its own colour and background."""
    rng = np.random.default_rng(seed)
    images, slide = [], []
    for s in range(n_slides):
        tint = rng.uniform(0.3, 1.0, 3)
        glass = rng.uniform(200, 250, 3)
        for _ in range(per_slide):
            texture = (rng.random((12, 12, 1)) < rng.uniform(0.3, 0.7)).repeat(2, axis=0).repeat(2, axis=1)
            image = np.where(texture, glass * tint * rng.uniform(0.97, 1.0), glass)
            images.append(np.clip(image + rng.normal(0, 2, image.shape), 0, 255).astype(np.uint8))
            slide.append(s)
    return np.stack(images), np.asarray(slide)


def mixed_labels(groups: np.ndarray, seed: int = 0) -> np.ndarray:
    """Labels whose share varies from group to group (as tumour does from slide to slide), about half overall."""
    rng = np.random.default_rng(seed)
    share = rng.uniform(0.1, 0.9, groups.max() + 1)
    return (rng.random(len(groups)) < share[groups]).astype(np.uint8)


def test_stain_clusters_recover_synthetic_slides():
    images, slide = fake_slides(n_slides=12, per_slide=10)
    groups = slide_groups(images, np.arange(len(images)), images_per_group=10)
    assert adjusted_rand_score(slide, groups) > 0.8  # chance: about 0


def test_join_merges_clusters_that_share_a_duplicate():
    clusters = np.array([0, 0, 1, 1, 2, 2])
    duplicates = np.array([0, 1, 1, 3, 4, 5])  # images 1 and 2 are copies, in clusters 0 and 1
    groups = join(clusters, duplicates)
    assert groups[0] == groups[1] == groups[2] == groups[3] and groups[4] == groups[5] != groups[0]


def test_grouped_split_keeps_groups_whole_stratified_and_seeded():
    groups = np.repeat(np.arange(60), 10)
    labels = mixed_labels(groups)
    split = grouped_split(labels, groups, val_fraction=0.2, seed=3)
    assert not set(groups[split.train]) & set(groups[split.val])
    assert sorted(np.r_[split.train, split.val].tolist()) == list(range(len(labels)))
    assert abs(len(split.val) / len(labels) - 0.2) < 0.05
    assert abs(labels[split.val].mean() - labels.mean()) < 0.05  # stratified within tolerance
    again = grouped_split(labels, groups, val_fraction=0.2, seed=3)
    assert np.array_equal(split.val, again.val)
    assert not np.array_equal(split.val, grouped_split(labels, groups, val_fraction=0.2, seed=4).val)


def test_grouped_split_refuses_too_few_groups_in_one_line():
    groups = np.repeat(np.arange(5), 20)
    with pytest.raises(HarnessError, match="only 5 approximate slide groups") as info:
        grouped_split(mixed_labels(groups), groups, val_fraction=0.15, seed=0)
    assert "\n" not in str(info.value) and "--sample" in str(info.value)


def test_grouped_protocol_accepts_folds_and_checks_group_size():
    assert DataConfig(protocol="grouped", folds=3).folds == 3
    with pytest.raises(ConfigError, match="--group-size"):
        DataConfig(protocol="grouped", group_size=0)


def test_make_split_grouped_never_separates_near_duplicates_or_groups(make_kaggle, tmp_path):
    root = make_kaggle(n_train=80, n_test=2)
    ids = [line.split(",")[0] for line in (root / "train_labels.csv").read_text().splitlines()[1:]]
    for copy in (2, 40, 78):  # copies of image 0 across the folder (labels 0, like image 0)
        (root / "train" / f"{ids[copy]}.tif").write_bytes((root / "train" / f"{ids[0]}.tif").read_bytes())
    ds = load_dataset(root, tmp_path / "cache", progress=False)
    config = DataConfig(protocol="grouped", val_fraction=0.25, group_size=5, seed=7)
    split = make_split(ds, config)
    duplicates = duplicate_groups(ds, near=True)
    assert not set(duplicates[split.train]) & set(duplicates[split.val])
    assert len({int(i in set(split.val.tolist())) for i in (0, 2, 40, 78)}) == 1
    assert split.protocol == "grouped" and np.array_equal(make_split(ds, config).val, split.val)
    assert list(ds.cache_path.glob("train_slide_groups_*.npy"))  # cached with the decoded images
    folds = make_splits(ds, DataConfig(protocol="grouped", folds=3, group_size=5, seed=7))
    assert sorted(np.concatenate([f.val for f in folds]).tolist()) == list(range(80))
    for fold in folds:
        assert not set(duplicates[fold.train]) & set(duplicates[fold.val])


def test_grouped_protocol_on_too_few_images_is_a_one_line_cli_error(make_kaggle, tmp_path, capsys):
    from harness.cli import main

    root = make_kaggle(n_train=40, n_test=2)
    argv = ["run", "cnn", "--data", str(root), "--results", str(tmp_path / "r"), "--protocol", "grouped"]
    assert main([*argv, "--epochs", "1", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert "approximate slide groups" in err and "Traceback" not in err
