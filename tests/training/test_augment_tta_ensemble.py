"""Augmentation, test-time augmentation, ensembles, K-fold runs and near-duplicate-aware splits."""

from __future__ import annotations

import dataclasses

import cv2
import keras
import numpy as np
import pandas as pd
import pytest

from harness.config import AugmentConfig, DataConfig, OptimizerConfig, RunSpec, TrainingConfig
from harness.data import load_dataset
from harness.data.near_duplicates import near_duplicate_groups, near_pairs, phash
from harness.data.splits import kfold_splits, make_split
from harness.dihedral import dihedral
from harness.errors import ConfigError
from harness.ranking.ensemble import blend, choose_members
from harness.training.augmentation import RandomDihedral, augmentation_layers
from harness.training.inference import predict_probabilities

pytestmark = pytest.mark.needs_backend

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, size=(6, 96, 96, 3)).astype("float32")


def test_the_eight_dihedral_transforms_are_distinct_and_close_under_inverse():
    image = RNG.integers(0, 256, size=(1, 96, 96, 3), dtype=np.uint8)
    variants = [dihedral(image, k) for k in range(8)]
    assert len({v.tobytes() for v in variants}) == 8
    assert all(v.shape == image.shape and v.dtype == image.dtype for v in variants)


def test_random_dihedral_outputs_only_dihedral_variants_and_is_identity_at_inference():
    layer = RandomDihedral(seed=3)
    batch = np.repeat(IMAGES[:1], 64, axis=0)
    out = keras.ops.convert_to_numpy(layer(batch, training=True))
    allowed = [dihedral(IMAGES[:1], k)[0] for k in range(8)]
    seen = {next(k for k, a in enumerate(allowed) if np.array_equal(o, a)) for o in out}
    assert seen == set(range(8)), "all 8 transforms should appear in 64 draws"
    assert np.array_equal(keras.ops.convert_to_numpy(layer(batch, training=False)), batch)


@pytest.mark.parametrize(
    "config",
    [
        AugmentConfig(dihedral=True),
        AugmentConfig(brightness=0.2),
        AugmentConfig(contrast=0.2),
        AugmentConfig(hue=0.05),
        AugmentConfig(hed=0.1),
        AugmentConfig(saturation=0.3),
        AugmentConfig(crop="random", crop_size=64),
        AugmentConfig(crop="centre", crop_size=64),
    ],
)
def test_each_augmentation_keeps_shape_and_dtype_and_is_deterministic_under_a_seed(config):
    def apply(seed):
        x = keras.ops.convert_to_tensor(IMAGES)
        for layer in augmentation_layers(config, seed):
            x = layer(x, training=True)
        return keras.ops.convert_to_numpy(x)

    first, again, other = apply(7), apply(7), apply(8)
    side = config.crop_size if config.crop else 96
    assert first.shape == (6, side, side, 3) and first.dtype == np.float32
    assert np.allclose(first, again), "same seed, same augmentation"
    if config.crop != "centre":
        assert not np.allclose(first, other), "another seed should draw other transforms"
    assert first.min() >= 0 and first.max() <= 255.001


def test_bad_augmentation_values_are_refused():
    with pytest.raises(ConfigError, match="--brightness"):
        AugmentConfig(brightness=1.5)
    with pytest.raises(ConfigError, match="--hed"):
        AugmentConfig(hed=1.5)
    with pytest.raises(ConfigError, match="--tta"):
        TrainingConfig(tta=3)


def test_tta_of_a_model_invariant_by_construction_changes_nothing():
    # Global average pooling forgets where pixels are, so every flip and rotation gives the same output.
    model = keras.Sequential(
        [keras.Input((96, 96, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")]
    )
    images = RNG.integers(0, 256, size=(10, 96, 96, 3), dtype=np.uint8)
    plain = predict_probabilities(model, images, np.arange(10), tta=1)
    for tta in (2, 4, 8):
        assert np.allclose(predict_probabilities(model, images, np.arange(10), tta=tta), plain, atol=1e-6)


def test_tta_averages_over_the_transforms_for_a_model_that_is_not_invariant():
    # Rescaled and seeded: raw pixels into an unlucky random Dense saturate the sigmoid, and every view gives 0.
    dense = keras.layers.Dense(1, "sigmoid", kernel_initializer=keras.initializers.GlorotUniform(seed=3))
    model = keras.Sequential([keras.Input((96, 96, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Flatten(), dense])
    images = RNG.integers(0, 256, size=(4, 96, 96, 3), dtype=np.uint8)
    by_hand = np.mean([model.predict(dihedral(images, k), verbose=0).ravel() for k in range(8)], axis=0)
    assert np.allclose(predict_probabilities(model, images, np.arange(4), tta=8), by_hand, atol=1e-6)
    assert not np.allclose(predict_probabilities(model, images, np.arange(4), tta=1), by_hand, atol=1e-6)


TINY = {"widths": [4], "convs": [1], "dense": [8]}


def _spec(**training) -> RunSpec:
    data = training.pop("data", DataConfig(protocol="stratified", seed=1))
    return RunSpec(
        architecture="cnn",
        arch_kwargs=TINY,
        training=TrainingConfig(epochs=1, batch_size=8, optimizer=OptimizerConfig("adam", 1e-3), **training),
        data=data,
        seed=1,
    )


def test_augmented_run_with_tta_records_what_it_used(runner):
    record = runner.run(_spec(augment=AugmentConfig(dihedral=True, crop="random", crop_size=64), tta=8))
    assert record.status == "complete", record.error
    assert record.tta == 8 and record.spec["training"]["augment"]["dihedral"] is True
    model = keras.models.load_model(f"{record.artifacts}/model.keras")
    assert model.input_shape == (None, 96, 96, 3)  # the saved model takes whole raw patches


def test_an_ensemble_of_one_run_reproduces_that_run(runner):
    record = runner.run(_spec())
    (member,) = choose_members(runner.store.runs(), top=1, by="val_auc")
    blended = blend(runner.store, runner.results_dir, [member], "val_auc")
    assert blended.origin == "ensemble" and blended.hyperparameters["members"] == [record.run_id]
    assert blended.val_auc == pytest.approx(record.val_auc) and blended.val_accuracy == pytest.approx(
        record.val_accuracy
    )
    assert pd.read_csv(blended.submission).equals(pd.read_csv(record.submission))


def test_an_ensemble_averages_its_members_and_skips_runs_on_another_split(runner):
    a = runner.run(_spec())
    b = runner.run(dataclasses.replace(_spec(), seed=2))
    other = runner.run(_spec(data=DataConfig(protocol="stratified", seed=5)))
    members = choose_members(runner.store.runs(), top=3, by="val_auc")
    assert other.run_id not in [m.run_id for m in members] or {a.run_id, b.run_id}.isdisjoint(m.run_id for m in members)
    blended = blend(runner.store, runner.results_dir, members, "val_auc", greedy=False)
    expected = np.mean([pd.read_csv(m.submission)["label"] for m in members], axis=0)
    assert np.allclose(pd.read_csv(blended.submission)["label"], expected, atol=2e-6)
    assert blended.status == "complete" and blended.run_id in [r.run_id for r in runner.store.runs()]


def test_k_fold_run_predicts_every_image_once_and_reports_the_spread(runner):
    record = runner.run(_spec(data=DataConfig(protocol="stratified", seed=1, folds=3)))
    assert record.status == "complete", record.error
    assert record.folds == 3 and record.val_auc_std is not None and record.val_accuracy_std is not None
    oof = pd.read_csv(f"{record.artifacts}/val_predictions.csv")
    assert len(oof) == 40 and oof["id"].is_unique and sorted(oof["fold"].unique()) == [1, 2, 3]
    for k in (1, 2, 3):
        assert (runner.results_dir / "runs" / record.run_id / f"fold{k}" / "model.keras").exists()


def test_folds_need_the_stratified_protocol():
    with pytest.raises(ConfigError, match="--protocol stratified"):
        DataConfig(protocol="seed", folds=5)


def _near_copy(image: np.ndarray) -> np.ndarray:
    """The same tissue re-encoded as a JPEG and a little brighter: a near-duplicate, not an exact one."""
    _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return np.clip(cv2.imdecode(buf, cv2.IMREAD_COLOR).astype(int) + 3, 0, 255).astype(np.uint8)


def test_phash_finds_near_copies_and_leaves_different_patches_apart(kaggle_folder, cache_dir):
    images = np.asarray(load_dataset(kaggle_folder, cache_dir, progress=False).train.images)
    hashes = phash(np.concatenate([images, [_near_copy(images[0]), _near_copy(images[5])]]))
    pairs = {tuple(p) for p in near_pairs(hashes)}
    n = len(images)
    assert (0, n) in pairs and (5, n + 1) in pairs
    assert all(j >= n for _, j in pairs), f"distinct patches paired: {pairs}"


def test_duplicates_and_near_duplicates_never_straddle_a_split(make_kaggle, tmp_path):
    folder = make_kaggle(n_train=60, n_test=4)
    train = sorted((folder / "train").iterdir())
    labels = pd.read_csv(folder / "train_labels.csv").set_index("id")["label"]
    # Ten images get a near copy (same label) and five get an exact copy.
    extra = []
    for i, path in enumerate(train[:15]):
        image = cv2.imread(str(path))
        copy = _near_copy(image) if i < 10 else image
        new_id = f"{i:040x}"
        cv2.imwrite(str(folder / "train" / f"{new_id}.tif"), copy)
        extra.append((new_id, labels[path.stem], path.stem))
    with open(folder / "train_labels.csv", "a") as handle:
        handle.writelines(f"{new_id},{label}\n" for new_id, label, _ in extra)
    dataset = load_dataset(folder, tmp_path / "cache", progress=False)
    index = {id_: i for i, id_ in enumerate(dataset.train.ids)}
    twins = [(index[new_id], index[source]) for new_id, _, source in extra]

    for seed in range(5):
        split = make_split(dataset, DataConfig(protocol="stratified", seed=seed))
        val = set(split.val.tolist())
        assert all((a in val) == (b in val) for a, b in twins), f"a pair straddles the split (seed {seed})"
        for fold in kfold_splits(dataset, DataConfig(protocol="stratified", seed=seed, folds=3)):
            val = set(fold.val.tolist())
            assert all((a in val) == (b in val) for a, b in twins), f"a pair straddles a fold (seed {seed})"


def test_near_duplicate_groups_join_exact_groups_even_when_hashes_differ():
    hashes = np.array([0, 0xFFFFFFFF00000000, 0b1, 0x0000FFFFFFFF0000], dtype=np.uint64)  # only 0 and 2 are close
    exact = np.array([0, 1, 2, 1])  # images 1 and 3 are identical by digest
    groups = near_duplicate_groups(hashes, exact)
    assert groups[0] == groups[2] and groups[1] == groups[3] and groups[0] != groups[1]
